"""One delivery record per (order, message kind) in the idempotency table, for every channel.

A notification is claimed with one conditional write (token, lease, attempt), sent on each
channel the record does not settle yet, then marked: the mark records each channel's outcome
(``sent`` with the provider's message id, or ``undeliverable``), settles the record and drops
the lease. A redelivered or duplicated task finds the record settled and sends nothing. The
mark is a ``TransactItems`` entry (``Mark``), so the caller can commit it in its own
transaction (the saga's transition) or write it alone (``write``). When a channel fails for
now, ``release`` records the channels that did settle and ends the lease in one write, so the
retry claims at once and sends only the missing channels.

So a notification costs two writes, whatever its channels: the floor for a side effect that
takes no idempotency key is one durable write before it (the claim, so two workers cannot both
send) and one after it (the mark).

What this can and cannot promise. SES ``SendEmail`` and SNS ``Publish`` take no idempotency key,
so the provider's acceptance and our mark cannot be one atomic step. A worker that dies (or
whose mark is not written, or whose call times out after the provider accepted) between the
send and the mark leaves the claim ``sending``; the retry takes it over once the lease has run
out and sends again on every channel the record does not settle. In that window delivery is at
least once — a second copy, never zero. Everywhere else it is exactly once. The lease (default
twice the notification task's hard time limit) must exceed the longest a live worker can hold a
claim, or two live workers could both send; a worker that outlived its lease cannot mark the
record (the mark is conditioned on its claim token).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from flashsale.dynamo import from_item, is_condition_failure, to_item, write_alone
from flashsale.names import IDEMPOTENCY_PK, TASK_TIME_LIMIT_SECONDS, TTL_ATTRIBUTE, QueueRole
from notifications.exceptions import ClaimLost, DeliveryInProgress, DeliveryStoreUnavailable
from notifications.messages import ChannelName, NotificationKind

log = structlog.get_logger(__name__)

KEY_PREFIX = "notification"
DEFAULT_LEASE_SECONDS = 2.0 * TASK_TIME_LIMIT_SECONDS[QueueRole.NOTIFICATIONS]
# Longer than an SQS message can live (14 days) plus a DLQ redrive: a record must not expire
# while a copy of its message may still be delivered.
DEFAULT_RETENTION_SECONDS = 30 * 24 * 3600
MAX_REASON_CHARS = 1000

STATUS = "status"
TOKEN = "claim_token"
LEASE_UNTIL = "lease_until"  # epoch seconds; not the TTL attribute: a lease must never vanish
ATTEMPTS = "attempts"
SETTLED_AT = "settled_at"
_NAMES = {
    "#pk": IDEMPOTENCY_PK,
    "#status": STATUS,
    "#token": TOKEN,
    "#lease": LEASE_UNTIL,
}


class RecordStatus(StrEnum):
    SENDING = "sending"  # claimed; a channel may still be unsent
    SETTLED = "settled"  # every channel that had an address has its outcome: send nothing


class ChannelStatus(StrEnum):
    SENT = "sent"
    UNDELIVERABLE = "undeliverable"  # refused for good: never tried again


def delivery_key(order_id: str, kind: NotificationKind) -> str:
    """The record's id; prefixed so other users of the idempotency table cannot collide."""
    return f"{KEY_PREFIX}#{kind}#{order_id}"


def outcome_attribute(channel: ChannelName) -> str:
    """The record's attribute holding ``channel``'s outcome (a map), absent until it settles."""
    return f"outcome_{channel}"


@dataclass(frozen=True)
class ChannelOutcome:
    """How a channel settled: sent (the provider's message id) or undeliverable (why)."""

    status: ChannelStatus
    message_id: str | None = None
    reason: str | None = None

    @classmethod
    def sent(cls, message_id: str) -> ChannelOutcome:
        return cls(ChannelStatus.SENT, message_id=message_id)

    @classmethod
    def undeliverable(cls, reason: str) -> ChannelOutcome:
        return cls(ChannelStatus.UNDELIVERABLE, reason=reason[:MAX_REASON_CHARS])

    def to_value(self) -> dict[str, Any]:
        fields = {"status": str(self.status), "message_id": self.message_id, "reason": self.reason}
        return {"M": to_item(fields)}


