"""``notifications.Notifier`` on moto's SES, SNS and DynamoDB: one message per (order, kind,
channel), one claim and one mark per notification whatever its channels, retries resend only
what is missing, provider errors mapped."""

from __future__ import annotations

import re

import pytest
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError
from conftest import TABLE, Aws
from notification_fakes import (
    BUYER_EMAIL,
    BUYER_PHONE,
    SENDER,
    client_error,
    make_notification,
    writes,
)

from notifications.channels import classify
from notifications.dedup import ChannelOutcome, Claim, Settled
from notifications.exceptions import ChannelUnavailable, DeliveryInProgress, UndeliverableAddress
from notifications.messages import ChannelName, NotificationKind
from notifications.notifier import (
    Delivery,
    DeliveryStatus,
    notifier_from_settings,
    reset_notifiers,
)

EMAIL, SMS = ChannelName.EMAIL, ChannelName.SMS


def statuses(deliveries: list[Delivery]) -> list[tuple[ChannelName, DeliveryStatus]]:
    return [(d.channel, d.status) for d in deliveries]


def test_send__three_times__reaches_ses_and_sns_once_each(aws: Aws) -> None:
    notifier = aws.notifier()
    n = make_notification()

    first = notifier.send(n)
    later = [notifier.send(n), notifier.send(n)]

    assert statuses(first) == [(EMAIL, DeliveryStatus.SENT), (SMS, DeliveryStatus.SENT)]
    for deliveries in later:
        assert statuses(deliveries) == [
            (EMAIL, DeliveryStatus.ALREADY_SENT),
            (SMS, DeliveryStatus.ALREADY_SENT),
        ]
        assert [d.message_id for d in deliveries] == [d.message_id for d in first]
    assert (len(aws.ses.calls), len(aws.sns.calls)) == (1, 1)
    assert aws.sent_email_count() == 1


def test_send__email_and_sms__one_claim_and_one_mark(aws: Aws) -> None:
    notifier = aws.notifier()
    n = make_notification()

    notifier.send(n)
    assert writes(aws.dynamodb_calls) == ["UpdateItem", "UpdateItem"]
    notifier.send(n)

    # The repeat: one claim, refused (the record is settled), no provider call.
    assert aws.dynamodb_calls == ["UpdateItem"] * 3
    assert (len(aws.ses.calls), len(aws.sns.calls)) == (1, 1)


def test_deliver__email_and_sms__one_claim_write_and_the_mark_left_to_the_caller(
    aws: Aws,
) -> None:
    notifier = aws.notifier()
    n = make_notification()

    outcome = notifier.deliver(n)

    assert statuses(outcome.deliveries) == [
        (EMAIL, DeliveryStatus.SENT),
        (SMS, DeliveryStatus.SENT),
    ]
    assert aws.dynamodb_calls == ["UpdateItem"]  # the claim, for both channels
    assert outcome.mark is not None
    with pytest.raises(DeliveryInProgress):
        notifier.deliver(n)  # until the mark is written the claim is held
    aws.dynamodb.transact_write_items(TransactItems=[outcome.mark.entry])
    again = notifier.deliver(n)
    assert again.mark is None
    assert [d.message_id for d in again.deliveries] == [d.message_id for d in outcome.deliveries]
    assert (len(aws.ses.calls), len(aws.sns.calls)) == (1, 1)


def test_deliver__settled_record__reports_the_recorded_outcomes(aws: Aws) -> None:
    notifier = aws.notifier()
    n = make_notification()
    first = notifier.send(n)

    settled = notifier.records.claim(n.order_id, n.kind)

    assert settled == Settled(
        settled.key,
        {EMAIL: ChannelOutcome.sent(str(first[0].message_id)),
         SMS: ChannelOutcome.sent(str(first[1].message_id))},
    )  # fmt: skip


def test_send__no_address_at_all__touches_nothing(aws: Aws) -> None:
    deliveries = aws.notifier().send(make_notification(email=None, phone=None))
    assert statuses(deliveries) == [
        (EMAIL, DeliveryStatus.NO_ADDRESS),
        (SMS, DeliveryStatus.NO_ADDRESS),
    ]
    assert aws.dynamodb_calls == [] and (len(aws.ses.calls), len(aws.sns.calls)) == (0, 0)


