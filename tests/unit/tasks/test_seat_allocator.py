"""``SeatAllocator`` against moto's in-process DynamoDB: no oversell, one order per request."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError
from moto_tables import Tables
from tenacity import stop_after_attempt, wait_none

from bench.ledger import Ledger, read_ledger
from flashsale.messages import AcceptedRequest, OrderStatus, PurchaseBatch
from flashsale.names import INVENTORY_PK
from tasks.allocation import SeatAllocator
from tasks.exceptions import ConcurrentAllocation
from tasks.inventory import get_inventory

MakeRequest = Callable[..., AcceptedRequest]
MakeBatch = Callable[..., PurchaseBatch]


def ledger(tables: Tables, event_id: str) -> Ledger:
    return read_ledger(tables.inventory_of(event_id), tables.orders_of(event_id))


def statuses_by_order(tables: Tables, event_id: str) -> dict[str, str]:
    return {o["order_id"]: o["status"] for o in tables.orders_of(event_id)}


class SoldChangesBeforeWrite:
    """A DynamoDB client through which another writer changes ``sold`` between our read and
    our write.

    Before each of the first ``times`` ``TransactWriteItems`` calls, ``sold`` moves by ``seats``
    behind the allocator's back (up: a concurrent worker sold them; down: seats handed back).
    """

    def __init__(self, ddb: Any, table: str, event_id: str, *, seats: int, times: int) -> None:
        self._ddb = ddb
        self._table = table
        self._event_id = event_id
        self._seats = seats
        self._times = times
        self.writes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ddb, name)

    def transact_write_items(self, **kwargs: Any) -> Any:
        self.writes += 1
        if self.writes <= self._times:
            self._ddb.update_item(
                TableName=self._table,
                Key={INVENTORY_PK: {"S": self._event_id}},
                UpdateExpression="SET sold = sold + :n",
                ExpressionAttributeValues={":n": {"N": str(self._seats)}},
            )
        return self._ddb.transact_write_items(**kwargs)


def test_allocator__confirms_in_line_then_sells_out(tables: Tables, make_batch: MakeBatch) -> None:
    event = tables.new_event("gig", capacity=3)
    batch = make_batch(event, [1, 1, 1, 1])

    outcome = tables.allocator().allocate(batch)

    assert outcome.summary() == {"confirmed": 3, "sold_out": 1, "rejected": 0, "duplicates": 0}
    assert [o["status"] for o in tables.orders_of(event)] == [
        "confirmed", "confirmed", "confirmed", "sold_out",
    ]  # fmt: skip
    sale = ledger(tables, event)
    assert (sale.sold_counter, sale.seats_confirmed, sale.oversold) == (3, 3, 0)
    assert sale.fcfs_inversions == 0


def test_allocator__never_confirms_more_seats_than_left_across_batches(
    tables: Tables, make_batch: MakeBatch
) -> None:
    event = tables.new_event("gig", capacity=5)
    allocator = tables.allocator()

    for quantities in ([2, 2], [2, 1], [1, 1]):
        allocator.allocate(make_batch(event, quantities))

    sale = ledger(tables, event)
    assert (sale.sold_counter, sale.seats_confirmed, sale.oversold) == (5, 5, 0)
    assert [o["status"] for o in tables.orders_of(event)] == [
        "confirmed", "confirmed", "sold_out", "confirmed", "sold_out", "sold_out",
    ]  # fmt: skip


def test_allocator__a_redelivered_batch_changes_nothing(
    tables: Tables, make_batch: MakeBatch
) -> None:
    event = tables.new_event("gig", capacity=2)
    batch = make_batch(event, [1, 2, 1])
    allocator = tables.allocator()
    allocator.allocate(batch)
    orders_before = tables.orders_of(event)

    again = allocator.allocate(batch)

    assert again.decisions == []
    assert again.duplicates == len(batch.requests)
    assert tables.orders_of(event) == orders_before
    assert tables.sold(event) == 2


def test_allocator__a_request_repeated_inside_one_batch_is_one_order(
    tables: Tables, make_request: MakeRequest
) -> None:
    event = tables.new_event("gig", capacity=10)
    first = make_request(2, buyer="ann", request="click", event=event)
    double_click = make_request(2, buyer="ann", request="click", event=event)
    other = make_request(1, buyer="bob", event=event)
    batch = PurchaseBatch(event_id=event, requests=[first, double_click, other])

    outcome = tables.allocator().allocate(batch)

    assert outcome.duplicates == 1
    assert [d.request for d in outcome.decisions] == [first, other]
    assert statuses_by_order(tables, event) == {
        first.order_id: "confirmed",
        other.order_id: "confirmed",
    }
    assert tables.sold(event) == 3


def test_allocator__a_batch_with_some_requests_already_decided_decides_only_the_new_ones(
    tables: Tables, make_request: MakeRequest
) -> None:
    event = tables.new_event("gig", capacity=2)
    early = make_request(1, event=event)
    allocator = tables.allocator()
    allocator.allocate(PurchaseBatch(event_id=event, requests=[early]))
    late = make_request(1, event=event)

    outcome = allocator.allocate(PurchaseBatch(event_id=event, requests=[early, late]))

    assert outcome.duplicates == 1
    assert [(d.request, d.status) for d in outcome.decisions] == [(late, OrderStatus.CONFIRMED)]
    assert tables.sold(event) == 2


def test_allocator__retries_when_sold_changes_between_read_and_write_and_never_oversells(
    tables: Tables, make_batch: MakeBatch
) -> None:
    event = tables.new_event("gig", capacity=5)
    racing = SoldChangesBeforeWrite(tables.ddb, tables.inventory, event, seats=3, times=1)

    outcome = tables.allocator(racing).allocate(make_batch(event, [2, 2, 1]))

    assert racing.writes == 2  # the first transaction was cancelled, the re-read one committed
    assert [d.status for d in outcome.decisions] == [
        OrderStatus.CONFIRMED, OrderStatus.SOLD_OUT, OrderStatus.SOLD_OUT,
    ]  # fmt: skip
    inventory = tables.inventory_of(event)
    assert inventory["sold"] == 5 == inventory["capacity"]
    assert len(tables.orders_of(event)) == 3


def test_allocator__a_cancelled_transaction_writes_no_order(
    tables: Tables, make_batch: MakeBatch
) -> None:
    event = tables.new_event("gig", capacity=5)
    racing = SoldChangesBeforeWrite(tables.ddb, tables.inventory, event, seats=1, times=1)
    allocator = tables.allocator(racing)
    # One attempt only: the cancelled transaction must leave no order behind.
    once = SeatAllocator.allocate.retry_with(stop=stop_after_attempt(1))

    with pytest.raises(ConcurrentAllocation):
        once(allocator, make_batch(event, [1, 1]))

    assert tables.orders_of(event) == []
    assert tables.sold(event) == 1


def test_allocator__gives_up_with_concurrent_allocation_when_contention_never_stops(
    tables: Tables, make_batch: MakeBatch
) -> None:
    event = tables.new_event("gig", capacity=1000)
    racing = SoldChangesBeforeWrite(tables.ddb, tables.inventory, event, seats=1, times=10**6)
    allocator = tables.allocator(racing)
    no_wait = SeatAllocator.allocate.retry_with(wait=wait_none())

    with pytest.raises(ConcurrentAllocation):
        no_wait(allocator, make_batch(event, [1]))

    assert racing.writes == 20
    assert tables.orders_of(event) == []


def test_allocator__a_sold_out_decision_is_guarded_by_the_counter_it_read(
    tables: Tables, make_batch: MakeBatch
) -> None:
    """Seats handed back between read and write (sold goes down) must not leave a buyer refused
    on a stale count: the ConditionCheck on ``sold`` forces a re-read."""
    event = tables.new_event("gig", capacity=2)
    allocator = tables.allocator()
    allocator.allocate(make_batch(event, [2]))
    giving_back = SoldChangesBeforeWrite(tables.ddb, tables.inventory, event, seats=-1, times=1)

    outcome = tables.allocator(giving_back).allocate(make_batch(event, [1]))

    assert giving_back.writes == 2
    assert [d.status for d in outcome.decisions] == [OrderStatus.CONFIRMED]
    assert tables.sold(event) == 2


def test_allocator__rejects_every_order_of_an_unknown_event(
    tables: Tables, make_batch: MakeBatch
) -> None:
    outcome = tables.allocator().allocate(make_batch("no-such-gig", [1, 2]))

    assert outcome.summary() == {"confirmed": 0, "sold_out": 0, "rejected": 2, "duplicates": 0}
    orders = tables.orders_of("no-such-gig")
    assert [(o["status"], o["reason"]) for o in orders] == [("rejected", "unknown event")] * 2
    assert get_inventory(tables.ddb, tables.inventory, "no-such-gig") is None


def test_allocator__rejects_over_the_limit_and_records_why(
    tables: Tables, make_batch: MakeBatch
) -> None:
    event = tables.new_event("gig", capacity=10)

    outcome = tables.allocator(max_per_request=2).allocate(make_batch(event, [3, 2]))

    assert outcome.summary() == {"confirmed": 1, "sold_out": 0, "rejected": 1, "duplicates": 0}
    orders = tables.orders_of(event)
    assert [(o["status"], o.get("reason")) for o in orders] == [
        ("rejected", "more than 2 tickets"), ("confirmed", None),
    ]  # fmt: skip
    assert tables.sold(event) == 2


def test_allocator__a_full_batch_fits_one_read_and_one_transaction(
    tables: Tables, make_batch: MakeBatch
) -> None:
    """32 confirmed requests: 33 keys in BatchGetItem; 97 items in TransactWriteItems (an order,
    a saga and its first command per seat, plus the counter). DynamoDB allows 100."""
    event = tables.new_event("gig", capacity=32)
    calls = CountingClient(tables.ddb)

    outcome = tables.allocator(calls, sagas=True).allocate(make_batch(event, [1] * 32))

    assert outcome.summary() == {"confirmed": 32, "sold_out": 0, "rejected": 0, "duplicates": 0}
    assert tables.sold(event) == 32
    assert calls.counts == {"batch_get_item": 1, "transact_write_items": 1}
    assert calls.largest_transaction == 97


def test_allocator__consecutive_batches_of_an_event_read_once(
    tables: Tables, make_batch: MakeBatch
) -> None:
    """The count this allocator saw last is its next batch's guess: one call a batch."""
    event = tables.new_event("gig", capacity=100)
    calls = CountingClient(tables.ddb)
    allocator = tables.allocator(calls)

    for quantities in ([1, 2], [3], [1, 1, 1]):
        allocator.allocate(make_batch(event, quantities))

    assert calls.counts == {"batch_get_item": 1, "transact_write_items": 3}
    assert tables.sold(event) == 9


