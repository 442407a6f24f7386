"""What the intake answers, as pydantic models: one source for the JSON sent and the OpenAPI
document published (``intake.openapi``), so the contract cannot drift from the code.

The request body is ``flashsale.messages.PurchaseRequest`` itself: the intake and the worker
validate the same schema.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from flashsale.messages import Fulfilment, OrderStatus
from saga.state import SagaStatus


class _Answer(BaseModel):
    model_config = ConfigDict(frozen=True)


class PurchaseAccepted(_Answer):
    """202: the request is on the purchases queue; its seat decision comes later, in order."""

    order_id: str = Field(description="uuid5(event, buyer, request id): a retry gets the same id")
    event_id: str
    status: Literal["accepted"] = "accepted"
    status_url: str = Field(description="GET it for the decision (also in Location)")


class PurchaseSoldOut(_Answer):
    """200: the event is sold out; answered at the edge, nothing was enqueued.

    If this request id had been accepted before the event sold out, its order stands: its
    decision is at ``status_url``.
    """

    order_id: str
    event_id: str
    status: Literal["sold_out"] = "sold_out"
    status_url: str
    detail: str


class EventView(_Answer):
    """200: whether an event has seats left, as the intake sees it (at most the sold-out TTL
    old). A sale page can poll this instead of posting purchases that cannot succeed."""

    event_id: str
    status: Literal["on_sale", "sold_out"]


class SagaView(_Answer):
    """Where the order's purchase saga (payment, ticket, notification) is."""

    status: SagaStatus
    reason: str = ""


class OrderView(_Answer):
    """200: the order's seat decision, what became of the seat, and its saga."""

    order_id: str
    event_id: str
    status: OrderStatus
    quantity: int
    fulfilment: Fulfilment | None = None
    reason: str = ""
    accepted_at_ms: int | None = None
    decided_at_ms: int | None = None
    saga: SagaView | None = None


class OrderPending(_Answer):
    """202: no decision for this order id yet (still queued, or never accepted: the intake keeps
    no per-request state, so it cannot tell the two apart)."""

    order_id: str
    status: Literal["pending"] = "pending"


class FieldError(_Answer):
    field: str = Field(description="dotted path of the bad field; 'request' for the whole body")
    message: str


class Problem(_Answer):
    """Any error: what went wrong, and for invalid input every bad field."""

    detail: str
    reason: str = Field(default="", description="a machine-readable cause, e.g. backlog")
    errors: list[FieldError] = Field(default_factory=list)


class Health(_Answer):
    status: Literal["ok"] = "ok"


class Ready(_Answer):
    """Whether this process can do its work: reach SQS and DynamoDB."""

    ready: bool
    sqs: bool
    dynamodb: bool


class Stats(_Answer):
    """This process's counters since it started (for operators and the benchmark)."""

    accepted: int = Field(description="202 answers")
    sold_out_at_edge: int = Field(description="200 sold_out answers: never enqueued")
    unknown_event: int
    invalid: int
    overloaded: dict[str, int] = Field(description="503 answers by reason")
    repeats: int = Field(description="202 answers to a request already queued: not queued again")
    buffered: int = Field(description="accepted, not yet on the queue")
    requests_sent: int = Field(description="requests that reached the queue")
    messages_sent: int
    backlog: int | None = Field(description="purchase messages on the queue at the last poll")
    peak_backlog: int | None
    in_flight: int
    peak_in_flight: int
