"""Failure scenarios against a stack of this module's own, each counted exactly (issue 5).

The module starts its own stack: the alarm scenario watches the payments DLQ's depth, which
other modules' dead letters must not raise first.
"""

from __future__ import annotations

import json
import re
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from dead_letters import dead_letter
from local_stacks import running_stack
from polling import wait_until
from sale_harness import PURCHASES, open_sale, single_seat_burst
from scenarios import Scenario, allocation_lines, redecided, worker_logs

from bench.poison import poison_bodies, send_poison
from flashsale.names import QueueRole, alarm_name
from flashsale.settings import Settings
from infra.local.faults import FaultProxy, FaultRule
from infra.local.fleet import Fleet
from tasks.operator import queue_depth, queue_name

pytestmark = pytest.mark.integration

# An alarm is evaluated once per period (60 s), from when it was created; the DLQ depth
# reaches CloudWatch within SQS_CLOUDWATCH_METRICS_REPORT_INTERVAL (5 s) on the local stack.
ALARM_TIMEOUT_SECONDS = 120
SEATS = 200
BUYERS = 800
SHUTDOWN_TIMEOUT_SECONDS = 45  # above the purchase task's hard time limit (30 s)


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A stack of this module's own: the DLQ alarm must fire for this module's dead letter."""
    yield from running_stack(tmp_path_factory)


@pytest.fixture
def alarm_subscriber(settings: Settings, clients: dict[str, Any]) -> Iterator[str]:
    """A new SQS queue subscribed to the alarm topic; its URL. Unsubscribed and deleted after."""
    sqs, sns = clients["sqs"], boto3.client("sns")
    url = sqs.create_queue(QueueName=f"it-alarm-subscriber-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    # What real SNS needs to deliver to the queue (LocalStack does not enforce it).
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": settings.alarm_topic_arn}},
            }
        ],
    }
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
    subscription = sns.subscribe(
        TopicArn=settings.alarm_topic_arn, Protocol="sqs", Endpoint=arn, ReturnSubscriptionArn=True
    )["SubscriptionArn"]
    try:
        yield url
    finally:
        sns.unsubscribe(SubscriptionArn=subscription)
        sqs.delete_queue(QueueUrl=url)


def alarm_notices(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """The alarm state changes (SNS ``Message`` JSON) delivered to ``queue_url`` since the last
    call; each is deleted once read."""
    notices = []
    messages = sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
    ).get("Messages", [])
    for message in messages:
        envelope = json.loads(message["Body"])
        notices.append(json.loads(envelope["Message"]))
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return notices


@pytest.mark.slow  # over a minute: make scenarios runs it
@pytest.mark.scenario(
    "alarm path: DLQ depth alarm to an SNS subscriber",
    injected="1 poison message on the payments queue",
)
def test_alarm_path__a_poison_message_fires_the_dlq_alarm_and_its_sns_notice_reaches_a_subscriber(
    settings: Settings, clients: dict[str, Any], alarm_subscriber: str, scenario: Scenario
) -> None:
    sqs, cloudwatch = clients["sqs"], clients["cloudwatch"]
    role = QueueRole.PAYMENTS
    queue_url, dlq_url = settings.queue_url(role), settings.dlq_url(role)
    dlq_alarm = alarm_name(queue_name(queue_url), "dlq-depth")

    def alarm_state() -> str:
        (alarm,) = cloudwatch.describe_alarms(AlarmNames=[dlq_alarm])["MetricAlarms"]
        return str(alarm["StateValue"])

    assert alarm_state() != "ALARM", "the alarm fired before anything was dead-lettered"
    (poison,) = poison_bodies(uuid.uuid4().hex, 1, role.celery_queue)
    send_poison(sqs, queue_url, [poison], fifo=False)
    dead_letter(sqs, queue_url, dlq_url, 1)
    dead_lettered_at = time.monotonic()

    wait_until(lambda: alarm_state() == "ALARM", ALARM_TIMEOUT_SECONDS, f"{dlq_alarm} in ALARM")
    time_to_alarm = time.monotonic() - dead_lettered_at
    print(f"\n{dlq_alarm}: ALARM {time_to_alarm:.1f} s after the message was dead-lettered")

    fired: list[dict[str, Any]] = []

    def notified() -> bool:
        fired.extend(
            notice
            for notice in alarm_notices(sqs, alarm_subscriber)
            if notice.get("AlarmName") == dlq_alarm and notice.get("NewStateValue") == "ALARM"
        )
        return bool(fired)

    wait_until(notified, 30, f"the SNS notice of {dlq_alarm} in ALARM")
    scenario.record(
        sent=1,
        processed=0,
        dead_lettered=1,
        alarm_after_s=time_to_alarm,
        notices=len(fired),
    )
    assert len(fired) == 1, fired
    print(f"notice received {time.monotonic() - dead_lettered_at:.1f} s after dead-lettering")


@pytest.fixture
def fleet(environ: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = Fleet(environ, tmp_path_factory.mktemp("worker-logs"))
    yield fleet
    fleet.stop_all()


@pytest.mark.scenario(
    "graceful shutdown (SIGTERM) mid-sale",
    injected="SIGTERM to the only worker once the sale started; a new worker after",
    unit="requests",
)
def test_graceful_shutdown__sigterm_lets_in_flight_work_finish_and_loses_nothing(
    fleet: Fleet, settings: Settings, clients: dict[str, Any], scenario: Scenario
) -> None:
    fleet.start_worker("purchase-0", [PURCHASES])
    with open_sale(fleet, settings, clients) as sale:
        event_id = sale.new_event(SEATS)
        assert sale.fire(single_seat_burst(event_id, BUYERS)) == BUYERS

        wait_until(lambda: len(sale.orders(event_id)) > 0, 60, "the sale to start")
        stopping = time.monotonic()
        exit_code = fleet.stop("purchase-0", timeout=SHUTDOWN_TIMEOUT_SECONDS)
        stopped_after = time.monotonic() - stopping
        decided_at_stop = len(sale.orders(event_id))
        print(f"\nwarm shutdown took {stopped_after:.1f} s; {decided_at_stop} orders decided")

        # 0, not -SIGKILL: the worker finished its task and left before the timeout.
        assert exit_code == 0
        assert stopped_after < SHUTDOWN_TIMEOUT_SECONDS
        assert decided_at_stop < BUYERS, "the sale ended before the SIGTERM: proves nothing"

        restarting = time.monotonic()
        fleet.start_worker("purchase-1", [PURCHASES])
        # What the first worker had prefetched but not started it released when it stopped
        # (tasks.consumer); what it had committed is recognised as already decided.
        orders = sale.decided(event_id, BUYERS, timeout=150)
        rest_after = time.monotonic() - restarting
        print(f"the rest decided {rest_after:.1f} s after the restart")
        ledger = sale.ledger(event_id, orders)
        scenario.record(
            sent=BUYERS,
            processed=len({o["order_id"] for o in orders}),
            duplicated=redecided(worker_logs(fleet.log_dir), event_id),
            shutdown_s=stopped_after,
            rest_decided_s=rest_after,
        )

    assert len(orders) == len({o["order_id"] for o in orders}) == BUYERS
    assert (ledger.confirmed, ledger.sold_out, ledger.rejected) == (SEATS, BUYERS - SEATS, 0)
    assert ledger.sold_counter == ledger.seats_confirmed == SEATS
    assert ledger.oversold == 0
    assert ledger.fcfs_inversions == 0


# The slow worker's DynamoDB transactions are held this long in the network: its one running
# task is still running when the other worker has already decided what it handed back.
HELD_TRANSACTION_SECONDS = 10.0
VISIBILITY_TIMEOUT_SECONDS = 60  # the purchases queue's (Pulumi: hard time limit + margin)
_FIELD = re.compile(r"(\w+)=(\S+)")


def logged(log: str, event: str) -> dict[str, str] | None:
    """The fields of a worker's first ``event`` line (``consumer.released_on_shutdown``...)."""
    match = re.search(re.escape(event) + r"\s.*", log)
    return dict(_FIELD.findall(match.group(0))) if match else None


