"""Message schemas: what crosses a queue is validated on both sides.

A purchase request is validated at the intake (clear error, never enqueued) and again by the
worker (a message that fails validation there was not produced by our intake: it is rejected
and reaches the dead-letter queue through the redrive policy, where it can be inspected).
"""

from __future__ import annotations

import hashlib
import uuid
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# Identifiers are printable and short: they become DynamoDB keys and SQS dedup ids.
Identifier = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
    ),
]

# Where the buyer is told about the purchase; loose on purpose (SES and SNS are the judges of
# deliverability), strict enough to refuse garbage at the edge.
Email = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")
]
Phone = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^\+[1-9][0-9]{6,14}$")]

_ORDER_NAMESPACE = uuid.UUID("5b0f3d4e-8e0f-4b55-9d6e-2a4f1f3c9a10")


class OrderStatus(StrEnum):
    """The seat decision of a purchase request, made once, in acceptance order."""

    CONFIRMED = "confirmed"
    SOLD_OUT = "sold_out"
    REJECTED = "rejected"


class Fulfilment(StrEnum):
    """What became of a confirmed seat: the purchase saga moves it from HELD to one of the
    others (``tasks.purchase_saga``)."""

    HELD = "held"  # the seat is the buyer's while the saga charges and tickets
    TICKETED = "ticketed"  # paid, ticket issued: the purchase stands
    RELEASED = "released"  # undone (declined, expired, ticketing failed): seat back on sale


class PurchaseRequest(BaseModel):
    """What a buyer sends. ``request_id`` makes retries and double clicks safe."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Identifier
    buyer_id: Identifier
    quantity: int = Field(ge=1, le=100, strict=True)  # "3", 3.0 or true is not a quantity
    request_id: Identifier
    email: Email | None = None
    phone: Phone | None = None

    @property
    def order_id(self) -> str:
        """Deterministic per (event, buyer, request id): one request is only ever one order.

        Scoped by buyer and event, as payment providers scope idempotency keys per account, so
        two buyers who happen to pick the same request id do not collide.
        """
        key = f"{self.event_id}\x00{self.buyer_id}\x00{self.request_id}"
        return str(uuid.uuid5(_ORDER_NAMESPACE, key))


class AcceptedRequest(BaseModel):
    """A request the intake accepted: ``accepted_seq`` orders buyers first come, first served."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    order_id: str = Field(min_length=36, max_length=36)
    buyer_id: Identifier
    request_id: Identifier
    quantity: int = Field(ge=1, le=100)
    accepted_seq: int = Field(ge=0)
    accepted_at_ms: int = Field(ge=0)
    email: Email | None = None
    phone: Phone | None = None


class PurchaseBatch(BaseModel):
    """Requests for one event, in acceptance order, carried by one SQS message.

    One message and one DynamoDB transaction per batch is what lets a single FIFO message
    group (one hot event, strictly ordered) keep up with a spike.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Identifier
    requests: list[AcceptedRequest] = Field(min_length=1, max_length=32)

    @property
    def batch_id(self) -> str:
        """Deterministic, so a resent batch is deduplicated by the FIFO queue."""
        digest = hashlib.sha256("\n".join(r.order_id for r in self.requests).encode())
        return digest.hexdigest()[:64]