Outcomes = dict[ChannelName, ChannelOutcome]


def _outcomes(record: Mapping[str, Any]) -> Outcomes:
    """The channel outcomes a (plain) record holds."""
    found: Outcomes = {}
    for channel in ChannelName:
        value = record.get(outcome_attribute(channel))
        if value:
            found[channel] = ChannelOutcome(
                ChannelStatus(value["status"]), value.get("message_id"), value.get("reason")
            )
    return found


@dataclass(frozen=True)
class Claim:
    """This worker may send the notification ``key`` until ``lease_until``; ``settled`` are
    the channels an earlier attempt recorded (send nothing on them)."""

    key: str
    token: str
    lease_until: float
    attempt: int
    settled: Outcomes = field(default_factory=dict)


@dataclass(frozen=True)
class Settled:
    """The notification ``key`` is finished on every channel: send nothing."""

    key: str
    outcomes: Outcomes


@dataclass(frozen=True)
class Mark:
    """The ``TransactItems`` entry that settles a claimed record with its channels' outcomes,
    conditioned on the claim's token."""

    key: str
    entry: dict[str, Any]

    def lost(self) -> ClaimLost:
        """The error for a refused mark: another worker took the claim over."""
        return ClaimLost(f"{self.key}: the claim was taken over by another worker; not marked")


def _number(value: float) -> dict[str, str]:
    return {"N": f"{value:.3f}"}


def _outcome_updates(outcomes: Outcomes) -> tuple[list[str], dict[str, str], dict[str, Any]]:
    """``SET`` clauses, names and values that write ``outcomes``."""
    sets: list[str] = []
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    for i, (channel, outcome) in enumerate(outcomes.items()):
        names[f"#o{i}"] = outcome_attribute(channel)
        values[f":o{i}"] = outcome.to_value()
        sets.append(f"#o{i} = :o{i}")
    return sets, names, values


