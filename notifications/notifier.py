"""Send one notification on every channel the buyer gave, each at most once (see ``dedup``).

``deliver`` claims the notification's one delivery record (all channels), then per channel
that the record does not settle yet takes a token from the channel's rate limiter and calls SES
or SNS; it returns the deliveries with the mark that records them, for the caller to commit in
its own transaction (the saga's confirmation step) — until the mark is written the claim stays
``sending``. ``send`` is ``deliver`` plus writing the mark alone (the cancellation notice). A
channel that fails transiently does not stop the others; the ones that settled are recorded
with the claim released in one write, and ``ChannelUnavailable`` is raised so the task
retries: the retry sends only the channel that is missing.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
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
    ChannelOutcome,
    ChannelStatus,
    Claim,
    DeliveryRecords,
    Mark,
    Outcomes,
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


@dataclass(frozen=True)
class Outcome:
    """What ``deliver`` did: one ``Delivery`` per channel, in channel order, and the mark that
    records them — ``None`` when nothing was claimed (the record was settled already, or the
    buyer gave no address at all)."""

    deliveries: list[Delivery]
    mark: Mark | None


class Notifier:
    """E-mail and SMS for buyers, deduplicated per (order, kind) with one record for all
    channels, rate-limited per channel and process."""

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
        """``deliver`` ``notification`` and write its mark: one ``Delivery`` per channel.

        Raises what ``deliver`` raises, and ``DeliveryStoreUnavailable`` if the mark cannot be
        written (the claim then stays ``sending``: the at-least-once window of ``dedup``).
        """
        outcome = self.deliver(notification)
        if outcome.mark is not None:
            self.records.write(outcome.mark)
        return outcome.deliveries

    def deliver(self, notification: Notification) -> Outcome:
        """Send ``notification`` on each channel it has an address for and its record does not
        settle yet; the deliveries, and the mark the caller must commit or write.

        Raises ``DeliveryInProgress`` if another worker holds the claim,
        ``DeliveryStoreUnavailable`` if the claim cannot be written, and ``ChannelUnavailable``
        if a channel failed transiently (throttled, provider down, rate limit) — after the
        other channels were sent and recorded, so the retry resends only what is missing.
        """
        addressed = [
            (channel, address)
            for channel in self.channels
            if (address := notification.address(channel.name)) is not None
        ]
        if not addressed:
            return Outcome(self._deliveries({}, {}), mark=None)
        claim = self.records.claim(notification.order_id, notification.kind)
        if isinstance(claim, Settled):
            log.info(
                "notifications.already_done",
                order_id=notification.order_id,
                kind=str(notification.kind),
            )
            return Outcome(self._deliveries(claim.outcomes, {}), mark=None)
        sent = self._send_unsettled(claim, notification, addressed)
        return Outcome(self._deliveries(claim.settled, sent), self.records.mark(claim, sent))

    def _send_unsettled(
        self, claim: Claim, n: Notification, addressed: Sequence[tuple[Channel, str]]
    ) -> Outcomes:
        """Send on each addressed channel the claim does not settle; their outcomes. If any
        channel fails, the ones that settled are recorded and the claim released first."""
        settled: Outcomes = {}
        failures: dict[ChannelName, TransientNotificationError] = {}
        try:
            for channel, address in addressed:
                if channel.name in claim.settled:
                    continue
                try:
                    settled[channel.name] = self._send_one(channel, n, address, claim.attempt)
                except TransientNotificationError as exc:
                    log.warning(
                        "notifications.deferred",
                        order_id=n.order_id,
                        kind=str(n.kind),
                        channel=str(channel.name),
                        error=str(exc),
                    )
                    failures[channel.name] = exc
            if failures:
                causes = "; ".join(f"{name}: {exc}" for name, exc in failures.items())
                raise ChannelUnavailable(
                    f"order {n.order_id} {n.kind}: not yet sent on {causes}"
                ) from next(iter(failures.values()))
        except BaseException:
            # Not sent (or, after a read timeout, perhaps sent): let the retry claim it at once.
            self.records.release(claim, settled)
            raise
        return settled

    def _send_one(
        self, channel: Channel, n: Notification, address: str, attempt: int
    ) -> ChannelOutcome:
        fields = {"order_id": n.order_id, "kind": str(n.kind), "channel": str(channel.name)}
        self.limiters[channel.name].acquire(self._max_wait[n.priority])
        try:
            message_id = channel.send(n, address)
        except UndeliverableAddress as exc:
            log.warning("notifications.undeliverable", error=str(exc), **fields)
            return ChannelOutcome.undeliverable(str(exc))
        log.info("notifications.sent", message_id=message_id, attempt=attempt, **fields)
        return ChannelOutcome.sent(message_id)

    def _deliveries(self, earlier: Outcomes, now: Outcomes) -> list[Delivery]:
        """One ``Delivery`` per channel, in channel order, from the outcomes recorded by
        earlier attempts and by this one. A channel with neither had no address (when the
        record was settled, for a settled record: it is the final word on the notification)."""
        deliveries = []
        for channel in self.channels:
            name = channel.name
            outcome = now.get(name) or earlier.get(name)
            if outcome is None:
                deliveries.append(Delivery(name, DeliveryStatus.NO_ADDRESS))
            elif outcome.status is ChannelStatus.UNDELIVERABLE:
                deliveries.append(Delivery(name, DeliveryStatus.UNDELIVERABLE))
            else:
                status = DeliveryStatus.SENT if name in now else DeliveryStatus.ALREADY_SENT
                deliveries.append(Delivery(name, status, outcome.message_id))
        return deliveries


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
