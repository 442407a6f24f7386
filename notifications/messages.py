"""What a buyer is told, and how it reads.

A ``Notification`` is the notification task's whole input: it names the order and the kind of
message, carries the buyer's addresses (validated here, so a malformed address never reaches
SES or SNS) and the few facts the text needs. Rendering is plain text on purpose: a
confirmation must be readable on any phone and in any mail client.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator, model_validator

from flashsale.names import QueueRole

# E.164: "+", a country code that does not start with 0, at most 15 digits in all. SNS checks
# the same shape but lets the "+" be left out; we require it, so a number is never guessed.
E164 = re.compile(r"^\+[1-9]\d{1,14}$")
BRAND = "flashsale"


class NotificationKind(StrEnum):
    """Which message; with the order id it is the delivery record's deduplication key."""

    CONFIRMATION = "confirmation"
    CANCELLATION = "cancellation"


class ChannelName(StrEnum):
    """Where a message goes: e-mail through SES, SMS through SNS."""

    EMAIL = "email"
    SMS = "sms"


class Priority(StrEnum):
    HIGH = "high"
    LOW = "low"


class Notification(BaseModel):
    """One message of one kind about one order, to every address the buyer gave."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    order_id: str = Field(min_length=1, max_length=200)
    kind: NotificationKind
    event_id: str = Field(min_length=1, max_length=200)
    quantity: int = Field(ge=1)
    email: EmailStr | None = None
    phone: str | None = None
    ticket_code: str | None = Field(default=None, min_length=1, max_length=200)
    amount_cents: int | None = Field(default=None, ge=0)
    currency: str = Field(default="usd", pattern=r"^[a-z]{3}$")
    reason: str | None = Field(default=None, min_length=1, max_length=200)

    @field_validator("phone")
    @classmethod
    def _e164(cls, value: str | None) -> str | None:
        if value is not None and not E164.match(value):
            raise ValueError("phone must be in E.164 form: '+', country code, number: +14155550100")
        return value

    @model_validator(mode="after")
    def _confirmation_has_ticket(self) -> Self:
        if self.kind is NotificationKind.CONFIRMATION and self.ticket_code is None:
            raise ValueError("a confirmation must carry the ticket_code the buyer will show")
        return self

    @property
    def priority(self) -> Priority:
        """A confirmation is high priority: it carries the ticket the buyer needs to get in, and
        a buyer who was charged is waiting for it. A cancellation only says that nothing was
        charged (or that it was refunded); it can wait behind a burst of confirmations."""
        return Priority.HIGH if self.kind is NotificationKind.CONFIRMATION else Priority.LOW

    @property
    def queue(self) -> QueueRole:
        """The queue this notification is sent on: one queue per priority, so a backlog of
        cancellations never sits in front of a confirmation."""
        if self.priority is Priority.HIGH:
            return QueueRole.NOTIFICATIONS
        return QueueRole.NOTIFICATIONS_LOW

    def address(self, channel: ChannelName) -> str | None:
        """The buyer's address on ``channel``, or None if they gave none."""
        return self.email if channel is ChannelName.EMAIL else self.phone


@dataclass(frozen=True)
class EmailContent:
    subject: str
    text: str


def _money(cents: int, currency: str) -> str:
    return f"{cents // 100}.{cents % 100:02d} {currency.upper()}"


def _tickets(quantity: int) -> str:
    return f"{quantity} ticket" + ("" if quantity == 1 else "s")


def _cancellation_money(n: Notification) -> str:
    if n.amount_cents:
        return f"The {_money(n.amount_cents, n.currency)} you paid has been refunded."
    return "You have not been charged."


def render_email(n: Notification) -> EmailContent:
    """Subject and plain-text body of the e-mail for ``n``."""
    if n.kind is NotificationKind.CONFIRMATION:
        lines = [
            "Your purchase is confirmed.",
            "",
            f"Event: {n.event_id}",
            f"Tickets: {n.quantity}",
            f"Ticket code: {n.ticket_code}",
        ]
        if n.amount_cents is not None:
            lines.append(f"Charged: {_money(n.amount_cents, n.currency)}")
        lines += [f"Order: {n.order_id}", "", "Show the ticket code at the entrance."]
        return EmailContent(f"Your {_tickets(n.quantity)} for {n.event_id}", "\n".join(lines))
    because = f" ({n.reason})" if n.reason else ""
    lines = [
        f"We could not complete your order for {_tickets(n.quantity)} to {n.event_id}{because}.",
        _cancellation_money(n),
        "",
        f"Order: {n.order_id}",
    ]
    return EmailContent(f"Your order for {n.event_id} was cancelled", "\n".join(lines))


def render_sms(n: Notification) -> str:
    """The SMS text for ``n``: short, one segment where the ids allow it."""
    if n.kind is NotificationKind.CONFIRMATION:
        return (
            f"{BRAND}: {_tickets(n.quantity)} for {n.event_id} confirmed. "
            f"Ticket code {n.ticket_code}."
        )
    because = f" ({n.reason})" if n.reason else ""
    return f"{BRAND}: your order for {n.event_id} was cancelled{because}. {_cancellation_money(n)}"
