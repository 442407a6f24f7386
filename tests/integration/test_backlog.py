"""Backlogs (issue 5): buyers keep coming while no worker consumes, and a producer faster than
one worker with consumers added on queue depth. Both slow, both on a stack of their own (the
controller and the age of the oldest message read the whole purchases queue).

Counts are exact: every request sent has one decided order, read back from DynamoDB; the
workers' own logs say how many requests they found already decided (duplicates absorbed).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from local_stacks import running_stack
from polling import wait_until
from sale_harness import PURCHASES, Sale, single_seat_burst
from scenarios import Scenario, redecided, worker_logs

from flashsale.settings import Settings
from infra.local.autoscale import QueueScaler
from infra.local.faults import FaultProxy, FaultRule
from infra.local.fleet import Fleet
from tasks.operator import queue_depth

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TRANSACT = "DynamoDB_20120810.TransactWriteItems"


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A stack of this module's own: the queue's whole depth and oldest message are read."""
    yield from running_stack(tmp_path_factory)


@pytest.fixture
def fleet(environ: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = Fleet(environ, tmp_path_factory.mktemp("backlog-logs"))
    yield fleet
    fleet.stop_all()


def wave(event_ids: list[str], first: int, count: int) -> list[dict[str, Any]]:
    """``count`` more buyers for each event, numbered from ``first``."""
    return [
        request
        for event_id in event_ids
        for request in single_seat_burst(event_id, first + count)[first:]
    ]


def oldest_message_age(sqs: Any, queue_url: str) -> float:
    """Seconds since the oldest waiting message was sent, from its ``SentTimestamp``.

    LocalStack publishes no ``ApproximateAgeOfOldestMessage`` (what ``tasks.status`` shows on
    AWS), so the queue is peeked: one receive with a zero visibility timeout returns the head
    of each message group (a FIFO queue's oldest message is one of them). The peek counts as
    a receive towards ``maxReceiveCount`` (3): fine once, in a test; on AWS read the metric.
    """
    messages = sqs.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=10,
        VisibilityTimeout=0,
        MessageSystemAttributeNames=["SentTimestamp"],
    ).get("Messages", [])
    if not messages:
        return 0.0
    oldest_ms = min(int(m["Attributes"]["SentTimestamp"]) for m in messages)
    return time.time() - oldest_ms / 1000


def first_come_first_served(sale: Sale, event_id: str, orders: list[dict[str, Any]]) -> None:
    """The event's orders were decided in the order they were accepted, without inversions."""
    in_line = sorted(orders, key=lambda o: o["accepted_seq"])
    assert [o["decided_at_ms"] for o in in_line] == sorted(o["decided_at_ms"] for o in orders)
    ledger = sale.ledger(event_id, orders)
    assert ledger.fcfs_inversions == 0 and ledger.oversold == 0
    assert ledger.sold_counter == ledger.seats_confirmed


@pytest.mark.scenario(
    "backlog drain after an outage",
    injected="both purchase workers stopped mid-sale for 6 waves of buyers, then restarted",
    unit="requests",
)
def test_backlog_after_an_outage__is_drained_exactly_and_first_come_first_served(
    sale: Sale, settings: Settings, scenario: Scenario
) -> None:
    events, per_wave, waves, outage_from = 3, 60, 8, 2
    seats = 150
    for n in range(2):
        sale.fleet.start_worker(f"purchase-{n}", [PURCHASES])
    event_ids = [sale.new_event(seats) for _ in range(events)]
    url = settings.purchases_queue_url
    outage_started = 0.0
    for n in range(waves):
        if n == outage_from:  # the workers go away; the buyers do not
            for worker in ("purchase-0", "purchase-1"):
                assert sale.fleet.stop(worker, timeout=60) == 0
            outage_started = time.monotonic()
        assert sale.fire(wave(event_ids, n * per_wave, per_wave)) == events * per_wave
        time.sleep(1.0)  # the buyers' pace: one wave a second (not a wait for a condition)
    outage = time.monotonic() - outage_started
    backlog = queue_depth(sale.sqs, url)
    age = oldest_message_age(sale.sqs, url)

    restarted = time.monotonic()
    for n in range(2):
        sale.fleet.start_worker(f"purchase-{n}-after", [PURCHASES])
    total = events * per_wave * waves
    orders = {e: sale.decided(e, per_wave * waves, timeout=180) for e in event_ids}
    drained = time.monotonic() - restarted
    wait_until(sale.queue_drained, 60, "the purchases queue to drain")
    logs = worker_logs(sale.fleet.log_dir)
    scenario.record(
        sent=total,
        processed=sum(len({o["order_id"] for o in found}) for found in orders.values()),
        duplicated=sum(redecided(logs, e) for e in event_ids),
        backlog_messages=backlog.visible,
        oldest_message_age_s=age,
        outage_s=outage,
        drained_in_s=drained,
    )

    assert backlog.visible > 0 and backlog.in_flight == 0  # nobody was consuming
    assert outage - 2 <= age <= outage + 30  # the oldest waited about as long as the outage
    for event_id, found in orders.items():
        assert len(found) == len({o["order_id"] for o in found}) == per_wave * waves
        first_come_first_served(sale, event_id, found)
        assert sum(o["status"] == "confirmed" for o in found) == seats


