"""How SQS delivers, and what the purchase path makes of it (issue 5): a delivery repeated
because the work outlasted the visibility timeout, the same order in two different messages,
a batch of ten received together with poison in it, and what a purge removes.

Real ``celery -A tasks worker`` processes on the session's stack. Executions are counted from
the workers' own ``purchase.batch_allocated`` lines (one per executed task, with how many of its
requests were already decided), orders from DynamoDB, dead letters from the DLQ by run id.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from botocore.exceptions import ClientError
from polling import wait_until
from sale_harness import PURCHASES, Sale, single_seat_burst
from scenarios import Scenario, allocation_lines, redecided, worker_logs

from bench.poison import count_dead_letters, poison_bodies
from flashsale.messages import AcceptedRequest, PurchaseBatch, PurchaseRequest
from flashsale.settings import Settings
from flashsale.task_messages import batch_entry, task_message_body
from infra.local.faults import FaultProxy, FaultRule
from infra.local.fleet import Fleet
from tasks.operator import queue_depth

pytestmark = pytest.mark.integration

PURCHASE_TASK = "tasks.purchase.allocate"
TRANSACT = "DynamoDB_20120810.TransactWriteItems"
SHORT_VISIBILITY_SECONDS = 3
# The first worker's transaction is held this long by the proxy: several visibility timeouts,
# and time enough for a second worker to start and take the message.
HOLD_SECONDS = 15.0


@pytest.fixture
def fleet(environ: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = Fleet(environ, tmp_path_factory.mktemp("delivery-logs"))
    yield fleet
    fleet.stop_all()


@contextmanager
def visibility_timeout(sqs: Any, queue_url: str, seconds: int) -> Iterator[None]:
    """The queue's visibility timeout set to ``seconds``, and put back afterwards."""
    before = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["VisibilityTimeout"])
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"VisibilityTimeout": str(seconds)})
    try:
        yield
    finally:
        sqs.set_queue_attributes(QueueUrl=queue_url, Attributes=before["Attributes"])


@pytest.mark.scenario(
    "duplicate delivery: the work outlasts the visibility timeout",
    injected=f"visibility {SHORT_VISIBILITY_SECONDS} s; a write held {HOLD_SECONDS:.0f} s",
    unit="requests",
)
def test_work_outlasting_the_visibility_timeout__runs_twice_and_takes_effect_once(
    fleet: Fleet,
    sale: Sale,
    settings: Settings,
    environ: dict[str, str],
    scenario: Scenario,
) -> None:
    """The first worker's transaction is held in the network past the visibility timeout; the
    message is received again by a second worker, which decides the batch. The first
    transaction then reaches DynamoDB, fails its conditions (the counter and the orders moved
    on), re-reads, finds every request decided and writes nothing: two executions, one
    effect."""
    seats, buyers = 20, 32  # one message: the intake packs 32 buyers per batch
    with (
        visibility_timeout(sale.sqs, settings.purchases_queue_url, SHORT_VISIBILITY_SECONDS),
        FaultProxy(environ["AWS_ENDPOINT_URL_DYNAMODB"], seed=3) as proxy,
    ):
        proxy.set_rules(
            [FaultRule("latency", operation=TRANSACT, delay_seconds=HOLD_SECONDS, max_count=1)]
        )
        # Prefetch 1: holding its message, the first worker stops receiving, so only the
        # second worker can receive the message again (tests/integration/prefetch_one_...).
        fleet.start_worker(
            "first",
            [PURCHASES],
            config_module="tests.integration.prefetch_one_celeryconfig",
            extra_env={"AWS_ENDPOINT_URL_DYNAMODB": proxy.url},
        )
        event_id = sale.new_event(seats)
        assert sale.fire(single_seat_burst(event_id, buyers)) == buyers
        wait_until(
            lambda: proxy.stats().count("latency", TRANSACT) == 1,
            30,
            "the first worker's transaction to be held",
        )
        fleet.start_worker("second", [PURCHASES])
        orders = sale.decided(event_id, buyers, timeout=60)
        logs = worker_logs(fleet.log_dir)
        wait_until(
            lambda: len(allocation_lines(logs, event_id)) >= 2,
            HOLD_SECONDS + 30,
            "the first worker's execution to end too",
        )
        wait_until(sale.queue_drained, 30, "the message to leave the queue")
    runs = allocation_lines(logs, event_id)
    ledger = sale.ledger(event_id, orders)
    scenario.record(
        sent=buyers,
        processed=len({o["order_id"] for o in orders}),
        duplicated=redecided(logs, event_id),
        executions=len(runs),
    )

    assert len(runs) == 2  # delivered twice, executed twice ...
    by_effect = sorted(runs, key=lambda r: int(r["duplicates"]))
    # ... once with the effect, once finding every request decided: no second effect.
    assert [int(r["duplicates"]) for r in by_effect] == [0, buyers]
    assert int(by_effect[1]["confirmed"]) == int(by_effect[1]["sold_out"]) == 0
    assert len(orders) == buyers
    assert (ledger.confirmed, ledger.sold_out) == (seats, buyers - seats)
    assert ledger.sold_counter == ledger.seats_confirmed == seats
    assert ledger.oversold == 0 and ledger.fcfs_inversions == 0


