"""``outbox.relay`` rounds against moto: leases and fencing, order, marking, parking."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import TABLE, MakeRecord

from flashsale.dynamo import from_item
from flashsale.names import OUTBOX_PENDING_SHARD, OUTBOX_PK, QueueRole
from outbox.leases import Leases, assign
from outbox.parked import parked_records, requeue
from outbox.pending import PendingStore
from outbox.records import shard_of
from outbox.relay import CrashPoint, Relay, RelayConfig, parse_args
from outbox.sender import Sender
from outbox.store import UnitOfWork

SHARDS = 4


class Clock:
    def __init__(self, now: float = 1_900_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def queues(aws: dict[str, Any]) -> dict[QueueRole, str]:
    urls = {role: aws["sqs"].create_queue(QueueName=f"unit-{role.value}")["QueueUrl"]
            for role in (QueueRole.PAYMENTS, QueueRole.NOTIFICATIONS)}  # fmt: skip
    urls[QueueRole.PURCHASES] = "https://sqs.us-east-1.amazonaws.com/123456789012/missing.fifo"
    return urls


def make_relay(
    aws: dict[str, Any], queues: dict[QueueRole, str], clock: Clock, owner: str, **config: Any
) -> Relay:
    settings = RelayConfig(owner=owner, lease_seconds=10, retry_base_seconds=0, **config)
    return Relay(
        store=PendingStore(aws["dynamodb"], TABLE),
        leases=Leases(aws["dynamodb"], TABLE, owner=owner, shards=SHARDS, duration=10, clock=clock),
        sender=Sender(aws["sqs"], queues, attempts=1),
        config=settings,
        clock=clock,
    )


def write(aws: dict[str, Any], *records: Any) -> None:
    uow = UnitOfWork(outbox_table=TABLE, shards=SHARDS)
    for record in records:
        uow.add_event(record)
    uow.commit(aws["dynamodb"])


def received(aws: dict[str, Any], url: str) -> list[dict[str, Any]]:
    events = []
    while (
        messages := aws["sqs"]
        .receive_message(QueueUrl=url, MaxNumberOfMessages=10)
        .get("Messages", [])
    ):
        for message in messages:
            envelope = json.loads(base64.b64decode(message["Body"]))
            events.append(json.loads(base64.b64decode(envelope["body"]))[1]["event"])
            aws["sqs"].delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return events


def outbox_items(aws: dict[str, Any]) -> list[dict[str, Any]]:
    items = aws["dynamodb"].scan(TableName=TABLE)["Items"]  # a test may scan; the relay never
    return [i for i in map(from_item, items) if "event_id" in i]


def test_assign__splits_shards_evenly_and_identically_everywhere() -> None:
    assert assign(8, ["b", "a"]) == {"a": [0, 2, 4, 6], "b": [1, 3, 5, 7]}
    assert assign(3, []) == {}


def test_relay__delivers_every_event_once_in_sequence_order_and_marks_it(
    aws: dict[str, Any], queues: dict[QueueRole, str], make_record: MakeRecord
) -> None:
    records = [make_record(f"order-{n % 5}") for n in range(20)]  # 4 events per aggregate
    write(aws, *records)
    relay = make_relay(aws, queues, Clock(), "r1")

    rounds = 0
    while relay.run_round():
        rounds += 1

    events = received(aws, queues[QueueRole.PAYMENTS])
    assert sorted(e["event_id"] for e in events) == sorted(r.event_id for r in records)
    for aggregate in {r.aggregate_id for r in records}:
        assert [e["sequence"] for e in events if e["aggregate_id"] == aggregate] == [1, 2, 3, 4]
    assert rounds == 4  # one event per aggregate per round
    items = outbox_items(aws)
    assert all(i["dispatches"] == 1 and OUTBOX_PENDING_SHARD not in i for i in items)
    assert relay.counters.dispatched == 20


def test_relay__a_relay_that_lost_its_lease_cannot_mark(
    aws: dict[str, Any], queues: dict[QueueRole, str], make_record: MakeRecord
) -> None:
    clock = Clock()
    old = make_relay(aws, queues, clock, "old")
    old.leases.maintain()
    clock.now += 30  # old is paused past its lease; new takes every shard over
    new = make_relay(aws, queues, clock, "new")
    new.leases.maintain()
    write(aws, make_record("order-1"))

    old.leases.duration = 1e9  # it still believes its leases valid, and has them in memory
    old.run_round()

    assert old.counters.dispatched == 0
    assert outbox_items(aws)[0][OUTBOX_PENDING_SHARD] is not None  # still pending
    assert new.run_round() == 1 and new.counters.dispatched == 1


def test_relay__takes_over_a_dead_relays_shards_after_its_lease_expires(
    aws: dict[str, Any], queues: dict[QueueRole, str]
) -> None:
    clock = Clock()
    dead = make_relay(aws, queues, clock, "a-dead")
    assert dead.leases.maintain() == list(range(SHARDS))
    alive = make_relay(aws, queues, clock, "b-alive")

    assert alive.leases.maintain() == []  # the dead one's heartbeat and leases still hold
    clock.now += 11
    alive.leases._next_membership = 0
    assert alive.leases.maintain() == list(range(SHARDS))


def test_relay__two_relays_split_the_shards(
    aws: dict[str, Any], queues: dict[QueueRole, str]
) -> None:
    clock = Clock()
    first, second = (make_relay(aws, queues, clock, name) for name in ("r1", "r2"))
    first.leases.maintain()
    second.leases.maintain()  # joins: nothing free yet
    clock.now += 4  # the next membership check of both
    first.leases.maintain()  # releases r2's share
    second.leases.maintain()

    assert (first.leases.maintain(), second.leases.maintain()) == ([0, 2], [1, 3])


def test_relay__parks_an_undeliverable_record_after_max_attempts(
    aws: dict[str, Any], queues: dict[QueueRole, str], make_record: MakeRecord
) -> None:
    record = make_record("order-1", destination=QueueRole.PURCHASES)
    follower = make_record("order-1")
    write(aws, record, follower)
    relay = make_relay(aws, queues, Clock(), "r1", max_attempts=3)

    for _ in range(3):
        relay.run_round()

    parked = {i[OUTBOX_PK]: i for i in outbox_items(aws) if i["sequence"] == 1}["order-1"]
    assert parked["parked"] is True and parked["attempts"] == 3
    assert OUTBOX_PENDING_SHARD not in parked
    assert relay.counters.parked == 1
    relay.run_round()  # the parked record no longer holds its aggregate back
    assert [e["event_id"] for e in received(aws, queues[QueueRole.PAYMENTS])] == [follower.event_id]


class SqsOutage:
    """An SQS client whose SendMessageBatch is throttled while ``down``."""

    def __init__(self, sqs: Any) -> None:
        self._sqs = sqs
        self.down = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sqs, name)

    def send_message_batch(self, **kwargs: Any) -> Any:
        if self.down:
            error = {"Error": {"Code": "RequestThrottled", "Message": "slow down"},
                     "ResponseMetadata": {"HTTPStatusCode": 400}}  # fmt: skip
            raise ClientError(error, "SendMessageBatch")
        return self._sqs.send_message_batch(**kwargs)


def test_relay__waits_out_an_sqs_outage_without_parking(
    aws: dict[str, Any], queues: dict[QueueRole, str], make_record: MakeRecord
) -> None:
    record = make_record("order-1")
    write(aws, record)
    relay = make_relay(aws, queues, Clock(), "r1", max_attempts=3)
    outage = SqsOutage(aws["sqs"])
    relay.sender = Sender(outage, queues, attempts=1)

    for _ in range(6):  # twice max_attempts rounds of failed sends
        relay.run_round()
    (item,) = outbox_items(aws)
    assert "parked" not in item and item["attempts"] == 0 and OUTBOX_PENDING_SHARD in item
    assert relay.counters.send_failures == 6

    outage.down = False
    relay.run_round()
    assert [e["event_id"] for e in received(aws, queues[QueueRole.PAYMENTS])] == [record.event_id]


def test_relay__sends_a_delayed_record_with_delay_seconds_and_holds_its_successor_until_visible(
    aws: dict[str, Any], queues: dict[QueueRole, str], make_record: MakeRecord
) -> None:
    retry, after = make_record("order-1", delay_seconds=30), make_record("order-1")
    write(aws, retry, after)
    clock = Clock()
    relay = make_relay(aws, queues, clock, "r1")

    assert relay.run_round() == 1  # the delayed record goes out
    clock.now += 29
    assert relay.run_round() == 0  # its message is not visible yet: the next one waits
    clock.now += 1
    assert relay.run_round() == 1

    url = queues[QueueRole.PAYMENTS]
    attributes = aws["sqs"].get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    assert attributes["Attributes"]["ApproximateNumberOfMessagesDelayed"] == "1"  # moto: real time
    assert [e["event_id"] for e in received(aws, url)] == [after.event_id]
    assert {i["sequence"]: i["dispatches"] for i in outbox_items(aws)} == {1: 1, 2: 1}


class Killed(BaseException):
    """The unit tests' SIGKILL: not an Exception, so no handler of the relay runs."""


