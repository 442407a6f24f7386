"""Outbox records: what an event is, where it goes, and how it is stored.

A record is validated when it is made and checked against the limits of everything it will
pass through when it is written (``put_item``): its Celery message must fit in one SQS message
and its item in DynamoDB's 400 KB, so a record that could never be delivered is refused in the
caller's transaction, with a clear error, instead of being parked later.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cached_property
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints, model_validator

from flashsale.dynamo import from_item, to_item
from flashsale.messages import Identifier
from flashsale.names import (
    OUTBOX_CREATED_AT,
    OUTBOX_PENDING_SHARD,
    OUTBOX_PK,
    OUTBOX_SK,
    TTL_ATTRIBUTE,
    QueueRole,
)
from flashsale.task_messages import batch_entry, task_message_body
from outbox.exceptions import RecordTooLarge

SQS_MESSAGE_LIMIT = 256 * 1024  # bytes of one message, and of one SendMessageBatch in total
DYNAMODB_ITEM_LIMIT = 400 * 1024  # bytes of one item, names included
DEFAULT_RETENTION = timedelta(days=7)

# Attributes of a stored record besides the model's fields.
ATTEMPTS = "attempts"  # failed send rounds so far
DISPATCHES = "dispatches"  # times marked dispatched: 0 or 1, the condition makes it so
DISPATCHED_AT = "dispatched_at"
RETRY_AFTER = "retry_after"  # epoch seconds before which a failed record is not retried
PARKED = "parked"
PARKED_REASON = "parked_reason"
LAST_ERROR = "last_error"
DELAY_SECONDS = "delay_seconds"

MAX_DELAY_SECONDS = 900  # SQS's longest per-message DelaySeconds (15 minutes)

TaskName = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")
]


def shard_of(aggregate_id: str, shards: int) -> int:
    """The pending-index shard of an aggregate: stable across processes and Python versions
    (``hash()`` is salted per process), and the same for every record of the aggregate, so one
    relay sees an aggregate's records in one place."""
    if shards < 1:
        raise ValueError("shards must be at least 1")
    digest = hashlib.blake2b(aggregate_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def iso_utc(moment: datetime) -> str:
    """Fixed-width ISO-8601 UTC with microseconds, so string order is time order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class OutboxRecord(BaseModel):
    """One event, committed with the state change it announces.

    ``sequence`` numbers an aggregate's events from 1 without gaps; the relay delivers them in
    that order. ``task`` is the Celery task the event starts on ``destination``'s queue; it is
    called as ``task(event={...})`` with :meth:`event` (``event_id`` is the idempotency key).

    ``delay_seconds`` (0..900) is sent as SQS ``DelaySeconds``: the message becomes visible that
    long after the relay sends it, which is how a saga backs off before a retry. The relay
    holds the aggregate's next event back until then, so per-aggregate order holds for what
    consumers see. FIFO queues have no per-message delay: a delayed record for one is refused.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    aggregate_id: Identifier
    sequence: int = Field(ge=1)
    type: Identifier
    destination: QueueRole
    task: TaskName
    payload: dict[str, JsonValue]
    created_at: datetime = Field(default_factory=_utc_now)
    expires_at: int = 0  # epoch seconds (DynamoDB TTL); 0 means created_at + 7 days
    delay_seconds: int = Field(default=0, ge=0, le=MAX_DELAY_SECONDS)

    @model_validator(mode="after")
    def _normalise(self) -> Self:
        uuid.UUID(self.event_id)  # ValueError → ValidationError: event ids are UUIDs
        if self.created_at.tzinfo is None:
            raise ValueError("created_at must be timezone-aware")
        if not self.expires_at:
            expires = self.created_at + DEFAULT_RETENTION
            object.__setattr__(self, "expires_at", int(expires.timestamp()))
        elif self.expires_at <= self.created_at.timestamp():
            raise ValueError("expires_at must be after created_at")
        if self.delay_seconds and self.destination.fifo:
            raise ValueError(
                f"delay_seconds={self.delay_seconds} for {self.destination.value}, a FIFO queue: "
                "SQS FIFO queues do not support a per-message delay (DelaySeconds); "
                "send it without a delay or to a standard queue"
            )
        return self

    def event(self) -> dict[str, Any]:
        """The task's only keyword argument."""
        return {
            "event_id": self.event_id,
            "aggregate_id": self.aggregate_id,
            "sequence": self.sequence,
            "type": self.type,
            "created_at": iso_utc(self.created_at),
            "payload": self.payload,
        }

    def task_kwargs(self) -> dict[str, Any]:
        return {"event": self.event()}

    @property
    def group_id(self) -> str | None:
        """FIFO message group: the aggregate, so one aggregate's events stay in order."""
        return self.aggregate_id if self.destination.fifo else None

    @property
    def dedup_id(self) -> str | None:
        return self.event_id if self.destination.fifo else None

    def batch_entry(self, entry_id: str) -> dict[str, Any]:
        """The record as a ``SendMessageBatch`` entry; the Celery task id is the event id."""
        entry = batch_entry(
            entry_id,
            self.task,
            self.task_kwargs(),
            routing_key=self.destination.celery_queue,
            group_id=self.group_id,
            dedup_id=self.dedup_id,
            task_id=self.event_id,
        )
        if self.delay_seconds:
            entry["DelaySeconds"] = self.delay_seconds
        return entry

    @cached_property
    def message_size(self) -> int:
        """Bytes of the SQS message body the relay will send."""
        body = task_message_body(
            self.task,
            self.task_kwargs(),
            routing_key=self.destination.celery_queue,
            task_id=self.event_id,
            group_id=self.group_id,
            dedup_id=self.dedup_id,
        )
        return len(body.encode())

    def to_item(self, shards: int) -> dict[str, Any]:
        """The DynamoDB item, pending (in the sparse index) on its aggregate's shard."""
        return to_item(
            {
                OUTBOX_PK: self.aggregate_id,
                OUTBOX_SK: self.sequence,
                "event_id": self.event_id,
                "type": self.type,
                "destination": self.destination.value,
                "task": self.task,
                # JSON text: any JSON payload round-trips exactly (floats included).
                "payload": json.dumps(self.payload, separators=(",", ":")),
                OUTBOX_CREATED_AT: iso_utc(self.created_at),
                TTL_ATTRIBUTE: self.expires_at,
                OUTBOX_PENDING_SHARD: shard_of(self.aggregate_id, shards),
                DELAY_SECONDS: self.delay_seconds,
                ATTEMPTS: 0,
                DISPATCHES: 0,
            }
        )

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> OutboxRecord:
        values = from_item(item)
        return cls(
            event_id=values["event_id"],
            aggregate_id=values[OUTBOX_PK],
            sequence=values[OUTBOX_SK],
            type=values["type"],
            destination=QueueRole(values["destination"]),
            task=values["task"],
            payload=json.loads(values["payload"]),
            created_at=datetime.strptime(
                values[OUTBOX_CREATED_AT], "%Y-%m-%dT%H:%M:%S.%fZ"
            ).replace(tzinfo=UTC),
            expires_at=values[TTL_ATTRIBUTE],
            delay_seconds=values.get(DELAY_SECONDS, 0),  # absent on records written before it
        )

    def check_limits(self, item: Mapping[str, Any] | None = None) -> None:
        """Raise RecordTooLarge if the message or the item would be refused downstream."""
        if self.message_size > SQS_MESSAGE_LIMIT:
            raise RecordTooLarge(
                f"event {self.event_id} ({self.type} of {self.aggregate_id}): its Celery "
                f"message would be {self.message_size} bytes, over SQS's {SQS_MESSAGE_LIMIT}; "
                "put a reference in the payload, not the data"
            )
        size = item_size(item if item is not None else self.to_item(1))
        if size > DYNAMODB_ITEM_LIMIT:
            raise RecordTooLarge(
                f"event {self.event_id} ({self.type} of {self.aggregate_id}): its outbox item "
                f"would be {size} bytes, over DynamoDB's {DYNAMODB_ITEM_LIMIT}"
            )


def put_item(record: OutboxRecord, *, table: str, shards: int) -> dict[str, Any]:
    """A ``TransactItems`` entry that writes ``record`` once (a second put of the same aggregate
    and sequence cancels the transaction). Raises RecordTooLarge."""
    item = record.to_item(shards)
    record.check_limits(item)
    return {
        "Put": {
            "TableName": table,
            "Item": item,
            "ConditionExpression": "attribute_not_exists(#pk)",
            "ExpressionAttributeNames": {"#pk": OUTBOX_PK},
        }
    }


def _number_size(text: str) -> int:
    digits = text.strip("-").replace(".", "").lstrip("0") or "0"
    return min(21, (len(digits) + 1) // 2 + 1)


def value_size(value: Mapping[str, Any]) -> int:
    """DynamoDB's size of one typed attribute value (its documented item-size rules)."""
    (kind, inner), *_ = value.items()
    if kind == "S":
        return len(inner.encode())
    if kind == "N":
        return _number_size(str(inner))
    if kind == "B":
        return len(inner)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind in ("SS", "BS"):
        return sum(len(v.encode()) if isinstance(v, str) else len(v) for v in inner)
    if kind == "NS":
        return sum(_number_size(str(v)) for v in inner)
    if kind == "L":
        return 3 + sum(1 + value_size(v) for v in inner)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + value_size(v) for k, v in inner.items())
    raise ValueError(f"unknown DynamoDB type {kind}")


def item_size(item: Mapping[str, Any]) -> int:
    """Bytes DynamoDB counts for ``item``: attribute names plus values."""
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


def plain_number(value: Any) -> int:
    """A DynamoDB number read by the low-level client or ``from_item``, as ``int``."""
    return int(Decimal(str(value)))