def test_send__unexpected_error_on_sms__records_the_email_sent_before_it(aws: Aws) -> None:
    notifier = aws.notifier()
    n = make_notification()
    aws.sns.fail_next(RuntimeError("a bug between us and SNS"))

    with pytest.raises(RuntimeError):
        notifier.send(n)
    retried = notifier.send(n)

    assert statuses(retried) == [(EMAIL, DeliveryStatus.ALREADY_SENT), (SMS, DeliveryStatus.SENT)]
    assert (aws.ses.succeeded, aws.sns.succeeded) == (1, 1)


def test_send__calls_ses_and_sns_as_the_providers_expect(aws: Aws) -> None:
    aws.notifier().send(make_notification(order_id="o-5"))
    (email,) = aws.ses.calls
    assert email["Source"] == SENDER
    assert email["Destination"] == {"ToAddresses": [BUYER_EMAIL]}
    assert email["Message"]["Subject"]["Data"] == "Your 2 tickets for gig-2025"
    (sms,) = aws.sns.calls
    assert sms["PhoneNumber"] == BUYER_PHONE
    assert sms["MessageAttributes"] == {
        "AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": "Transactional"}
    }
    assert "T-o-5" in sms["Message"]


def test_send__each_kind_is_its_own_message(aws: Aws) -> None:
    notifier = aws.notifier()
    notifier.send(make_notification(order_id="o-1"))
    cancel = make_notification(order_id="o-1", kind=NotificationKind.CANCELLATION, reason="x")
    assert statuses(notifier.send(cancel)) == [
        (EMAIL, DeliveryStatus.SENT),
        (SMS, DeliveryStatus.SENT),
    ]
    assert (aws.ses.succeeded, aws.sns.succeeded) == (2, 2)


def test_send__one_channel_throttled__retry_sends_only_that_channel(aws: Aws) -> None:
    notifier = aws.notifier()
    n = make_notification()
    aws.sns.fail_next(client_error("Throttling", "Rate exceeded"))

    with pytest.raises(ChannelUnavailable, match="not yet sent on sms: sms: Throttling"):
        notifier.send(n)
    assert (aws.ses.succeeded, aws.sns.succeeded) == (1, 0)
    # The claim, then one write recording the e-mail and releasing the claim.
    assert aws.dynamodb_calls == ["UpdateItem", "UpdateItem"]

    retried = notifier.send(n)  # at once: the lease was released

    assert statuses(retried) == [(EMAIL, DeliveryStatus.ALREADY_SENT), (SMS, DeliveryStatus.SENT)]
    assert aws.dynamodb_calls == ["UpdateItem"] * 4  # the claim and the mark
    assert (len(aws.ses.calls), len(aws.sns.calls)) == (1, 2)
    assert (aws.ses.succeeded, aws.sns.succeeded) == (1, 1)
    assert aws.sent_email_count() == 1


