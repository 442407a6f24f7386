"""One delivery record per (order, message kind, channel) in the idempotency table.

A delivery is claimed with a conditional write, sent, then marked ``sent``; a redelivered or
duplicated task finds the record ``sent`` (or ``undeliverable``) and sends nothing. Channels are
recorded separately, so a retry after the SMS failed resends only the SMS.

What this can and cannot promise. SES ``SendEmail`` and SNS ``Publish`` take no idempotency key,
so the provider's acceptance and our mark cannot be one atomic step. A worker that dies (or
whose mark fails, or whose call times out after the provider accepted) between the send and the
mark leaves the claim ``sending``; the retry takes it over once the lease has run out and sends
again. In that window delivery is at least once — a second copy, never zero. Everywhere else it
is exactly once. The lease (default twice the notification task's hard time limit) must exceed
the longest a live worker can hold a claim, or two live workers could both send; a worker that
outlived its lease cannot mark the record (the mark is conditioned on its claim token).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from flashsale.dynamo import from_item
from flashsale.names import IDEMPOTENCY_PK, TASK_TIME_LIMIT_SECONDS, TTL_ATTRIBUTE, QueueRole
from notifications.exceptions import DeliveryInProgress, DeliveryStoreUnavailable
from notifications.messages import ChannelName, NotificationKind

log = structlog.get_logger(__name__)

KEY_PREFIX = "notification"
DEFAULT_LEASE_SECONDS = 2.0 * TASK_TIME_LIMIT_SECONDS[QueueRole.NOTIFICATIONS]
# Longer than an SQS message can live (14 days) plus a DLQ redrive: a record must not expire
# while a copy of its message may still be delivered.
DEFAULT_RETENTION_SECONDS = 30 * 24 * 3600

STATUS = "status"
TOKEN = "claim_token"
LEASE_UNTIL = "lease_until"  # epoch seconds; not the TTL attribute: a lease must never vanish
ATTEMPTS = "attempts"
MESSAGE_ID = "message_id"
_NAMES = {
    "#pk": IDEMPOTENCY_PK,
    "#status": STATUS,
    "#token": TOKEN,
    "#lease": LEASE_UNTIL,
}


class RecordStatus(StrEnum):
    SENDING = "sending"
    SENT = "sent"
    UNDELIVERABLE = "undeliverable"


def delivery_key(order_id: str, kind: NotificationKind, channel: ChannelName) -> str:
    """The record's id; prefixed so other users of the idempotency table cannot collide."""
    return f"{KEY_PREFIX}#{kind}#{channel}#{order_id}"


@dataclass(frozen=True)
class Claim:
    """This worker may send the delivery ``key`` until ``lease_until``."""

    key: str
    token: str
    lease_until: float
    attempt: int


@dataclass(frozen=True)
class Settled:
    """The delivery ``key`` is finished (sent or undeliverable): send nothing."""

    key: str
    status: RecordStatus
    message_id: str | None = None


def _number(value: float) -> dict[str, str]:
    return {"N": f"{value:.3f}"}