def one_shard_aggregates(count: int) -> list[str]:
    """Aggregate ids that all hash to shard 0, so one shard's round is the whole story."""
    return [a for a in (f"order-{n}" for n in range(1000)) if shard_of(a, SHARDS) == 0][:count]


@pytest.mark.parametrize(
    ("point", "sent_at_crash", "redelivered"),
    [
        (CrashPoint.AFTER_READ, 0, 0),
        (CrashPoint.AFTER_SEND, 10, 10),  # the first SendMessageBatch of the twelve records
        (CrashPoint.BEFORE_MARK, 12, 12),
    ],
)
def test_relay__crash_drill_kills_at_its_point_and_a_restart_delivers_the_rest_marking_once(
    aws: dict[str, Any],
    queues: dict[QueueRole, str],
    make_record: MakeRecord,
    point: CrashPoint,
    sent_at_crash: int,
    redelivered: int,
) -> None:
    records = [make_record(a) for a in one_shard_aggregates(12)]
    write(aws, *records)
    url = queues[QueueRole.PAYMENTS]
    seen_at_crash: list[tuple[int, int]] = []

    def kill() -> None:
        sent = aws["sqs"].get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]["ApproximateNumberOfMessages"]
        marked = sum(i["dispatches"] for i in outbox_items(aws))
        seen_at_crash.append((int(sent), marked))
        raise Killed

    clock = Clock()
    doomed = make_relay(aws, queues, clock, "r1", crash_at=point, crash_probability=1.0)
    doomed._kill = kill
    with pytest.raises(Killed):
        doomed.run_round()
    # Restarted under the same owner: it takes its leases back at once, no expiry to wait.
    restarted = make_relay(aws, queues, clock, "r1")
    while restarted.run_round():
        pass

    assert seen_at_crash == [(sent_at_crash, 0)]
    events = [e["event_id"] for e in received(aws, url)]
    assert sorted(set(events)) == sorted(r.event_id for r in records)
    assert len(events) - len(records) == redelivered
    assert [i["dispatches"] for i in outbox_items(aws)] == [1] * len(records)