@pytest.mark.scenario(
    "graceful shutdown releases prefetched messages at once",
    injected=f"SIGTERM: 1 task running ({HELD_TRANSACTION_SECONDS:.0f} s), more prefetched",
    unit="requests",
)
def test_graceful_shutdown__prefetched_messages_are_released_at_once_and_decided_elsewhere(
    fleet: Fleet,
    settings: Settings,
    clients: dict[str, Any],
    environ: dict[str, str],
    scenario: Scenario,
) -> None:
    """A worker holds several events' purchase messages (prefetch 10) and runs one, slowly.
    On SIGTERM it releases every message it has not started — visible again at once, not after
    the visibility timeout (60 s) — except those queued behind its running task in the same
    FIFO group, which it releases the moment that task ends. Another worker decides the other
    events while the first is still finishing; nothing is lost or decided twice, and every
    event keeps its order."""
    events, per_event = 4, 64  # two messages of 32 buyers per event
    sqs = clients["sqs"]
    with (
        FaultProxy(environ["AWS_ENDPOINT_URL_DYNAMODB"], seed=5) as proxy,
        open_sale(fleet, settings, clients) as sale,
    ):
        proxy.set_rules(
            [
                FaultRule(
                    "latency",
                    operation="DynamoDB_20120810.TransactWriteItems",
                    delay_seconds=HELD_TRANSACTION_SECONDS,
                )
            ]
        )
        slow = fleet.start_worker(
            "slow", [PURCHASES], extra_env={"AWS_ENDPOINT_URL_DYNAMODB": proxy.url}
        )
        event_ids = [sale.new_event(100) for _ in range(events)]
        for event_id in event_ids:
            assert sale.fire(single_seat_burst(event_id, per_event)) == per_event
        url = settings.purchases_queue_url

        def holding_all() -> bool:
            depth = queue_depth(sqs, url)
            return (
                proxy.stats().count("latency") >= 1 and depth.visible == 0 and depth.in_flight > 2
            )

        wait_until(holding_all, 60, "the worker to run one task and hold every other message")
        held = queue_depth(sqs, url).in_flight
        sigterm = time.monotonic()
        slow.popen.send_signal(signal.SIGTERM)
        wait_until(
            lambda: logged(slow.log.read_text(), "consumer.released_on_shutdown") is not None,
            15,
            "the worker to release what it holds",
            interval=0.05,
        )
        released_after = time.monotonic() - sigterm
        after_release = queue_depth(sqs, url)
        release = logged(slow.log.read_text(), "consumer.released_on_shutdown") or {}
        assert slow.alive(), "the worker ended before its running task could"

        fleet.start_worker("fast", [PURCHASES])
        fast_log = fleet.processes["fast"].log
        wait_until(
            lambda: any(allocation_lines([fast_log], e) for e in event_ids),
            30,
            "the other worker's first decision",
        )
        slow_still_running = slow.alive()
        orders = {e: sale.decided(e, per_event, timeout=90) for e in event_ids}
        rest_decided = time.monotonic() - sigterm
        # Its own exit (a second SIGTERM would be Celery's cold shutdown).
        wait_until(lambda: not slow.alive(), SHUTDOWN_TIMEOUT_SECONDS, "the first worker to exit")
        exit_code = slow.popen.returncode
        fleet.stop("slow")
        later = logged(slow.log.read_text(), "consumer.released_after_running_tasks") or {}
        logs = worker_logs(fleet.log_dir)
        scenario.record(
            sent=events * per_event,
            processed=sum(len({o["order_id"] for o in found}) for found in orders.values()),
            duplicated=sum(redecided(logs, e) for e in event_ids),
            held_at_sigterm=held,
            released_at_once=int(release.get("released", 0)),
            released_after_s=released_after,
            held_behind_the_running_task=int(release.get("deferred_behind_running_tasks", 0)),
            all_decided_after_s=rest_decided,
        )

    # Released at once, but for the running message and those behind it in its group ...
    released, deferred = int(release["released"]), int(release["deferred_behind_running_tasks"])
    assert int(release["kept_for_running_tasks"]) == 1
    assert released + deferred + 1 == held and released >= 2
    assert after_release.in_flight == 1 + deferred
    assert released_after < 5
    # ... which went the moment the running task ended.
    assert int(later["released"]) == deferred
    # Decided elsewhere while the first worker was still finishing its task ...
    assert slow_still_running
    assert rest_decided < VISIBILITY_TIMEOUT_SECONDS / 2
    assert exit_code == 0
    # ... exactly: nothing lost, nothing decided twice, first come first served per event.
    assert sum(redecided(logs, e) for e in event_ids) == 0
    for event_id, found in orders.items():
        ledger = sale.ledger(event_id, found)
        assert len(found) == len({o["order_id"] for o in found}) == per_event
        assert ledger.sold_counter == ledger.seats_confirmed == per_event
        assert ledger.fcfs_inversions == 0
        in_line = sorted(found, key=lambda o: o["accepted_seq"])
        assert [o["decided_at_ms"] for o in in_line] == sorted(o["decided_at_ms"] for o in found)