def test_allocator__two_workers_taking_turns_still_skip_the_read_far_from_the_edge(
    tables: Tables, make_batch: MakeBatch
) -> None:
    """Each worker's count is stale after the other's batch, but "every buyer gets a seat"
    still holds, and that range is what the transaction checks."""
    event = tables.new_event("gig", capacity=100)
    ours, theirs = CountingClient(tables.ddb), CountingClient(tables.ddb)
    first, second = tables.allocator(ours), tables.allocator(theirs)

    for _ in range(3):
        first.allocate(make_batch(event, [2, 2]))
        second.allocate(make_batch(event, [1, 1]))

    for calls in (ours, theirs):
        assert calls.counts == {"batch_get_item": 1, "transact_write_items": 3}
    sale = ledger(tables, event)
    assert (sale.sold_counter, sale.seats_confirmed, sale.oversold) == (18, 18, 0)


def test_allocator__a_batch_at_the_edge_is_decided_on_a_fresh_read(
    tables: Tables, make_batch: MakeBatch
) -> None:
    """A guess that would split the batch (some seated, some not) is not written: only an
    exact count may decide where the line falls."""
    event = tables.new_event("gig", capacity=5)
    calls = CountingClient(tables.ddb)
    allocator = tables.allocator(calls)
    allocator.allocate(make_batch(event, [2]))

    outcome = allocator.allocate(make_batch(event, [2, 2]))

    assert [d.status for d in outcome.decisions] == [OrderStatus.CONFIRMED, OrderStatus.SOLD_OUT]
    assert calls.counts == {"batch_get_item": 2, "transact_write_items": 2}
    assert tables.sold(event) == 4


