"""``decide``: the pure rule that turns requests in line and seats left into decisions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from bench.ledger import fcfs_inversions
from flashsale.messages import AcceptedRequest, OrderStatus
from tasks.allocation import Decision, decide

MakeRequest = Callable[..., AcceptedRequest]

MAX = 8


def inventory(capacity: int, sold: int = 0) -> dict[str, Any]:
    return {"event_id": "gig", "capacity": capacity, "sold": sold}


def statuses(decisions: list[Decision]) -> list[OrderStatus]:
    return [d.status for d in decisions]


def as_orders(decisions: list[Decision]) -> list[dict[str, object]]:
    """Decisions as the ledger reads them back from the orders table."""
    return [
        {"accepted_seq": d.request.accepted_seq, "quantity": d.request.quantity,
         "status": d.status.value}
        for d in decisions
    ]  # fmt: skip


def test_decide__confirms_in_order_until_seats_run_out(make_request: MakeRequest) -> None:
    requests = [make_request(q) for q in (2, 1, 2, 1)]

    decisions = decide(requests, inventory(capacity=5, sold=0), MAX)

    assert [d.request for d in decisions] == requests
    assert statuses(decisions) == [
        OrderStatus.CONFIRMED, OrderStatus.CONFIRMED, OrderStatus.CONFIRMED, OrderStatus.SOLD_OUT,
    ]  # fmt: skip


def test_decide__counts_seats_already_sold(make_request: MakeRequest) -> None:
    decisions = decide([make_request(1), make_request(1)], inventory(capacity=10, sold=9), MAX)

    assert statuses(decisions) == [OrderStatus.CONFIRMED, OrderStatus.SOLD_OUT]


def test_decide__sells_out_everyone_once_no_seat_is_left(make_request: MakeRequest) -> None:
    decisions = decide([make_request(1) for _ in range(3)], inventory(capacity=4, sold=4), MAX)

    assert statuses(decisions) == [OrderStatus.SOLD_OUT] * 3


def test_decide__a_later_smaller_request_can_still_fit(make_request: MakeRequest) -> None:
    decisions = decide([make_request(2), make_request(1)], inventory(capacity=1), MAX)

    assert statuses(decisions) == [OrderStatus.SOLD_OUT, OrderStatus.CONFIRMED]
    assert fcfs_inversions(as_orders(decisions)) == 0


def test_decide__rejects_more_than_the_per_request_limit_without_spending_seats(
    make_request: MakeRequest,
) -> None:
    decisions = decide([make_request(MAX + 1), make_request(MAX)], inventory(capacity=MAX), MAX)

    assert statuses(decisions) == [OrderStatus.REJECTED, OrderStatus.CONFIRMED]
    assert decisions[0].reason == f"more than {MAX} tickets"


def test_decide__rejects_every_request_for_an_unknown_event(make_request: MakeRequest) -> None:
    decisions = decide([make_request(1), make_request(2)], None, MAX)

    assert statuses(decisions) == [OrderStatus.REJECTED] * 2
    assert {d.reason for d in decisions} == {"unknown event"}


def test_decide__an_empty_line_decides_nothing() -> None:
    assert decide([], inventory(capacity=3), MAX) == []


def _requests(quantities: list[int]) -> list[AcceptedRequest]:
    return [
        AcceptedRequest(
            order_id=f"{n:036d}", buyer_id=f"b{n}", request_id=f"r{n}", quantity=q,
            accepted_seq=n, accepted_at_ms=n,
        )
        for n, q in enumerate(quantities)
    ]  # fmt: skip


@given(
    quantities=st.lists(st.integers(min_value=1, max_value=12), max_size=60),
    capacity=st.integers(min_value=0, max_value=80),
    sold_share=st.floats(min_value=0, max_value=1),
)
def test_decide__never_confirms_more_seats_than_left_nor_lets_anyone_jump_the_line(
    quantities: list[int], capacity: int, sold_share: float
) -> None:
    sold = int(capacity * sold_share)
    requests = _requests(quantities)

    decisions = decide(requests, inventory(capacity, sold), MAX)

    assert [d.request for d in decisions] == requests
    confirmed = [d for d in decisions if d.status is OrderStatus.CONFIRMED]
    assert sum(d.request.quantity for d in confirmed) <= capacity - sold
    assert fcfs_inversions(as_orders(decisions)) == 0
    assert all(d.status is OrderStatus.REJECTED for d in decisions if d.request.quantity > MAX)
    # Greedy: whoever is refused for lack of seats really did not fit at their turn.
    left = capacity - sold
    for d in decisions:
        if d.status is OrderStatus.CONFIRMED:
            left -= d.request.quantity
        elif d.status is OrderStatus.SOLD_OUT:
            assert d.request.quantity > left