class DeliveryRecords:
    """Claims and marks of notifications (DynamoDB low-level client)."""

    def __init__(
        self,
        dynamodb: Any,
        table: str,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        retention_seconds: int = DEFAULT_RETENTION_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        self._ddb = dynamodb
        self.table = table
        self._lease = lease_seconds
        self._retention = retention_seconds
        self._clock = clock  # wall clock: leases are compared across processes and hosts

    def claim(self, order_id: str, kind: NotificationKind) -> Claim | Settled:
        """Claim the notification for all its channels, or say it is finished.

        Raises ``DeliveryInProgress`` if another worker's claim is still leased, and
        ``DeliveryStoreUnavailable`` if DynamoDB fails.
        """
        key = delivery_key(order_id, kind)
        now = self._clock()
        token = uuid.uuid4().hex
        lease_until = now + self._lease
        try:
            response = self._ddb.update_item(
                TableName=self.table,
                Key={IDEMPOTENCY_PK: {"S": key}},
                UpdateExpression=(
                    "SET #status = :sending, #token = :token, #lease = :lease, #ttl = :ttl, "
                    "#order = :order, #kind = :kind ADD #attempts :one"
                ),
                ConditionExpression=(
                    "attribute_not_exists(#pk) OR (#status = :sending AND #lease <= :now)"
                ),
                ExpressionAttributeNames=_NAMES
                | {
                    "#ttl": TTL_ATTRIBUTE,
                    "#order": "order_id",
                    "#kind": "kind",
                    "#attempts": ATTEMPTS,
                },
                ExpressionAttributeValues={
                    ":sending": {"S": RecordStatus.SENDING},
                    ":token": {"S": token},
                    ":lease": _number(lease_until),
                    ":now": _number(now),
                    ":ttl": {"N": str(int(now) + self._retention)},
                    ":order": {"S": order_id},
                    ":kind": {"S": kind},
                    ":one": {"N": "1"},
                },
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise DeliveryStoreUnavailable(f"claim {key}: {exc}") from exc
            return self._settled_or_busy(key, exc.response.get("Item"))
        except BotoCoreError as exc:
            raise DeliveryStoreUnavailable(f"claim {key}: {exc}") from exc
        record = from_item(response.get("Attributes", {}))
        attempt = int(record.get(ATTEMPTS, 1))
        if attempt > 1:
            # A claim left "sending" (crash, mark not written, released after a failure).
            log.info(
                "notifications.claim_taken_over", order_id=order_id, kind=str(kind), attempt=attempt
            )
        return Claim(key, token, lease_until, attempt, _outcomes(record))

    def _settled_or_busy(self, key: str, old: dict[str, Any] | None) -> Settled:
        if old is None:  # an emulator that does not return the item on a failed condition
            old = self._get(key)
        record = from_item(old or {})
        if record.get(STATUS) == RecordStatus.SETTLED:
            return Settled(key, _outcomes(record))
        lease_until = float(record.get(LEASE_UNTIL) or 0)
        raise DeliveryInProgress(
            f"{key} is being sent by another worker until {lease_until}",
            retry_after=max(0.0, lease_until - self._clock()),
        )

    def _get(self, key: str) -> dict[str, Any] | None:
        try:
            item = self._ddb.get_item(
                TableName=self.table, Key={IDEMPOTENCY_PK: {"S": key}}, ConsistentRead=True
            ).get("Item")
        except (ClientError, BotoCoreError) as exc:
            raise DeliveryStoreUnavailable(f"read {key}: {exc}") from exc
        return dict(item) if item else None

    def mark(self, claim: Claim, outcomes: Outcomes) -> Mark:
        """The entry that records ``outcomes`` (this attempt's; the earlier ones are in the
        record already) and settles the record, if ``claim`` is still ours. Nothing is written
        here: commit it in a transaction, or ``write`` it."""
        sets, names, values = _outcome_updates(outcomes)
        update = {
            "TableName": self.table,
            "Key": {IDEMPOTENCY_PK: {"S": claim.key}},
            "UpdateExpression": (
                f"SET {', '.join(['#status = :settled', '#at = :at', *sets])} REMOVE #lease"
            ),
            "ConditionExpression": "#token = :token",
            "ExpressionAttributeNames": names
            | {"#status": STATUS, "#at": SETTLED_AT, "#token": TOKEN, "#lease": LEASE_UNTIL},
            "ExpressionAttributeValues": values
            | {
                ":settled": {"S": RecordStatus.SETTLED},
                ":at": _number(self._clock()),
                ":token": {"S": claim.token},
            },
        }
        return Mark(claim.key, {"Update": update})

    def write(self, mark: Mark) -> bool:
        """Write ``mark`` on its own; False if the claim was lost (another worker took it over
        after the lease: it may send a second copy, which is the documented window).

        Raises ``DeliveryStoreUnavailable`` if DynamoDB fails.
        """
        try:
            written = write_alone(self._ddb, mark.entry)
        except (ClientError, BotoCoreError) as exc:
            raise DeliveryStoreUnavailable(f"mark {mark.key}: {exc}") from exc
        if not written:
            log.warning("notifications.claim_lost", key=mark.key)
        return written

    def release(self, claim: Claim, outcomes: Outcomes) -> None:
        """Record the channels that settled (``outcomes``) and give the claim up, after another
        channel failed for now, so the retry need not wait out the lease and sends only what
        is missing. Best effort: if this fails, the lease expires instead (and the retry sends
        again on the channels it could not record: the at-least-once window)."""
        sets, names, values = _outcome_updates(outcomes)
        try:
            self._ddb.update_item(
                TableName=self.table,
                Key={IDEMPOTENCY_PK: {"S": claim.key}},
                UpdateExpression=f"SET {', '.join(['#lease = :zero', *sets])}",
                ConditionExpression="#token = :token AND #status = :sending",
                ExpressionAttributeNames=names
                | {k: _NAMES[k] for k in ("#lease", "#token", "#status")},
                ExpressionAttributeValues=values
                | {
                    ":zero": {"N": "0"},
                    ":token": {"S": claim.token},
                    ":sending": {"S": RecordStatus.SENDING},
                },
            )
        except (ClientError, BotoCoreError) as exc:
            log.warning("notifications.release_failed", key=claim.key, error=str(exc))