def accepted(event_id: str, first: int, count: int) -> list[AcceptedRequest]:
    """Requests as the intake accepts them: order ids from the request, ``accepted_seq`` in
    arrival order."""
    now_ms = int(time.time() * 1000)
    made = []
    for n in range(first, first + count):
        request = PurchaseRequest(
            event_id=event_id, buyer_id=f"b{n}", quantity=1, request_id=f"r{n}"
        )
        made.append(
            AcceptedRequest(
                order_id=request.order_id,
                buyer_id=request.buyer_id,
                request_id=request.request_id,
                quantity=1,
                accepted_seq=n,
                accepted_at_ms=now_ms + n,
            )
        )
    return made


def send_batch(sqs: Any, queue_url: str, batch: PurchaseBatch, dedup_id: str) -> str:
    """One purchase message for ``batch`` in the event's group; its SQS message id."""
    body = task_message_body(
        PURCHASE_TASK, {"batch": batch.model_dump(mode="json")}, routing_key=PURCHASES
    )
    response = sqs.send_message(
        QueueUrl=queue_url,
        MessageBody=body,
        MessageGroupId=batch.event_id,
        MessageDeduplicationId=dedup_id,
    )
    return str(response["MessageId"])


@pytest.mark.scenario(
    "business idempotency: one order in several messages",
    injected="3 messages (3 message ids) carrying 15 orders, 15 of them again",
    unit="requests",
)
def test_same_order_in_different_messages__is_one_order(
    fleet: Fleet, sale: Sale, settings: Settings, scenario: Scenario
) -> None:
    """Two different messages share five orders, and a third repeats the first one's ten
    under a new deduplication id (a producer retrying after SQS's 5-minute window, or a
    redrive): SQS delivers all three; the orders table keeps one order per order id."""
    fleet.start_worker("purchase", [PURCHASES])
    seats = 8
    event_id = sale.new_event(seats)
    requests = accepted(event_id, 0, 15)
    first = PurchaseBatch(event_id=event_id, requests=requests[0:10])
    overlapping = PurchaseBatch(event_id=event_id, requests=requests[5:15])
    url = settings.purchases_queue_url
    message_ids = [
        send_batch(sale.sqs, url, first, first.batch_id),
        send_batch(sale.sqs, url, overlapping, overlapping.batch_id),
        send_batch(sale.sqs, url, first, f"{first.batch_id[:40]}-retry"),
    ]

    logs = worker_logs(fleet.log_dir)
    wait_until(lambda: len(allocation_lines(logs, event_id)) == 3, 60, "three executions")
    orders = sale.orders(event_id)
    ledger = sale.ledger(event_id, orders)
    scenario.record(
        sent=len(requests),
        processed=len({o["order_id"] for o in orders}),
        duplicated=redecided(logs, event_id),
        messages=len(set(message_ids)),
    )

    assert len(set(message_ids)) == 3  # three deliveries SQS could not tell apart
    assert len(orders) == len({o["order_id"] for o in orders}) == 15
    assert {o["order_id"] for o in orders} == {r.order_id for r in requests}
    assert redecided(logs, event_id) == 5 + 10  # the overlap, then the whole repeat
    assert ledger.sold_counter == ledger.seats_confirmed == seats
    assert ledger.oversold == 0 and ledger.fcfs_inversions == 0


