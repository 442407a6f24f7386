"""What a sale decided, checked against the invariants: pure functions over the orders table.

Exact counts, not queue counters: every accepted request must have exactly one decided order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flashsale.messages import Fulfilment, OrderStatus


def fcfs_inversions(orders: Iterable[Mapping[str, Any]]) -> int:
    """Confirmed orders that jumped the line.

    An inversion is a confirmed request accepted after a sold-out one that asked for no more
    seats than it did: whoever came first and wanted at most as much must not lose out. A seat
    released in between (a declined payment, an expired hold) is back on sale for whoever
    comes next, so a release (``released_at_ms``) starts the comparison afresh.
    """
    ordered = sorted(orders, key=lambda o: o["accepted_seq"])
    releases = sorted(int(o["released_at_ms"]) for o in ordered if "released_at_ms" in o)
    smallest_refused = math.inf
    inversions = 0
    next_release = 0
    for order in ordered:
        while next_release < len(releases) and releases[next_release] <= order["decided_at_ms"]:
            smallest_refused = math.inf
            next_release += 1
        if order["status"] == OrderStatus.SOLD_OUT:
            smallest_refused = min(smallest_refused, order["quantity"])
        elif order["status"] == OrderStatus.CONFIRMED and order["quantity"] >= smallest_refused:
            inversions += 1
    return inversions


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Ledger:
    capacity: int
    sold_counter: int
    confirmed: int
    sold_out: int
    rejected: int
    seats_confirmed: int
    seats_released: int
    fcfs_inversions: int
    p50_latency_ms: float
    p99_latency_ms: float
    first_accepted_ms: int
    last_decided_ms: int

    @property
    def decided(self) -> int:
        return self.confirmed + self.sold_out + self.rejected

    @property
    def seats_taken(self) -> int:
        """Seats confirmed and not released: what the counter must say."""
        return self.seats_confirmed - self.seats_released

    @property
    def oversold(self) -> int:
        return max(0, self.sold_counter - self.capacity, self.seats_taken - self.capacity)


def read_ledger(inventory: Mapping[str, Any], orders: Sequence[Mapping[str, Any]]) -> Ledger:
    """Summarise an event's inventory row and its decided orders."""
    by_status = {status: [o for o in orders if o["status"] == status] for status in OrderStatus}
    latencies = [float(o["decided_at_ms"] - o["accepted_at_ms"]) for o in orders]
    return Ledger(
        capacity=int(inventory["capacity"]),
        sold_counter=int(inventory["sold"]),
        confirmed=len(by_status[OrderStatus.CONFIRMED]),
        sold_out=len(by_status[OrderStatus.SOLD_OUT]),
        rejected=len(by_status[OrderStatus.REJECTED]),
        seats_confirmed=sum(int(o["quantity"]) for o in by_status[OrderStatus.CONFIRMED]),
        seats_released=sum(
            int(o["quantity"]) for o in orders if o.get("fulfilment") == Fulfilment.RELEASED
        ),
        fcfs_inversions=fcfs_inversions(orders),
        p50_latency_ms=percentile(latencies, 50),
        p99_latency_ms=percentile(latencies, 99),
        first_accepted_ms=min((int(o["accepted_at_ms"]) for o in orders), default=0),
        last_decided_ms=max((int(o["decided_at_ms"]) for o in orders), default=0),
    )
