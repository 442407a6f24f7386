"""A whole sale through ``SeatAllocator``: random batches and redeliveries, moto's DynamoDB."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto_tables import Tables

from bench.ledger import read_ledger
from flashsale.messages import AcceptedRequest, PurchaseBatch, PurchaseRequest

# A sale: batches of quantities, and which earlier batch (if any) is redelivered after each.
# Kept small: moto deep-copies a table once per item of every transaction that names it.
sales = st.lists(
    st.tuples(
        st.lists(st.integers(min_value=1, max_value=10), min_size=1, max_size=6),
        st.one_of(st.none(), st.integers(min_value=0)),
    ),
    min_size=1,
    max_size=5,
)

_sale_numbers = itertools.count()


def accepted(event_id: str, seq: int, quantity: int) -> AcceptedRequest:
    buyer, request = f"buyer-{seq}", f"req-{seq}"
    order_id = PurchaseRequest(
        event_id=event_id, buyer_id=buyer, quantity=quantity, request_id=request
    ).order_id
    return AcceptedRequest(
        order_id=order_id, buyer_id=buyer, request_id=request, quantity=quantity,
        accepted_seq=seq, accepted_at_ms=seq,
    )  # fmt: skip


@settings(
    max_examples=25,
    deadline=None,
    # One moto mock for all examples (starting it is slow); each example gets tables of its own,
    # so no example's transactions copy another example's orders.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(capacity=st.integers(min_value=0, max_value=40), sale=sales)
def test_sale__every_request_decided_once_never_oversold_nobody_jumps_the_line(
    tables: Tables, capacity: int, sale: list[tuple[list[int], int | None]]
) -> None:
    tables = tables.fresh(f"sale{next(_sale_numbers)}")
    event = tables.new_event("gig", capacity)
    allocator = tables.allocator()
    sent: list[PurchaseBatch] = []
    seq = itertools.count(1)
    for quantities, redeliver in sale:
        sent.append(
            PurchaseBatch(event_id=event, requests=[accepted(event, next(seq), q)
                                                     for q in quantities])
        )  # fmt: skip
        allocator.allocate(sent[-1])
        if redeliver is not None:
            assert allocator.allocate(sent[redeliver % len(sent)]).decisions == []

    orders = tables.orders_of(event)
    ledger = read_ledger(tables.inventory_of(event), orders)

    every_request = sorted(r.order_id for batch in sent for r in batch.requests)
    assert sorted(o["order_id"] for o in orders) == every_request
    assert ledger.oversold == 0
    assert ledger.sold_counter == ledger.seats_confirmed <= capacity
    assert ledger.fcfs_inversions == 0
