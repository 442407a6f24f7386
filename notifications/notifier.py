"""Send one notification on every channel the buyer gave, each at most once (see ``dedup``).

The notification task calls ``notifier_from_settings().send(notification)``. Per channel:
claim the delivery record, take a token from the channel's rate limiter, call SES or SNS, mark
the record. A channel that fails transiently gives its claim back and the others still go
out; ``send`` then raises ``ChannelUnavailable`` so the task retries, and the retry sends only
the channel that is missing.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import structlog

from flashsale import aws
from flashsale.names import Table
from flashsale.settings import get_settings
from notifications.channels import Channel, EmailChannel, SmsChannel
from notifications.dedup import (
    DEFAULT_LEASE_SECONDS,
    Claim,
    DeliveryRecords,
    RecordStatus,
    Settled,
)
from notifications.exceptions import (
    ChannelUnavailable,
    TransientNotificationError,
    UndeliverableAddress,
)
from notifications.messages import ChannelName, Notification, Priority
from notifications.ratelimit import TokenBucket

log = structlog.get_logger(__name__)

# Longest a send waits for a rate-limiter token, by priority. Well under the task's 30 s hard
# time limit and the claim's lease. A cancellation gives up sooner so a saturated process
# spends its tokens on confirmations; the task retries it later.
DEFAULT_MAX_WAIT: Mapping[Priority, float] = {Priority.HIGH: 10.0, Priority.LOW: 1.0}


class DeliveryStatus(StrEnum):
    SENT = "sent"  # accepted by SES/SNS during this call
    ALREADY_SENT = "already_sent"  # an earlier call sent it: nothing was sent now
    NO_ADDRESS = "no_address"  # the buyer gave no address on this channel
    UNDELIVERABLE = "undeliverable"  # refused for good (now or earlier): never retried


@dataclass(frozen=True)
class Delivery:
    channel: ChannelName
    status: DeliveryStatus
    message_id: str | None = None


class Notifier:
    """E-mail and SMS for buyers, deduplicated per (order, kind, channel), rate-limited per
    channel and process."""

    def __init__(
        self,
        dynamodb: Any,
        ses: Any,
        sns: Any,
        *,
        idempotency_table: str,
        sender: str,
        email_rate: float,
        sms_rate: float,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        max_wait: Mapping[Priority, float] = DEFAULT_MAX_WAIT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.records = DeliveryRecords(
            dynamodb, idempotency_table, lease_seconds=lease_seconds, clock=clock
        )
        self.channels: tuple[Channel, ...] = (EmailChannel(ses, sender), SmsChannel(sns))
        self.limiters = {
            ChannelName.EMAIL: TokenBucket(email_rate, name="email"),
            ChannelName.SMS: TokenBucket(sms_rate, name="sms"),
        }
        self._max_wait = dict(max_wait)

    def send(self, notification: Notification) -> list[Delivery]:
        """Deliver ``notification`` on each channel it has an address for; one ``Delivery`` per
        channel, in channel order.

        Raises ``ChannelUnavailable`` if any channel failed transiently (throttled, provider
        down, rate limit, claim held by another worker, DynamoDB unavailable) — after the other
        channels were sent and recorded, so the retry resends only what is missing.
        """
        deliveries: list[Delivery] = []
        failures: dict[ChannelName, TransientNotificationError] = {}
        for channel in self.channels:
            address = notification.address(channel.name)
            if address is None:
                deliveries.append(Delivery(channel.name, DeliveryStatus.NO_ADDRESS))
                continue
            try:
                deliveries.append(self._deliver(channel, notification, address))
            except TransientNotificationError as exc:
                log.warning(
                    "notifications.deferred",
                    order_id=notification.order_id,
                    kind=str(notification.kind),
                    channel=str(channel.name),
                    error=str(exc),
                )
                failures[channel.name] = exc
        if failures:
            causes = "; ".join(f"{name}: {exc}" for name, exc in failures.items())
            raise ChannelUnavailable(
                f"order {notification.order_id} {notification.kind}: not yet sent on {causes}"
            ) from next(iter(failures.values()))
        return deliveries

    def _deliver(self, channel: Channel, n: Notification, address: str) -> Delivery:
        fields = {"order_id": n.order_id, "kind": str(n.kind), "channel": str(channel.name)}
        claim = self.records.claim(n.order_id, n.kind, channel.name)
        if isinstance(claim, Settled):
            log.info("notifications.already_done", status=str(claim.status), **fields)
            status = (
                DeliveryStatus.ALREADY_SENT
                if claim.status is RecordStatus.SENT
                else DeliveryStatus.UNDELIVERABLE
            )
            return Delivery(channel.name, status, claim.message_id)
        try:
            self.limiters[channel.name].acquire(self._max_wait[n.priority])
            message_id = channel.send(n, address)
        except UndeliverableAddress as exc:
            self.records.mark_undeliverable(claim, str(exc))
            log.warning("notifications.undeliverable", error=str(exc), **fields)
            return Delivery(channel.name, DeliveryStatus.UNDELIVERABLE)
        except BaseException:
            # Not sent (or, after a read timeout, perhaps sent): let the retry claim it at once.
            self.records.release(claim)
            raise
        self._mark_sent(claim, message_id, fields)
        return Delivery(channel.name, DeliveryStatus.SENT, message_id)

    def _mark_sent(self, claim: Claim, message_id: str, fields: dict[str, str]) -> None:
        # If this raises, the claim stays "sending" and the retry sends a second copy after the
        # lease: the documented at-least-once window (notifications.dedup).
        self.records.mark_sent(claim, message_id)
        log.info("notifications.sent", message_id=message_id, attempt=claim.attempt, **fields)


_lock = threading.Lock()
_notifiers: dict[tuple[int, str | None], Notifier] = {}


def notifier_from_settings(*, sender: str | None = None) -> Notifier:
    """This process's notifier, built once from the settings and ``flashsale.aws`` clients.

    One per process because the rate limits are per process (a notifier per task would give
    every task a full bucket). ``sender`` overrides the settings' ``sender_email``.
    """
    key = (os.getpid(), sender)
    with _lock:
        found = _notifiers.get(key)
        if found is None:
            settings = get_settings()
            # ``sender_email`` is the stack output ``Output.SENDER_EMAIL``.
            address = sender or str(getattr(settings, "sender_email", "") or "")
            if not address:
                raise ValueError(
                    "no sender address: the stack output sender_email or FLASHSALE_SENDER_EMAIL"
                )
            found = _notifiers[key] = Notifier(
                aws.client("dynamodb"),
                aws.client("ses"),
                aws.client("sns"),
                idempotency_table=settings.table(Table.IDEMPOTENCY),
                sender=address,
                email_rate=settings.email_per_second,
                sms_rate=settings.sms_per_second,
            )
        return found


def reset_notifiers() -> None:
    """Forget the built notifiers (tests that change the settings or the clients)."""
    with _lock:
        _notifiers.clear()