_REJECTED = re.compile(r"consumer\.message_rejected\s.*message_id=(\S+)")
_MESSAGE_LINE = re.compile(r"Task tasks\.purchase\.allocate\[[^\]]+\] (received|succeeded)")


@pytest.mark.scenario(
    "partial batch failure: poison inside one receive of 10",
    injected="1 SendMessageBatch of 10: 7 purchase batches + 3 poison messages",
    unit="messages",
)
def test_one_receive_with_poison_in_it__good_ones_decided_poison_retried_then_dead_lettered(
    fleet: Fleet, sale: Sale, settings: Settings, scenario: Scenario
) -> None:
    """Ten messages go in with one SendMessageBatch while no worker runs, so the worker's first
    receive (prefetch 10) brings them together. Each message is acked or rejected on its own:
    the seven good ones are decided and deleted, each poison one is rejected without being
    deleted, received again after the backoff (1 s, 2 s), and the redrive policy moves it to
    the DLQ after its third receive. Nothing of the good ones waits for the poison."""
    run_id = uuid.uuid4().hex
    event_id = sale.new_event(20)
    requests = accepted(event_id, 0, 28)
    good = [
        batch_entry(
            str(n),
            PURCHASE_TASK,
            {"batch": PurchaseBatch(event_id=event_id, requests=chunk).model_dump(mode="json")},
            routing_key=PURCHASES,
            group_id=event_id,
            dedup_id=f"{run_id}-good-{n}",
        )
        for n, chunk in enumerate(requests[i : i + 4] for i in range(0, 28, 4))
    ]
    poison = [
        {
            "Id": f"p{n}",
            "MessageBody": body,
            "MessageGroupId": f"poison-{run_id}-{n}",  # its own group: it holds up no buyer
            "MessageDeduplicationId": f"{run_id}-poison-{n}",
        }
        for n, body in enumerate(poison_bodies(run_id, 3, PURCHASES))
    ]
    entries = [good[0], poison[0], *good[1:4], poison[1], *good[4:], poison[2]]
    response = sale.sqs.send_message_batch(QueueUrl=settings.purchases_queue_url, Entries=entries)
    assert len(response["Successful"]) == 10, response
    poison_ids = {r["MessageId"] for r in response["Successful"] if r["Id"].startswith("p")}
    started = time.monotonic()
    worker = fleet.start_worker("purchase", [PURCHASES])

    orders = sale.decided(event_id, 28, timeout=60)
    decided_after = time.monotonic() - started
    dead: list[int] = []

    def all_dead_lettered() -> bool:
        dead.append(count_dead_letters(sale.sqs, settings.purchases_dlq_url, run_id))
        return dead[-1] >= 3

    wait_until(all_dead_lettered, 90, "the 3 poison messages in the DLQ", interval=1)
    dead_after = time.monotonic() - started
    log = worker.log.read_text(errors="replace")
    rejections = Counter(_REJECTED.findall(log))
    # One receive: every good message was taken before the first one finished.
    lines = [m.group(1) for m in _MESSAGE_LINE.finditer(log)]
    received_first = lines.index("succeeded") if "succeeded" in lines else len(lines)
    decided_ids = {o["order_id"] for o in orders}
    chunks = [requests[i : i + 4] for i in range(0, 28, 4)]
    scenario.record(
        sent=len(entries),
        processed=sum(all(r.order_id in decided_ids for r in chunk) for chunk in chunks),
        dead_lettered=dead[-1],
        duplicated=redecided([worker.log], event_id),
        received_before_first_ack=received_first,
        good_decided_after_s=decided_after,
        poison_dead_lettered_after_s=dead_after,
    )

    assert received_first == len(good)
    assert len(orders) == len({o["order_id"] for o in orders}) == 28
    assert len(allocation_lines([worker.log], event_id)) == len(good)  # each good one once
    assert dead[-1] == 3
    # Each poison message: received and rejected three times (maxReceiveCount), then moved.
    assert {i: rejections[i] for i in poison_ids} == dict.fromkeys(poison_ids, 3)
    assert decided_after < dead_after  # the good ones did not wait for the poison
    assert sale.ledger(event_id, orders).fcfs_inversions == 0
    assert worker.alive()


