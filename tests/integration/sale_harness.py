"""One test's view of the running purchase pipeline, shared by the modules that run sales.

Put events on sale, fire buyers through the intake, read the decided orders back exactly.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from polling import wait_until

from bench.ledger import Ledger, read_ledger
from flashsale.names import QueueRole
from flashsale.settings import Settings
from infra.local.fleet import Fleet
from tasks.intake import Intake
from tasks.inventory import create_event, event_orders, get_inventory
from tasks.loadgen import fire
from tasks.operator import queue_depth

PURCHASES = QueueRole.PURCHASES.celery_queue


@dataclass
class Sale:
    """One test's view of the running pipeline: put events on sale, fire buyers, read back."""

    fleet: Fleet
    settings: Settings
    clients: dict[str, Any]
    intake: Intake

    @property
    def sqs(self) -> Any:
        return self.clients["sqs"]

    def new_event(self, seats: int) -> str:
        event_id = f"it-{uuid.uuid4().hex[:12]}"
        create_event(self.clients["dynamodb"], self.settings.inventory_table, event_id, seats)
        return event_id

    def fire(self, requests: list[dict[str, Any]]) -> int:
        """Send buyers through the intake; returns how many distinct orders it accepted."""
        return len(fire(self.intake, requests, None).accepted)

    def orders(self, event_id: str) -> list[dict[str, Any]]:
        return event_orders(self.clients["dynamodb"], self.settings.orders_table, event_id)

    def decided(self, event_id: str, expected: int, timeout: float) -> list[dict[str, Any]]:
        """The event's orders once ``expected`` of them are decided."""
        found: list[dict[str, Any]] = []

        def enough() -> bool:
            found[:] = self.orders(event_id)
            return len(found) >= expected

        wait_until(
            enough,
            timeout,
            f"{expected} decided orders of {event_id}",
            explain=lambda: f"{len(found)} found; {self.purchase_queues()}",
        )
        return found

    def purchase_queues(self) -> str:
        """The purchase queue's and its DLQ's counts: where undecided requests can be."""
        depths = {
            "queue": queue_depth(self.sqs, self.settings.purchases_queue_url),
            "dlq": queue_depth(self.sqs, self.settings.dlq_url(QueueRole.PURCHASES)),
        }
        return "; ".join(
            f"{label}: {d.visible} visible, {d.in_flight} in flight" for label, d in depths.items()
        )

    def ledger(self, event_id: str, orders: list[dict[str, Any]]) -> Ledger:
        inventory = get_inventory(self.clients["dynamodb"], self.settings.inventory_table, event_id)
        return read_ledger(inventory or {}, orders)

    def queue_drained(self) -> bool:
        return queue_depth(self.sqs, self.settings.purchases_queue_url).total == 0


@contextmanager
def open_sale(fleet: Fleet, settings: Settings, clients: dict[str, Any]) -> Iterator[Sale]:
    """A ``Sale`` with an intake configured as the service's; the intake is closed after."""
    intake = Intake(
        clients["sqs"],
        settings.purchases_queue_url,
        batch_size=settings.purchase_batch_size,
        linger_ms=settings.intake_linger_ms,
        max_per_request=settings.max_tickets_per_request,
    )
    try:
        yield Sale(fleet, settings, clients, intake)
    finally:
        intake.close()


def single_seat_burst(event_id: str, count: int) -> list[dict[str, Any]]:
    return [
        {"event_id": event_id, "buyer_id": f"b{n}", "quantity": 1, "request_id": f"r{n}"}
        for n in range(count)
    ]
