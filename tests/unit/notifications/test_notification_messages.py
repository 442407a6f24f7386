"""``notifications.messages``: validation of buyer addresses, priorities, and the texts."""

from __future__ import annotations

import re

import pytest
from notification_fakes import make_notification
from pydantic import ValidationError

from flashsale.names import QueueRole
from notifications.messages import (
    ChannelName,
    NotificationKind,
    Priority,
    render_email,
    render_sms,
)


def test_confirmation__is_high_priority_on_the_notifications_queue() -> None:
    n = make_notification(kind=NotificationKind.CONFIRMATION)
    assert (n.priority, n.queue) == (Priority.HIGH, QueueRole.NOTIFICATIONS)


def test_cancellation__is_low_priority_on_the_low_queue() -> None:
    n = make_notification(kind=NotificationKind.CANCELLATION, reason="payment declined")
    assert (n.priority, n.queue) == (Priority.LOW, QueueRole.NOTIFICATIONS_LOW)


@pytest.mark.parametrize(
    "phone",
    ["14155550100", "+04155550100", "+1415555010012345", "+1 415 555 0100", "+1415abc0100", "+"],
)
def test_phone__not_e164__is_refused(phone: str) -> None:
    with pytest.raises(ValidationError, match=re.escape("E.164")):
        make_notification(phone=phone)


@pytest.mark.parametrize("phone", ["+14155550100", "+447911123456", "+33612345678"])
def test_phone__e164__is_kept(phone: str) -> None:
    assert make_notification(phone=phone).phone == phone


@pytest.mark.parametrize(
    "email", ["not-an-address", "buyer@", "@example.com", "buyer@localhost", "a b@example.com"]
)
def test_email__malformed__is_refused(email: str) -> None:
    with pytest.raises(ValidationError, match="email"):
        make_notification(email=email)


def test_addresses__are_optional_per_channel() -> None:
    n = make_notification(email=None)
    assert n.address(ChannelName.EMAIL) is None
    assert n.address(ChannelName.SMS) == n.phone


def test_confirmation__without_ticket_code__is_refused() -> None:
    with pytest.raises(ValidationError, match="ticket_code"):
        make_notification(ticket_code=None)


def test_unknown_field__is_refused_and_the_message_is_frozen() -> None:
    with pytest.raises(ValidationError, match="extra"):
        make_notification(coupon="FREE")
    n = make_notification()
    with pytest.raises(ValidationError, match="frozen"):
        n.order_id = "other"  # type: ignore[misc]


def test_render__confirmation_carries_the_ticket_and_the_charge() -> None:
    n = make_notification(order_id="o-9", quantity=1, amount_cents=5005)
    email = render_email(n)
    assert email.subject == "Your 1 ticket for gig-2025"
    assert email.text.splitlines() == [
        "Your purchase is confirmed.",
        "",
        "Event: gig-2025",
        "Tickets: 1",
        "Ticket code: T-o-9",
        "Charged: 50.05 USD",
        "Order: o-9",
        "",
        "Show the ticket code at the entrance.",
    ]
    assert render_sms(n) == "flashsale: 1 ticket for gig-2025 confirmed. Ticket code T-o-9."


def test_render__cancellation_says_nothing_was_charged_or_what_was_refunded() -> None:
    unpaid = make_notification(
        order_id="o-3",
        kind=NotificationKind.CANCELLATION,
        amount_cents=None,
        reason="payment declined",
    )
    email = render_email(unpaid)
    assert email.subject == "Your order for gig-2025 was cancelled"
    assert email.text.splitlines()[:2] == [
        "We could not complete your order for 2 tickets to gig-2025 (payment declined).",
        "You have not been charged.",
    ]
    assert render_sms(unpaid) == (
        "flashsale: your order for gig-2025 was cancelled (payment declined). "
        "You have not been charged."
    )
    refunded = make_notification(kind=NotificationKind.CANCELLATION, amount_cents=10000)
    assert "The 100.00 USD you paid has been refunded." in render_email(refunded).text
