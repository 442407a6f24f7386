"""Payment steps of the purchase saga: charge the buyer, refund (or void) the charge.

The idempotency key of both calls is the order id, so a redelivered command, a retry after a
timeout, or a worker killed after the provider charged all lead to one charge at most: the
provider answers a repeated key with its first result. The refund voids a key that has no
charge yet, so a compensation that races a charge still in flight cannot leave money taken.
"""

from __future__ import annotations

import time
from typing import Any

from payments.client import PaymentProvider, provider_from_settings
from payments.exceptions import ProviderUnavailable
from saga import SagaState, StepFailed, StepResult
from tasks.app import app
from tasks.purchase_saga import STEPS, orchestrator


def charge_buyer(provider: PaymentProvider, state: SagaState, *, now: float) -> StepResult:
    """Charge the order's amount; a decline is a business failure, a hold that expired too."""
    if state.expires_at is not None and now >= state.expires_at:
        # An earlier attempt may have charged before the hold ran out: compensate this step too.
        raise StepFailed("the seat hold expired before payment", certain=False)
    data = state.data
    charge = provider.charge(
        key=state.saga_id,
        amount=int(str(data["amount_cents"])),
        currency=str(data["currency"]),
        description=f"{data['quantity']} ticket(s) for {data['event_id']}",
    )
    if not charge.succeeded:
        raise StepFailed(f"payment declined: {charge.decline_code}")
    return StepResult(data={"charge_id": charge.charge_id})


def refund_buyer(provider: PaymentProvider, state: SagaState) -> StepResult:
    """Refund the order's charge, or void its key if there is none (yet)."""
    refund = provider.refund(key=state.saga_id)
    return StepResult(data={"refund": refund.status.value})


@STEPS.action("charge_payment", transient=(ProviderUnavailable,))
def charge_step(state: SagaState) -> StepResult:
    return charge_buyer(provider_from_settings(), state, now=time.time())


@STEPS.compensation("charge_payment", transient=(ProviderUnavailable,))
def refund_step(state: SagaState) -> StepResult:
    return refund_buyer(provider_from_settings(), state)


@app.task(name="tasks.payment.charge", acks_late=True)
def charge(event: dict[str, Any]) -> str:
    return orchestrator().handle(event)


@app.task(name="tasks.payment.refund", acks_late=True)
def refund(event: dict[str, Any]) -> str:
    return orchestrator().handle(event)
