"""Ticket steps of the purchase saga: issue the ticket (the pivot), release a held seat.

Both write only our own tables, so their writes join the saga's transition: the ticket and
the saga's move past the pivot commit together, as do a released seat and the saga's move to
the next compensation.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from typing import Any

from flashsale.dynamo import to_item
from flashsale.messages import Fulfilment
from flashsale.names import INVENTORY_PK, ORDERS_PK
from flashsale.settings import get_settings
from saga import SagaState, StepFailed, StepResult
from tasks.app import app
from tasks.exceptions import OrderNotHeld
from tasks.purchase_saga import STEPS, orchestrator

_TICKET_NAMESPACE = uuid.UUID("9d7b2a53-6a0e-4f3c-b1f8-3c2d5e8a7f10")


def in_sample(key: str, rate: float) -> bool:
    """Whether ``key`` falls in a ``rate`` fraction of keys: the same answer every time, so a
    fault drill is reproducible and a retry of the same order fails the same way."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < rate


def _held_order_update(
    orders_table: str, order_id: str, new: Fulfilment, extra: dict[str, Any]
) -> tuple[dict[str, Any], Callable[[], Exception]]:
    """Move a held order to ``new`` (setting ``extra`` too), only if it is still held."""
    names = {"#f": "fulfilment"} | {f"#{k}": k for k in extra}
    values = {":new": {"S": new.value}, ":held": {"S": Fulfilment.HELD.value}} | {
        f":{k}": v for k, v in to_item(extra).items()
    }
    sets = ", ".join(["#f = :new", *(f"#{k} = :{k}" for k in extra)])
    entry = {
        "Update": {
            "TableName": orders_table,
            "Key": {ORDERS_PK: {"S": order_id}},
            "UpdateExpression": f"SET {sets}",
            "ConditionExpression": "#f = :held",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
    }
    return entry, lambda: OrderNotHeld(order_id)


def issue_ticket(state: SagaState, *, orders_table: str, fault_rate: float) -> StepResult:
    """The ticket code is derived from the order, so issuing twice gives the same ticket."""
    if in_sample(state.saga_id, fault_rate):
        raise StepFailed("ticketing refused the order (fault drill)")
    code = uuid.uuid5(_TICKET_NAMESPACE, state.saga_id).hex[:12].upper()
    write = _held_order_update(
        orders_table, state.saga_id, Fulfilment.TICKETED, {"ticket_code": code}
    )
    return StepResult(data={"ticket_code": code}, writes=[write])


def release_seat(
    state: SagaState, *, orders_table: str, inventory_table: str, now: float
) -> StepResult:
    """Hand the held seats back to the event's inventory and mark the order released (when:
    a later buyer may now get the seat, which the sale's first-come check must know)."""
    quantity = int(str(state.data["quantity"]))
    event_id = str(state.data["event_id"])
    order = _held_order_update(
        orders_table,
        state.saga_id,
        Fulfilment.RELEASED,
        {"reason": state.reason or "undone", "released_at_ms": int(now * 1000)},
    )
    seats = {
        "Update": {
            "TableName": inventory_table,
            "Key": {INVENTORY_PK: {"S": event_id}},
            "UpdateExpression": "SET #sold = #sold - :q",
            "ConditionExpression": "#sold >= :q",
            "ExpressionAttributeNames": {"#sold": "sold"},
            "ExpressionAttributeValues": {":q": {"N": str(quantity)}},
        }
    }
    return StepResult(writes=[order, (seats, None)])


@STEPS.action("issue_ticket")
def issue_step(state: SagaState) -> StepResult:
    settings = get_settings()
    return issue_ticket(
        state, orders_table=settings.orders_table, fault_rate=settings.ticket_fault_rate
    )


@STEPS.compensation("reserve_seat")
def release_step(state: SagaState) -> StepResult:
    settings = get_settings()
    return release_seat(
        state,
        orders_table=settings.orders_table,
        inventory_table=settings.inventory_table,
        now=time.time(),
    )


@app.task(name="tasks.tickets.issue", acks_late=True)
def issue(event: dict[str, Any]) -> str:
    return orchestrator().handle(event)


@app.task(name="tasks.tickets.release_seat", acks_late=True)
def release(event: dict[str, Any]) -> str:
    return orchestrator().handle(event)
