"""Buyer notifications against the local stack: real SES ``SendEmail`` and SNS SMS ``Publish``,
read back from what LocalStack recorded as sent (``infra.local.sent_messages``); deduplication
records in the stack's idempotency table (moto's DynamoDB)."""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from polling import wait_until

from flashsale.names import Output, Table
from flashsale.settings import OUTPUTS_FILE_ENV, Settings
from infra.local.sent_messages import sent_emails, sent_sms
from notifications import (
    ChannelName,
    DeliveryStatus,
    Notification,
    NotificationKind,
    Notifier,
)

pytestmark = pytest.mark.integration

EMAIL, SMS = ChannelName.EMAIL, ChannelName.SMS


@pytest.fixture(scope="module")
def notifier(environ: dict[str, str], settings: Settings) -> Notifier:
    # The sender is a stack output; read it from the outputs file until Settings exposes it.
    outputs = json.loads(Path(environ[OUTPUTS_FILE_ENV]).read_text())
    return Notifier(
        boto3.client("dynamodb"),
        boto3.client("ses"),
        boto3.client("sns"),
        idempotency_table=settings.table(Table.IDEMPOTENCY),
        sender=outputs[Output.SENDER_EMAIL],
        email_rate=settings.email_per_second,
        sms_rate=settings.sms_per_second,
    )


def buyer() -> dict[str, Any]:
    """Addresses no other test uses, so the mailbox counts are this test's alone."""
    return {
        "email": f"buyer-{uuid.uuid4().hex[:12]}@example.com",
        "phone": f"+1555{random.randrange(10**7):07d}",
    }


def notification(order_id: str, kind: NotificationKind, **fields: Any) -> Notification:
    extra = {"ticket_code": f"T-{order_id[:8]}"} if kind is NotificationKind.CONFIRMATION else {}
    return Notification(
        order_id=order_id,
        kind=kind,
        event_id="gig-integration",
        quantity=2,
        amount_cents=10000,
        **(extra | fields),
    )


def test_notification__sent_three_times__reaches_each_channel_once(notifier: Notifier) -> None:
    addresses = buyer()
    n = notification(str(uuid.uuid4()), NotificationKind.CONFIRMATION, **addresses)

    runs = [notifier.send(n) for _ in range(3)]

    assert [[(d.channel, d.status) for d in run] for run in runs] == [
        [(EMAIL, DeliveryStatus.SENT), (SMS, DeliveryStatus.SENT)],
        [(EMAIL, DeliveryStatus.ALREADY_SENT), (SMS, DeliveryStatus.ALREADY_SENT)],
        [(EMAIL, DeliveryStatus.ALREADY_SENT), (SMS, DeliveryStatus.ALREADY_SENT)],
    ]
    (email,) = sent_emails(to=addresses["email"])
    assert email["Id"] == runs[0][0].message_id
    assert email["Subject"] == f"Your 2 tickets for {n.event_id}"
    assert f"Ticket code: {n.ticket_code}" in email["Body"]["text_part"]
    # LocalStack records an SMS after Publish returns; SNS was called once (statuses above).
    wait_until(lambda: len(sent_sms(addresses["phone"])) >= 1, 30, "the SMS to be recorded")
    (sms,) = sent_sms(addresses["phone"])
    assert sms["MessageId"] == runs[0][1].message_id
    assert f"Ticket code {n.ticket_code}" in sms["Message"]
    assert sms["MessageAttributes"] == {
        "AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": "Transactional"}
    }


def test_notification__one_message_per_order_kind_and_channel(notifier: Notifier) -> None:
    addresses = buyer()
    order_id = str(uuid.uuid4())
    confirmation = notification(order_id, NotificationKind.CONFIRMATION, **addresses)
    cancellation = notification(
        order_id, NotificationKind.CANCELLATION, reason="hold expired", **addresses
    )

    for n in (confirmation, cancellation, confirmation, cancellation, cancellation):
        notifier.send(n)

    subjects = sorted(m["Subject"] for m in sent_emails(to=addresses["email"]))
    assert subjects == [
        "Your 2 tickets for gig-integration",
        "Your order for gig-integration was cancelled",
    ]
    wait_until(lambda: len(sent_sms(addresses["phone"])) >= 2, 30, "both SMS to be recorded")
    texts = sorted(m["Message"] for m in sent_sms(addresses["phone"]))
    assert len(texts) == 2
    assert "confirmed" in texts[0] and "cancelled (hold expired)" in texts[1]
