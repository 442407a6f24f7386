"""``bench.ledger``: the invariants a sale is judged by, over orders as the table returns them."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from bench.ledger import fcfs_inversions, percentile, read_ledger
from flashsale.messages import OrderStatus

Order = dict[str, Any]


@pytest.fixture
def order() -> Callable[..., Order]:
    """``order(status, quantity)``: the next order in line, as read back from DynamoDB."""
    seq = iter(range(1, 10_000))

    def make(status: str, quantity: int = 1, *, latency_ms: int = 10) -> Order:
        n = next(seq)
        return {"order_id": f"o-{n}", "status": status, "quantity": quantity,
                "accepted_seq": n, "accepted_at_ms": 1000 * n,
                "decided_at_ms": 1000 * n + latency_ms}  # fmt: skip

    return make


def test_fcfs_inversions__none_in_an_empty_sale() -> None:
    assert fcfs_inversions([]) == 0


def test_fcfs_inversions__a_later_smaller_request_may_take_what_is_left(
    order: Callable[..., Order],
) -> None:
    assert fcfs_inversions([order("sold_out", 2), order("confirmed", 1)]) == 0


@pytest.mark.parametrize("later_quantity", [2, 3])
def test_fcfs_inversions__counts_a_later_request_for_as_much_or_more_that_got_seats(
    order: Callable[..., Order], later_quantity: int
) -> None:
    assert fcfs_inversions([order("sold_out", 2), order("confirmed", later_quantity)]) == 1


def test_fcfs_inversions__counts_each_request_that_jumped_the_line(
    order: Callable[..., Order],
) -> None:
    orders = [order("confirmed", 4), order("sold_out", 3), order("confirmed", 1),
              order("confirmed", 3), order("sold_out", 1), order("confirmed", 1)]  # fmt: skip

    assert fcfs_inversions(orders) == 2


def test_fcfs_inversions__follows_the_place_in_line_not_the_list_order(
    order: Callable[..., Order],
) -> None:
    refused, confirmed = order("sold_out", 1), order("confirmed", 1)

    assert fcfs_inversions([confirmed, refused]) == 1
    assert fcfs_inversions([order("confirmed", 1), order("sold_out", 1)]) == 0


def test_fcfs_inversions__ignores_rejected_requests(order: Callable[..., Order]) -> None:
    assert fcfs_inversions([order("rejected", 1), order("confirmed", 1)]) == 0


def test_fcfs_inversions__reads_enum_statuses_as_well_as_strings(
    order: Callable[..., Order],
) -> None:
    orders = [order(OrderStatus.SOLD_OUT, 1), order(OrderStatus.CONFIRMED, 1)]

    assert fcfs_inversions(orders) == 1


@pytest.mark.parametrize(
    ("values", "pct", "expected"),
    [
        ([], 50, 0.0),
        ([7.0], 99, 7.0),
        ([float(v) for v in range(100, 0, -1)], 50, 50.0),
        ([float(v) for v in range(1, 101)], 99, 99.0),
        ([float(v) for v in range(1, 101)], 100, 100.0),
        ([3.0, 1.0, 2.0], 0, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
        ([1.0, 2.0, 3.0, 4.0], 51, 3.0),
    ],
)
def test_percentile__is_the_nearest_rank(values: list[float], pct: float, expected: float) -> None:
    assert percentile(values, pct) == expected


def test_read_ledger__counts_decisions_seats_and_latency(order: Callable[..., Order]) -> None:
    orders = [
        order("confirmed", 2, latency_ms=5),
        order("sold_out", 3, latency_ms=7),
        order("confirmed", 1, latency_ms=9),
        order("rejected", 9, latency_ms=100),
    ]

    ledger = read_ledger({"capacity": 3, "sold": 3}, orders)

    assert (ledger.confirmed, ledger.sold_out, ledger.rejected, ledger.decided) == (2, 1, 1, 4)
    assert (ledger.capacity, ledger.sold_counter, ledger.seats_confirmed) == (3, 3, 3)
    assert ledger.oversold == 0
    assert ledger.fcfs_inversions == 0
    assert (ledger.p50_latency_ms, ledger.p99_latency_ms) == (7.0, 100.0)
    assert (ledger.first_accepted_ms, ledger.last_decided_ms) == (1000, 4100)


def test_read_ledger__reports_a_counter_above_capacity_as_oversold() -> None:
    assert read_ledger({"capacity": 10, "sold": 12}, []).oversold == 2


def test_read_ledger__reports_confirmed_seats_above_capacity_as_oversold(
    order: Callable[..., Order],
) -> None:
    orders = [order("confirmed", 3), order("confirmed", 3)]

    assert read_ledger({"capacity": 5, "sold": 5}, orders).oversold == 1


def test_read_ledger__of_a_sale_nobody_came_to() -> None:
    ledger = read_ledger({"capacity": 5, "sold": 0}, [])

    assert (ledger.decided, ledger.oversold, ledger.fcfs_inversions) == (0, 0, 0)
    assert (ledger.p50_latency_ms, ledger.first_accepted_ms, ledger.last_decided_ms) == (0, 0, 0)


def test_read_ledger__accepts_numbers_as_dynamodb_returns_them(order: Callable[..., Order]) -> None:
    ledger = read_ledger({"capacity": Decimal(4), "sold": Decimal(2)}, [order("confirmed", 2)])

    assert (ledger.capacity, ledger.sold_counter, ledger.seats_confirmed) == (4, 2, 2)