def test_send__crash_between_send_and_mark__resends_only_after_the_lease(aws: Aws) -> None:
    """The documented window: the provider accepted, the mark never happened."""
    notifier = aws.notifier()
    n = make_notification(phone=None)
    crashed = notifier.records.claim(n.order_id, n.kind)  # the crashed worker's claim
    assert isinstance(crashed, Claim)
    aws.ses.send_email(
        Source=SENDER,
        Destination={"ToAddresses": [BUYER_EMAIL]},
        Message={"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "t"}}},
    )

    with pytest.raises(DeliveryInProgress, match="being sent by another worker"):
        notifier.send(n)  # redelivered within the lease: nothing sent
    assert aws.ses.succeeded == 1
    aws.clock.advance(60)
    assert statuses(notifier.send(n)) == [
        (EMAIL, DeliveryStatus.SENT),
        (SMS, DeliveryStatus.NO_ADDRESS),
    ]
    assert aws.ses.succeeded == 2  # at least once in this window, never zero
    assert notifier.send(n)[0].status is DeliveryStatus.ALREADY_SENT
    late = notifier.records.mark(crashed, {EMAIL: ChannelOutcome.sent("late")})
    assert notifier.records.write(late) is False


def test_send__undeliverable_phone__is_recorded_and_never_retried(aws: Aws) -> None:
    notifier = aws.notifier()
    n = make_notification()
    aws.sns.fail_next(client_error("InvalidParameter", "Invalid parameter: PhoneNumber"))

    first = notifier.send(n)
    again = notifier.send(n)

    assert statuses(first) == [(EMAIL, DeliveryStatus.SENT), (SMS, DeliveryStatus.UNDELIVERABLE)]
    assert statuses(again) == [
        (EMAIL, DeliveryStatus.ALREADY_SENT),
        (SMS, DeliveryStatus.UNDELIVERABLE),
    ]
    assert len(aws.sns.calls) == 1


def test_send__no_address__nothing_sent_on_that_channel(aws: Aws) -> None:
    deliveries = aws.notifier().send(make_notification(email=None))
    assert statuses(deliveries) == [(EMAIL, DeliveryStatus.NO_ADDRESS), (SMS, DeliveryStatus.SENT)]
    assert (len(aws.ses.calls), len(aws.sns.calls)) == (0, 1)


def test_send__rate_limited_cancellation__is_deferred_without_calling_ses(aws: Aws) -> None:
    notifier = aws.notifier(email_rate=0.1, sms_rate=0.1)
    notifier.send(make_notification(order_id="o-1"))  # takes the only tokens
    cancel = make_notification(order_id="o-2", kind=NotificationKind.CANCELLATION)

    with pytest.raises(ChannelUnavailable, match=re.escape("next token in 10.00 s")):
        notifier.send(cancel)

    assert (len(aws.ses.calls), len(aws.sns.calls)) == (1, 1)
    aws.clock.advance(10)
    assert statuses(notifier.send(cancel)) == [
        (EMAIL, DeliveryStatus.SENT),
        (SMS, DeliveryStatus.SENT),
    ]


def test_send__unverified_sender__is_transient_not_the_buyers_fault(aws: Aws) -> None:
    notifier = aws.notifier(sender="nobody@flashsale.example.com")
    with pytest.raises(
        ChannelUnavailable, match=re.escape("sender nobody@flashsale.example.com refused")
    ):
        notifier.send(make_notification(phone=None))
    assert aws.sent_email_count() == 0


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (client_error("Throttling", "Maximum sending rate exceeded."), ChannelUnavailable),
        (client_error("Throttled"), ChannelUnavailable),
        (client_error("Whatever", status=503), ChannelUnavailable),
        (client_error("AccessDenied", status=403), ChannelUnavailable),
        (EndpointConnectionError(endpoint_url="https://email.invalid"), ChannelUnavailable),
        (ReadTimeoutError(endpoint_url="https://email.invalid"), ChannelUnavailable),
        (
            client_error("MessageRejected", "Email address is not verified: b@x.io"),
            UndeliverableAddress,
        ),
        (client_error("InvalidParameterValue", "Missing final '@domain'"), UndeliverableAddress),
        (client_error("InvalidParameter", "PhoneNumber"), UndeliverableAddress),
    ],
)
def test_classify__maps_provider_errors(error: Exception, expected: type[Exception]) -> None:
    assert type(classify(error, EMAIL, sender=SENDER)) is expected


def test_notifier_from_settings__one_per_process_from_the_settings(aws: Aws) -> None:
    reset_notifiers()
    try:
        notifier = notifier_from_settings(sender=SENDER)
        assert notifier_from_settings(sender=SENDER) is notifier
        assert notifier.limiters[EMAIL].rate == 14.0 and notifier.limiters[SMS].rate == 5.0
        assert notifier.records.table == TABLE == "flashsale-unit-idempotency"
        with pytest.raises(ValueError, match="no sender address"):
            notifier_from_settings()
    finally:
        reset_notifiers()