@pytest.fixture
def scratch_queues(clients: dict[str, Any]) -> Iterator[dict[str, str]]:
    """A standard and a FIFO queue of this test's own; deleted after."""
    sqs = clients["sqs"]
    suffix = uuid.uuid4().hex[:10]
    urls = {
        "standard": sqs.create_queue(QueueName=f"it-purge-{suffix}")["QueueUrl"],
        "fifo": sqs.create_queue(
            QueueName=f"it-purge-{suffix}.fifo", Attributes={"FifoQueue": "true"}
        )["QueueUrl"],
    }
    yield urls
    for url in urls.values():
        sqs.delete_queue(QueueUrl=url)


def send_many(sqs: Any, url: str, kind: str, bodies: list[str]) -> None:
    for start in range(0, len(bodies), 10):
        sqs.send_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(n), "MessageBody": body}
                | (
                    {"MessageGroupId": "g", "MessageDeduplicationId": f"{body}-{time.time_ns()}"}
                    if kind == "fifo"
                    else {}
                )
                for n, body in enumerate(bodies[start : start + 10])
            ],
        )


def drain(sqs: Any, url: str) -> list[str]:
    """Every message body left, each received and deleted, until a receive brings none."""
    bodies: list[str] = []
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages", []
        )
        if not messages:
            return bodies
        for message in messages:
            bodies.append(message["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


@pytest.mark.scenario(
    "purge timing",
    injected="PurgeQueue with 100 waiting (1 in flight), then 20 sent after it finished",
    unit="messages",
)
def test_purge__empties_the_queue_and_keeps_what_is_sent_after_it_finished(
    clients: dict[str, Any], scratch_queues: dict[str, str], scenario: Scenario
) -> None:
    """What is deterministic about PurgeQueue, on both queue types: it removes everything the
    queue held when it was called (visible and in flight), within 60 s on AWS (polled here,
    never slept), and keeps every message sent after the queue was seen empty. What is not:
    AWS may also delete messages sent *during* those 60 s, and refuses a second purge within
    them (``PurgeQueueInProgress``) — observed and reported here, not asserted."""
    sqs = clients["sqs"]
    kept: dict[str, list[str]] = {}
    purge_seconds: dict[str, float] = {}
    second_purge: dict[str, str] = {}
    stale_delete: dict[str, str] = {}
    for kind, url in scratch_queues.items():
        send_many(sqs, url, kind, [f"before-{n}" for n in range(100)])
        (held,) = sqs.receive_message(QueueUrl=url, VisibilityTimeout=60)["Messages"]
        called = time.monotonic()
        sqs.purge_queue(QueueUrl=url)
        wait_until(lambda u=url: queue_depth(sqs, u).total == 0, 75, f"the {kind} queue empty")
        purge_seconds[kind] = time.monotonic() - called
        try:
            sqs.purge_queue(QueueUrl=url)
            second_purge[kind] = "accepted"
        except ClientError as exc:
            second_purge[kind] = exc.response["Error"]["Code"]
        try:  # the consumer that held a purged message finishes and deletes it
            sqs.delete_message(QueueUrl=url, ReceiptHandle=held["ReceiptHandle"])
            stale_delete[kind] = "ok"
        except ClientError as exc:
            stale_delete[kind] = exc.response["Error"]["Code"]
        wait_until(lambda u=url: queue_depth(sqs, u).total == 0, 75, "the second purge")
        after = [f"after-{n}" for n in range(20)]
        send_many(sqs, url, kind, after)
        kept[kind] = drain(sqs, url)
    scenario.record(
        sent=sum(20 for _ in scratch_queues),
        processed=sum(len(bodies) for bodies in kept.values()),
        purged=200,
        empty_after_s=max(purge_seconds.values()),
        second_purge_within_a_minute=", ".join(f"{k} {v}" for k, v in second_purge.items()),
        delete_of_a_purged_in_flight_message=", ".join(f"{k} {v}" for k, v in stale_delete.items()),
    )

    for kind in scratch_queues:
        assert sorted(kept[kind]) == sorted(f"after-{n}" for n in range(20)), kind
        assert second_purge[kind] in {"accepted", "AWS.SimpleQueueService.PurgeQueueInProgress"}
    assert kept["fifo"] == [f"after-{n}" for n in range(20)]  # in order, too