def _is_condition_failure(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class DeliveryRecords:
    """Claims and marks of notification deliveries (DynamoDB low-level client)."""

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

    def claim(self, order_id: str, kind: NotificationKind, channel: ChannelName) -> Claim | Settled:
        """Claim the delivery, or say it is finished.

        Raises ``DeliveryInProgress`` if another worker's claim is still leased, and
        ``DeliveryStoreUnavailable`` if DynamoDB fails.
        """
        key = delivery_key(order_id, kind, channel)
        now = self._clock()
        token = uuid.uuid4().hex
        lease_until = now + self._lease
        try:
            response = self._ddb.update_item(
                TableName=self.table,
                Key={IDEMPOTENCY_PK: {"S": key}},
                UpdateExpression=(
                    "SET #status = :sending, #token = :token, #lease = :lease, #ttl = :ttl, "
                    "#order = :order, #kind = :kind, #channel = :channel ADD #attempts :one"
                ),
                ConditionExpression=(
                    "attribute_not_exists(#pk) OR (#status = :sending AND #lease <= :now)"
                ),
                ExpressionAttributeNames=_NAMES
                | {
                    "#ttl": TTL_ATTRIBUTE,
                    "#order": "order_id",
                    "#kind": "kind",
                    "#channel": "channel",
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
                    ":channel": {"S": channel},
                    ":one": {"N": "1"},
                },
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if not _is_condition_failure(exc):
                raise DeliveryStoreUnavailable(f"claim {key}: {exc}") from exc
            return self._settled_or_busy(key, exc.response.get("Item"))
        except BotoCoreError as exc:
            raise DeliveryStoreUnavailable(f"claim {key}: {exc}") from exc
        attempt = int(from_item(response.get("Attributes", {})).get(ATTEMPTS, 1))
        if attempt > 1:
            # A claim left "sending" (crash, failed mark, released after a transient failure).
            log.info(
                "notifications.claim_taken_over",
                order_id=order_id,
                kind=str(kind),
                channel=str(channel),
                attempt=attempt,
            )
        return Claim(key=key, token=token, lease_until=lease_until, attempt=attempt)

    def _settled_or_busy(self, key: str, old: dict[str, Any] | None) -> Settled:
        if old is None:  # an emulator that does not return the item on a failed condition
            old = self._get(key)
        record = from_item(old or {})
        status = record.get(STATUS)
        if status in (RecordStatus.SENT, RecordStatus.UNDELIVERABLE):
            return Settled(key=key, status=RecordStatus(status), message_id=record.get(MESSAGE_ID))
        raise DeliveryInProgress(
            f"{key} is being sent by another worker until {record.get(LEASE_UNTIL)}"
        )

    def _get(self, key: str) -> dict[str, Any] | None:
        try:
            item = self._ddb.get_item(
                TableName=self.table, Key={IDEMPOTENCY_PK: {"S": key}}, ConsistentRead=True
            ).get("Item")
        except (ClientError, BotoCoreError) as exc:
            raise DeliveryStoreUnavailable(f"read {key}: {exc}") from exc
        return dict(item) if item else None

    def mark_sent(self, claim: Claim, message_id: str) -> bool:
        """Record the provider's acceptance; False if the claim was lost (another worker took
        it over after the lease: it may send a second copy, which is the documented window)."""
        return self._finish(claim, RecordStatus.SENT, {MESSAGE_ID: {"S": message_id}})

    def mark_undeliverable(self, claim: Claim, reason: str) -> bool:
        """Record that the provider refused the address for good: never try it again."""
        return self._finish(claim, RecordStatus.UNDELIVERABLE, {"reason": {"S": reason[:1000]}})

    def _finish(self, claim: Claim, status: RecordStatus, extra: dict[str, Any]) -> bool:
        names = {"#status": STATUS, "#token": TOKEN, "#lease": LEASE_UNTIL, "#at": "finished_at"}
        values: dict[str, Any] = {
            ":status": {"S": status},
            ":token": {"S": claim.token},
            ":at": _number(self._clock()),
        }
        sets = ["#status = :status", "#at = :at"]
        for i, (name, value) in enumerate(extra.items()):
            names[f"#x{i}"] = name
            values[f":x{i}"] = value
            sets.append(f"#x{i} = :x{i}")
        try:
            self._ddb.update_item(
                TableName=self.table,
                Key={IDEMPOTENCY_PK: {"S": claim.key}},
                UpdateExpression=f"SET {', '.join(sets)} REMOVE #lease",
                ConditionExpression="#token = :token",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if _is_condition_failure(exc):
                log.warning("notifications.claim_lost", key=claim.key, status=str(status))
                return False
            raise DeliveryStoreUnavailable(f"mark {claim.key} {status}: {exc}") from exc
        except BotoCoreError as exc:
            raise DeliveryStoreUnavailable(f"mark {claim.key} {status}: {exc}") from exc
        return True

    def release(self, claim: Claim) -> None:
        """Give a claim up after the provider refused the message for now, so the retry need
        not wait out the lease. Best effort: if this fails, the lease expires instead."""
        try:
            self._ddb.update_item(
                TableName=self.table,
                Key={IDEMPOTENCY_PK: {"S": claim.key}},
                UpdateExpression="SET #lease = :zero",
                ConditionExpression="#token = :token AND #status = :sending",
                ExpressionAttributeNames={k: _NAMES[k] for k in ("#lease", "#token", "#status")},
                ExpressionAttributeValues={
                    ":zero": {"N": "0"},
                    ":token": {"S": claim.token},
                    ":sending": {"S": RecordStatus.SENDING},
                },
            )
        except (ClientError, BotoCoreError) as exc:
            log.warning("notifications.release_failed", key=claim.key, error=str(exc))