def test_relay__crash_drill_is_off_by_default_and_at_probability_zero(
    aws: dict[str, Any], queues: dict[QueueRole, str], make_record: MakeRecord
) -> None:
    write(aws, *(make_record(f"order-{n}") for n in range(8)))

    def kill() -> None:
        raise Killed

    relays = [
        make_relay(aws, queues, Clock(), "r1"),
        make_relay(aws, queues, Clock(), "r1", crash_at="after_send", crash_probability=0.0),
    ]
    for relay in relays:
        relay._kill = kill

    assert RelayConfig(owner="x").crash_at is None
    assert relays[0].run_round() == 8
    write(aws, *(make_record(f"order-{n}") for n in range(8)))
    assert relays[1].run_round() == 8


def test_relay_cli__reads_the_crash_drill_from_flags_and_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = parse_args(["--crash-at", "before_mark", "--crash-probability", "0.25"])
    monkeypatch.setenv("FLASHSALE_RELAY_CRASH_AT", "after_read")
    monkeypatch.setenv("FLASHSALE_RELAY_CRASH_PROBABILITY", "0.5")

    assert (args.crash_at, args.crash_probability) == ("before_mark", 0.25)
    config = RelayConfig()
    assert (config.crash_at, config.crash_probability) == (CrashPoint.AFTER_READ, 0.5)
    with pytest.raises(SystemExit):
        parse_args(["--crash-at", "somewhere"])


def test_parked__listed_with_its_reason_and_requeued_to_be_sent_again(
    aws: dict[str, Any], queues: dict[QueueRole, str], make_record: MakeRecord
) -> None:
    record = make_record("order-1", destination=QueueRole.PURCHASES)  # a queue that is missing
    write(aws, record)
    relay = make_relay(aws, queues, Clock(), "r1", max_attempts=1)
    relay.run_round()

    (parked,) = parked_records(aws["dynamodb"], TABLE)
    assert parked.event_id == record.event_id and "NonExistentQueue" in parked.reason

    queues[QueueRole.PURCHASES] = aws["sqs"].create_queue(
        QueueName="unit-purchases.fifo", Attributes={"FifoQueue": "true"}
    )["QueueUrl"]  # the fix: the queue exists now
    relay.sender = Sender(aws["sqs"], queues, attempts=1)
    assert requeue(aws["dynamodb"], TABLE, SHARDS, [parked]) == 1
    assert requeue(aws["dynamodb"], TABLE, SHARDS, [parked]) == 0  # no longer parked
    relay.run_round()

    assert parked_records(aws["dynamodb"], TABLE) == []
    assert [e["event_id"] for e in received(aws, queues[QueueRole.PURCHASES])] == [record.event_id]
