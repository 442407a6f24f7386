"""A saga's persistent state: where it is, what it knows, what happened so far.

The whole state is one DynamoDB item, rewritten at each transition with a condition on the
version read (optimistic concurrency): a worker, a redelivered message and the sweeper may all
try to move the same saga, and exactly one of them wins each step.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from flashsale.dynamo import from_item, to_item
from flashsale.names import SAGAS_ACTIVE_SHARD, SAGAS_DEADLINE, SAGAS_PK
from outbox.records import shard_of  # the same stable hash as the outbox's sparse index

# A quarantined saga waits for an operator: it stays in the sparse ``active`` index (so the
# sweeper can count it for the alarm) with a deadline no clock reaches, so it is never "due".
QUARANTINE_DEADLINE = 10**10  # epoch seconds, year 2286


class SagaStatus(StrEnum):
    RUNNING = "running"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    QUARANTINED = "quarantined"

    @property
    def final(self) -> bool:
        return self in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED)


class HistoryEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    at: str
    step: str
    event: str  # started, succeeded, failed, retrying, compensated, timed_out, quarantined...
    attempt: int = 1
    detail: str = ""


class SagaState(BaseModel):
    """Everything the orchestrator needs to take the next decision, and the story so far."""

    model_config = ConfigDict(extra="forbid")

    saga_id: str
    saga: str
    status: SagaStatus
    step: int  # the step being run (RUNNING) or compensated (COMPENSATING)
    attempt: int = 1
    version: int = 0
    events: int = 0  # outbox records written for this saga (their sequence numbers)
    data: dict[str, JsonValue] = Field(default_factory=dict)
    history: list[HistoryEntry] = Field(default_factory=list)
    deadline: float | None = None  # when the sweeper takes over; None once final
    expires_at: float | None = None  # before the pivot succeeds, or the saga is undone
    reason: str = ""  # why it is compensating or quarantined
    quarantined_from: SagaStatus | None = None

    @property
    def compensating(self) -> bool:
        """The direction, also while quarantined."""
        status = self.quarantined_from or self.status
        return status is SagaStatus.COMPENSATING

    def note(self, step: str, event: str, detail: str = "", *, attempt: int | None = None) -> None:
        self.history.append(
            HistoryEntry(
                at=datetime.now(UTC).isoformat(timespec="milliseconds"),
                step=step,
                event=event,
                attempt=self.attempt if attempt is None else attempt,
                detail=detail,
            )
        )

    def to_item(self, shards: int) -> dict[str, Any]:
        """The DynamoDB item; a saga that is not final is on a shard of the active index."""
        values: dict[str, Any] = {
            SAGAS_PK: self.saga_id,
            "saga": self.saga,
            "status": self.status.value,
            "step": self.step,
            "attempt": self.attempt,
            "version": self.version,
            "events": self.events,
            # JSON text, so any JSON value round-trips exactly (floats included).
            "data": json.dumps(self.data, separators=(",", ":")),
            "history": json.dumps([h.model_dump() for h in self.history], separators=(",", ":")),
            "expires_at_epoch": self.expires_at,
            "reason": self.reason or None,
            "quarantined_from": self.quarantined_from.value if self.quarantined_from else None,
        }
        if self.deadline is not None:
            values[SAGAS_DEADLINE] = self.deadline
            values[SAGAS_ACTIVE_SHARD] = shard_of(self.saga_id, shards)
        return to_item({k: _dynamo_number(v) for k, v in values.items()})

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> SagaState:
        values = from_item(item)
        return cls(
            saga_id=values[SAGAS_PK],
            saga=values["saga"],
            status=SagaStatus(values["status"]),
            step=values["step"],
            attempt=values["attempt"],
            version=values["version"],
            events=values["events"],
            data=json.loads(values["data"]),
            history=[HistoryEntry(**h) for h in json.loads(values["history"])],
            deadline=_float(values.get(SAGAS_DEADLINE)),
            expires_at=_float(values.get("expires_at_epoch")),
            reason=values.get("reason", ""),
            quarantined_from=(
                SagaStatus(values["quarantined_from"]) if values.get("quarantined_from") else None
            ),
        )


def _dynamo_number(value: Any) -> Any:
    """Floats become Decimals, which boto3's serializer accepts (it refuses ``float``)."""
    return Decimal(repr(value)) if isinstance(value, float) else value


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
