"""Failure scenarios against a stack of this module's own, each counted exactly (issue 5).

The module starts its own stack: the alarm scenario watches the payments DLQ's depth, which
other modules' dead letters must not raise first.
"""

from __future__ import annotations

import json
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

from bench.poison import poison_bodies, send_poison
from flashsale.names import QueueRole, alarm_name
from flashsale.settings import Settings
from infra.local.fleet import Fleet
from tasks.operator import queue_name

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


def test_alarm_path__a_poison_message_fires_the_dlq_alarm_and_its_sns_notice_reaches_a_subscriber(
    settings: Settings, clients: dict[str, Any], alarm_subscriber: str
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
    assert len(fired) == 1, fired
    print(f"notice received {time.monotonic() - dead_lettered_at:.1f} s after dead-lettering")


@pytest.fixture
def fleet(environ: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = Fleet(environ, tmp_path_factory.mktemp("worker-logs"))
    yield fleet
    fleet.stop_all()


def test_graceful_shutdown__sigterm_lets_in_flight_work_finish_and_loses_nothing(
    fleet: Fleet, settings: Settings, clients: dict[str, Any]
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
        # What the first worker had prefetched but not started reappears after the queue's
        # visibility timeout (60 s); what it had committed is recognised as already decided.
        orders = sale.decided(event_id, BUYERS, timeout=150)
        print(f"the rest decided {time.monotonic() - restarting:.1f} s after the restart")
        ledger = sale.ledger(event_id, orders)

    assert len(orders) == len({o["order_id"] for o in orders}) == BUYERS
    assert (ledger.confirmed, ledger.sold_out, ledger.rejected) == (SEATS, BUYERS - SEATS, 0)
    assert ledger.sold_counter == ledger.seats_confirmed == SEATS
    assert ledger.oversold == 0
    assert ledger.fcfs_inversions == 0