def test_allocator__sold_out_is_decided_without_a_read_once_known(
    tables: Tables, make_batch: MakeBatch
) -> None:
    event = tables.new_event("gig", capacity=2)
    calls = CountingClient(tables.ddb)
    allocator = tables.allocator(calls)
    allocator.allocate(make_batch(event, [2]))

    for _ in range(2):
        outcome = allocator.allocate(make_batch(event, [1, 3]))
        assert [d.status for d in outcome.decisions] == [OrderStatus.SOLD_OUT] * 2

    assert calls.counts == {"batch_get_item": 1, "transact_write_items": 3}
    assert tables.sold(event) == 2


def test_allocator__a_remembered_counter_gone_stale_is_caught_and_read_again(
    tables: Tables, make_batch: MakeBatch
) -> None:
    """Another worker sold the last seats since this allocator's last batch."""
    event = tables.new_event("gig", capacity=4)
    calls = CountingClient(tables.ddb)
    ours, theirs = tables.allocator(calls), tables.allocator()
    ours.allocate(make_batch(event, [2]))
    theirs.allocate(make_batch(event, [1, 1]))

    outcome = ours.allocate(make_batch(event, [1]))

    assert [d.status for d in outcome.decisions] == [OrderStatus.SOLD_OUT]
    # The guess (2 sold) failed its condition, the re-read one committed.
    assert calls.counts == {"batch_get_item": 2, "transact_write_items": 3}
    sale = ledger(tables, event)
    assert (sale.sold_counter, sale.seats_confirmed, sale.oversold) == (4, 4, 0)