@pytest.mark.scenario(
    "backpressure: workers added on queue depth",
    injected="8 events at once; DynamoDB +500 ms per write (one worker ~1.5 batches/s)",
    unit="requests",
)
def test_backpressure__workers_are_added_on_queue_depth_until_the_backlog_drains(
    sale: Sale, settings: Settings, environ: dict[str, str], scenario: Scenario
) -> None:
    """A burst faster than one worker: the controller (``infra.local.autoscale``) reads the
    queue's depth every second, adds a worker per poll while more than ``per_worker``
    messages wait per worker (up to 4), and stops them again (warm shutdowns, which release
    what they prefetched) once the queue stays empty. Workers help across events: one event
    is one FIFO group, consumed by one worker at a time (a receive takes up to 10 messages
    of one group)."""
    events, per_event, seats = 8, 480, 200
    url = settings.purchases_queue_url
    with FaultProxy(environ["AWS_ENDPOINT_URL_DYNAMODB"], seed=9) as proxy:
        proxy.set_rules([FaultRule("latency", operation=TRANSACT, delay_seconds=0.5)])
        scaler = QueueScaler(
            sale.fleet,
            boto3.client("sqs"),
            url,
            [PURCHASES],
            name_prefix="scaled",
            min_workers=1,
            max_workers=4,
            per_worker=10,
            idle_polls=3,
            interval=1.0,
            worker_env={"AWS_ENDPOINT_URL_DYNAMODB": proxy.url},
        ).start()
        try:
            event_ids = [sale.new_event(seats) for _ in range(events)]
            firing = time.monotonic()
            sent = sale.fire(wave(event_ids, 0, per_event))
            fired_in = time.monotonic() - firing
            orders = {e: sale.decided(e, per_event, timeout=240) for e in event_ids}
            drained_in = time.monotonic() - firing
            wait_until(lambda: len(scaler.workers) == 1, 90, "the controller to scale back in")
        finally:
            scaler.stop()
    logs = worker_logs(sale.fleet.log_dir)
    messages = math.ceil(per_event / settings.purchase_batch_size) * events
    scenario.record(
        sent=sent,
        processed=sum(len({o["order_id"] for o in found}) for found in orders.values()),
        duplicated=sum(redecided(logs, e) for e in event_ids),
        max_depth=scaler.max_depth,
        workers_reached=scaler.max_workers_reached,
        producer_requests_per_second=round(sent / fired_in),
        drained_in_s=drained_in,
    )

    assert sent == events * per_event
    assert scaler.max_depth > scaler.per_worker  # the producer got ahead of one worker
    assert scaler.max_workers_reached == scaler.max_workers  # ... and workers were added
    assert len(scaler.workers) == scaler.min_workers  # ... and stopped again when idle
    assert scaler.max_depth <= messages
    for event_id, found in orders.items():
        assert len(found) == len({o["order_id"] for o in found}) == per_event
        first_come_first_served(sale, event_id, found)
