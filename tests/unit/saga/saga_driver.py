"""Drives purchase sagas in-process over moto: sells seats with sagas, reads the commands the
outbox holds and runs each step's work the way the worker's task would, with a fake payment
provider and, if given one, the real notifier. What the relay and Celery add (delivery,
redelivery) is simulated by calling ``deliver`` again."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from moto_tables import Tables

from flashsale.dynamo import from_item
from flashsale.messages import AcceptedRequest, PurchaseBatch, PurchaseRequest
from flashsale.names import OUTBOX_PK, OUTBOX_SK, Table
from flashsale.settings import get_settings
from notifications import Notifier, TransientNotificationError
from payments.client import Charge, Refund, RefundStatus
from payments.exceptions import ProviderUnavailable
from saga import Orchestrator, SagaState, SagaStatus, StepRegistry, StepResult
from tasks.notify import confirm_buyer
from tasks.payment import charge_buyer, refund_buyer
from tasks.purchase_saga import saga_data
from tasks.tickets import issue_ticket, release_seat

EVENT = "gig"


def request(n: int, quantity: int = 1, *, phone: bool = False) -> AcceptedRequest:
    """Buyer ``n``'s accepted request, with an e-mail address (and a phone, if asked)."""
    raw = PurchaseRequest(event_id=EVENT, buyer_id=f"b{n}", quantity=quantity, request_id=f"r{n}")
    return AcceptedRequest(
        order_id=raw.order_id, buyer_id=raw.buyer_id, request_id=raw.request_id,
        quantity=quantity, accepted_seq=n, accepted_at_ms=n, email=f"b{n}@example.com",
        phone=f"+1555{n:07d}" if phone else None,
    )  # fmt: skip


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeProvider:
    """Stripe-like: a key's first answer is final; a refund voids a key with no charge."""

    declined: set[str] = field(default_factory=set)
    failures: int = 0  # the next calls that raise ProviderUnavailable
    charges: dict[str, Charge] = field(default_factory=dict)
    refunds: dict[str, RefundStatus] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)

    def charge(self, *, key: str, amount: int, currency: str, description: str) -> Charge:
        self.calls.append(("charge", key))
        if self.failures:
            self.failures -= 1
            raise ProviderUnavailable("503")
        if key in self.refunds:
            return Charge(key, "", amount, currency, succeeded=False, decline_code="charge_voided")
        ok = key not in self.declined
        return self.charges.setdefault(
            key, Charge(key, f"ch_{key[:8]}", amount, currency, ok, None if ok else "card_declined")
        )

    def refund(self, *, key: str) -> Refund:
        self.calls.append(("refund", key))
        if self.failures:
            self.failures -= 1
            raise ProviderUnavailable("503")
        charge = self.charges.get(key)
        status = (
            RefundStatus.VOIDED
            if charge is None
            else RefundStatus.REFUNDED
            if charge.succeeded
            else RefundStatus.NOTHING_TO_REFUND
        )
        self.refunds.setdefault(key, status)
        return Refund(key=key, status=self.refunds[key])

    def captured(self) -> set[str]:
        return {k for k, c in self.charges.items() if c.succeeded and k not in self.refunds}


@dataclass
class Driver:
    tables: Tables
    orchestrator: Orchestrator
    provider: FakeProvider
    clock: Callable[[], float]
    ticket_fault_rate: float = 0.0
    confirm_failures: int = 0  # the next confirmations that fail
    notifier: Notifier | None = None  # the real one confirms (its mark commits with the saga)
    done: set[str] = field(default_factory=set)
    delivered: list[tuple[str, str]] = field(default_factory=list)  # (task, saga id)
    notified: list[tuple[str, str]] = field(default_factory=list)  # (kind, saga id)

    def sell(self, capacity: int, buyers: int, *, first: int = 1, phone: bool = False) -> list[str]:
        """An event (when ``first`` is 1), one batch of single-seat requests, allocated with
        sagas whose hold expires on the driver's clock; the order ids."""
        if first == 1:
            self.tables.new_event(EVENT, capacity)
        requests = [request(n, phone=phone) for n in range(first, first + buyers)]
        allocator = self.tables.allocator(sagas=True)
        allocator._start_saga = self._start_saga
        allocator.allocate(PurchaseBatch(event_id=EVENT, requests=requests))
        return [r.order_id for r in requests]

    def _start_saga(self, event_id: str, req: AcceptedRequest) -> list[dict[str, Any]]:
        data = saga_data(event_id, req, get_settings())
        return self.orchestrator.start_items(req.order_id, data, expires_at=self.clock() + 600)

    def status(self, order_id: str) -> SagaStatus:
        state = self.orchestrator.store.get(order_id)
        assert state is not None
        return state.status

    def pending(self) -> list[dict[str, Any]]:
        """Commands not yet delivered, the lowest sequence of each saga (relay order)."""
        items = self.tables.ddb.scan(TableName=self.tables.names[Table.OUTBOX])["Items"]
        records = sorted(
            (from_item(i) for i in items), key=lambda r: (r[OUTBOX_PK], int(r[OUTBOX_SK]))
        )
        heads: dict[str, dict[str, Any]] = {}
        for record in records:
            if record["event_id"] not in self.done:
                heads.setdefault(record[OUTBOX_PK], record)
        return list(heads.values())

    def deliver(self, record: dict[str, Any]) -> str:
        event = {"event_id": record["event_id"], "payload": json.loads(record["payload"])}
        self.delivered.append((record["task"], record[OUTBOX_PK]))
        outcome = self.run(record["task"], event)
        self.done.add(record["event_id"])
        return outcome

    def run_all(self, limit: int = 1000) -> None:
        for _ in range(limit):
            pending = self.pending()
            if not pending:
                return
            for record in pending:
                self.deliver(record)
        raise AssertionError("sagas did not settle")

    def __post_init__(self) -> None:
        """The steps' work, with the fakes, as the task modules register theirs."""
        names = self.tables.names
        steps = StepRegistry()
        steps.action("charge_payment", transient=(ProviderUnavailable,))(
            lambda s: charge_buyer(self.provider, s, now=self.clock())
        )
        steps.compensation("charge_payment", transient=(ProviderUnavailable,))(
            lambda s: refund_buyer(self.provider, s)
        )
        steps.action("issue_ticket")(
            lambda s: issue_ticket(
                s, orders_table=names[Table.ORDERS], fault_rate=self.ticket_fault_rate
            )
        )
        steps.compensation("reserve_seat")(
            lambda s: release_seat(
                s,
                orders_table=names[Table.ORDERS],
                inventory_table=names[Table.INVENTORY],
                now=self.clock(),
            )
        )
        steps.action("notify_buyer", transient=(TransientNotificationError,))(self._confirm)
        self.orchestrator.steps = steps

    def run(self, task: str, event: dict[str, Any]) -> str:
        if task == "tasks.notify.cancellation":
            self.notified.append(("cancellation", event["payload"]["saga_id"]))
            return "sent"
        return self.orchestrator.handle(event)

    def _confirm(self, state: SagaState) -> StepResult:
        if self.confirm_failures:
            self.confirm_failures -= 1
            raise RuntimeError("SES is down")
        self.notified.append(("confirmation", state.saga_id))
        return StepResult() if self.notifier is None else confirm_buyer(self.notifier, state)