def test_allocator__seats_released_since_the_last_batch_are_sold_not_refused(
    tables: Tables, make_batch: MakeBatch
) -> None:
    """A remembered "sold out" must not refuse a buyer once a seat was handed back."""
    event = tables.new_event("gig", capacity=2)
    allocator = tables.allocator()
    allocator.allocate(make_batch(event, [2]))
    tables.ddb.update_item(
        TableName=tables.inventory,
        Key={INVENTORY_PK: {"S": event}},
        UpdateExpression="SET sold = sold - :n",
        ExpressionAttributeValues={":n": {"N": "1"}},
    )

    outcome = allocator.allocate(make_batch(event, [1]))

    assert [d.status for d in outcome.decisions] == [OrderStatus.CONFIRMED]
    assert tables.sold(event) == 2


class CountingClient:
    """A DynamoDB client that counts calls and remembers the largest transaction."""

    def __init__(self, ddb: Any) -> None:
        self._ddb = ddb
        self.counts: dict[str, int] = {}
        self.largest_transaction = 0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._ddb, name)

        def call(**kwargs: Any) -> Any:
            self.counts[name] = self.counts.get(name, 0) + 1
            if name == "transact_write_items":
                self.largest_transaction = max(
                    self.largest_transaction, len(kwargs["TransactItems"])
                )
            return method(**kwargs)

        return call


class ThrottledTwice:
    """A DynamoDB client whose first two TransactWriteItems are throttled."""

    def __init__(self, ddb: Any) -> None:
        self._ddb = ddb
        self.throttled = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ddb, name)

    def transact_write_items(self, **kwargs: Any) -> Any:
        if self.throttled < 2:
            self.throttled += 1
            error = {"Error": {"Code": "ThrottlingException", "Message": "slow down"},
                     "ResponseMetadata": {"HTTPStatusCode": 400}}  # fmt: skip
            raise ClientError(error, "TransactWriteItems")
        return self._ddb.transact_write_items(**kwargs)


def test_allocator__waits_out_throttling_inside_the_task(
    tables: Tables, make_batch: MakeBatch
) -> None:
    """A failed task would let the event's later batches (received with it) overtake it."""
    event = tables.new_event("gig", capacity=2)
    throttled = ThrottledTwice(tables.ddb)

    outcome = tables.allocator(throttled).allocate(make_batch(event, [1, 1, 1]))

    assert throttled.throttled == 2
    assert outcome.summary() == {"confirmed": 2, "sold_out": 1, "rejected": 0, "duplicates": 0}
    assert tables.sold(event) == 2
