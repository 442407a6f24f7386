"""The purchase saga: hold a seat, charge the buyer, issue the ticket, tell the buyer.

==============  =============  =====================  ===========================
step            kind           action                 compensation
==============  =============  =====================  ===========================
reserve_seat    compensatable  (the allocation)       tasks.tickets.release_seat
charge_payment  compensatable  tasks.payment.charge   tasks.payment.refund
issue_ticket    pivot          tasks.tickets.issue    —
notify_buyer    retriable      tasks.notify.confirm   —
==============  =============  =====================  ===========================

The seat hold is written by the allocation itself, in the transaction that creates the saga, so
a confirmed seat and its saga exist together or not at all. Undone sagas tell the buyer with a
low-priority cancellation notice (``tasks.notify.cancellation``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cache
from typing import Any

from pydantic import JsonValue

from flashsale import aws
from flashsale.drills import CrashDrill
from flashsale.messages import AcceptedRequest
from flashsale.names import QueueRole
from flashsale.settings import Settings, get_settings
from saga import (
    Orchestrator,
    RetryPolicy,
    SagaDefinition,
    SagaStore,
    Step,
    StepKind,
    StepRegistry,
    TaskRef,
)

# The steps' work, registered by the task modules that do it (tasks.payment, tasks.tickets,
# tasks.notify); a worker runs what its imported modules registered.
STEPS = StepRegistry()


def purchase_definition(step_timeout_seconds: float) -> SagaDefinition:
    return SagaDefinition(
        name="purchase",
        steps=(
            Step(
                "reserve_seat",
                StepKind.COMPENSATABLE,
                action=None,
                compensation=TaskRef("tasks.tickets.release_seat", QueueRole.TICKETS),
                timeout_seconds=step_timeout_seconds,
            ),
            Step(
                "charge_payment",
                StepKind.COMPENSATABLE,
                action=TaskRef("tasks.payment.charge", QueueRole.PAYMENTS),
                compensation=TaskRef("tasks.payment.refund", QueueRole.PAYMENTS),
                timeout_seconds=step_timeout_seconds,
            ),
            Step(
                "issue_ticket",
                StepKind.PIVOT,
                action=TaskRef("tasks.tickets.issue", QueueRole.TICKETS),
                timeout_seconds=step_timeout_seconds,
            ),
            Step(
                "notify_buyer",
                StepKind.RETRIABLE,
                action=TaskRef("tasks.notify.confirmation", QueueRole.NOTIFICATIONS),
                timeout_seconds=step_timeout_seconds,
            ),
        ),
        on_compensated=TaskRef("tasks.notify.cancellation", QueueRole.NOTIFICATIONS_LOW),
    )


def build_orchestrator(
    dynamodb: Any, settings: Settings, steps: StepRegistry = STEPS
) -> Orchestrator:
    return Orchestrator(
        purchase_definition(settings.saga_step_timeout_seconds),
        SagaStore(dynamodb, table=settings.sagas_table, shards=settings.saga_shards),
        steps=steps,
        outbox_table=settings.outbox_table,
        outbox_shards=settings.outbox_shards,
        policy=RetryPolicy(
            attempts=settings.saga_step_attempts,
            backoff_seconds=settings.saga_backoff_seconds,
            cap_seconds=settings.saga_backoff_cap_seconds,
        ),
        drill=CrashDrill.parse(settings.saga_crash_at, settings.saga_crash_probability),
    )


@cache
def orchestrator() -> Orchestrator:
    """This process's purchase-saga orchestrator."""
    return build_orchestrator(aws.client("dynamodb"), get_settings())


def orchestrators() -> dict[str, Orchestrator]:
    """Every saga this application runs, by name (``python -m saga`` loads this)."""
    purchase = orchestrator()
    return {purchase.definition.name: purchase}


def saga_data(event_id: str, request: AcceptedRequest, settings: Settings) -> dict[str, JsonValue]:
    """What the saga's steps need to know about the order."""
    return {
        "order_id": request.order_id,
        "event_id": event_id,
        "buyer_id": request.buyer_id,
        "quantity": request.quantity,
        "amount_cents": request.quantity * settings.ticket_price_cents,
        "currency": settings.currency,
        "email": request.email,
        "phone": request.phone,
    }


SagaStarter = Callable[[str, AcceptedRequest], list[dict[str, Any]]]


def saga_starter(purchase: Orchestrator, settings: Settings) -> SagaStarter:
    """For the allocator: the entries that start a confirmed seat's saga in the allocation's
    own transaction. The hold expires ``hold_seconds`` after the seat was decided."""

    def start(event_id: str, request: AcceptedRequest) -> list[dict[str, Any]]:
        return purchase.start_items(
            request.order_id,
            saga_data(event_id, request, settings),
            expires_at=time.time() + settings.hold_seconds,
        )

    return start
