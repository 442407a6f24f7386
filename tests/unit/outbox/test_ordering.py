"""``outbox.ordering``: one head per aggregate, behind its predecessor, packed within SQS limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from conftest import MakeRecord

from flashsale.names import QueueRole
from outbox.ordering import Pending, State, batches, heads, ready

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_heads__takes_the_lowest_sequence_of_each_aggregate_oldest_first(
    make_record: MakeRecord,
) -> None:
    pending = [
        Pending(make_record("b", 2, created_at=at(1))),
        Pending(make_record("a", 5, created_at=at(3))),
        Pending(make_record("b", 1, created_at=at(2))),  # created later, still first of b
        Pending(make_record("a", 4, created_at=at(4))),
    ]

    chosen = heads(pending, now=0)

    assert [p.key for p in chosen] == [("b", 1), ("a", 4)]


def test_heads__an_aggregate_whose_head_backs_off_sends_nothing(make_record: MakeRecord) -> None:
    pending = [
        Pending(make_record("a", 1), attempts=1, retry_after=100.0),
        Pending(make_record("a", 2)),
        Pending(make_record("b", 1), attempts=1, retry_after=50.0),
    ]

    assert heads(pending, now=60.0) == [pending[2]]


def test_ready__waits_for_a_pending_predecessor_and_drops_what_is_no_longer_pending(
    make_record: MakeRecord,
) -> None:
    a3, b1, c2, d1 = (
        Pending(make_record(x, n)) for x, n in [("a", 3), ("b", 1), ("c", 2), ("d", 1)]
    )
    pending, gone = State(pending=True), State(pending=False)
    state = {
        ("a", 3): pending, ("a", 2): pending,  # a's earlier event not out yet (stale index)
        ("b", 1): pending,
        ("c", 2): pending, ("c", 1): gone,  # c1 dispatched
        ("d", 1): gone,  # dispatched since the index was read
    }  # fmt: skip

    assert ready([a3, b1, c2, d1], state, now=0.0) == [b1, c2]


def test_ready__a_missing_predecessor_does_not_block(make_record: MakeRecord) -> None:
    late = Pending(make_record("a", 9))

    assert ready([late], {("a", 9): State(pending=True)}, now=0.0) == [late]


def test_ready__a_predecessor_sent_with_a_delay_holds_its_successor_until_visible(
    make_record: MakeRecord,
) -> None:
    second = Pending(make_record("a", 2))
    state = {("a", 2): State(pending=True), ("a", 1): State(pending=False, visible_at=130.0)}

    assert ready([second], state, now=129.9) == []
    assert ready([second], state, now=130.0) == [second]


def test_batches__at_most_ten_per_call_and_one_destination_per_call(
    make_record: MakeRecord,
) -> None:
    pay = [Pending(make_record(f"p{n}")) for n in range(23)]
    mail = [Pending(make_record(f"m{n}", destination=QueueRole.NOTIFICATIONS)) for n in range(3)]

    loads = list(batches(pay + mail, byte_limit=256 * 1024))

    assert [(d, len(b)) for d, b in loads] == [
        (QueueRole.PAYMENTS, 10), (QueueRole.PAYMENTS, 10), (QueueRole.PAYMENTS, 3),
        (QueueRole.NOTIFICATIONS, 3),
    ]  # fmt: skip
    assert [p for _, b in loads for p in b] == pay + mail  # order kept


def test_batches__split_when_the_bodies_would_exceed_the_batch_byte_limit(
    make_record: MakeRecord,
) -> None:
    big = [Pending(make_record(f"p{n}", payload={"blob": "x" * 60_000})) for n in range(5)]
    limit = 256 * 1024

    loads = [b for _, b in batches(big, byte_limit=limit)]

    assert [len(b) for b in loads] == [2, 2, 1]
    assert all(sum(p.record.message_size for p in b) <= limit for b in loads)
