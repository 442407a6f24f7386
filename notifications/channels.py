"""The two ways a buyer is reached: e-mail through SES ``SendEmail``, SMS through SNS ``Publish``.

Each channel makes one API call and maps its failures to the two outcomes the caller acts on:

- ``ChannelUnavailable`` (transient): throttling, 5xx, a connection or read timeout, and any
  error this module does not know. Unknown errors count as transient on purpose: after the
  task's retries the message lands in the DLQ, where it can be redriven once the cause is fixed,
  instead of being recorded as undeliverable for good.
- ``UndeliverableAddress`` (permanent): the provider refused the address or the message.

A read timeout is the ambiguous case: the provider may have accepted the message before the
connection dropped. It is treated as transient, so the retry may send a second copy; see
``notifications.dedup`` for why that window cannot be closed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from notifications.exceptions import ChannelUnavailable, UndeliverableAddress
from notifications.messages import ChannelName, Notification, render_email, render_sms

if TYPE_CHECKING:
    from notifications.exceptions import NotificationError

CHARSET = "UTF-8"
SMS_TYPE_ATTRIBUTE = "AWS.SNS.SMS.SMSType"

TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "Throttled",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalError",
        "RequestTimeout",
        "RequestTimeoutException",
        # The account or configuration set was paused by SES: an operator must act, and the
        # message must still go out afterwards, so it is retried (and reaches the DLQ).
        "AccountSendingPausedException",
        "ConfigurationSetSendingPausedException",
    }
)
# SES: MessageRejected (address or content refused), InvalidParameterValue (malformed address).
# SNS: InvalidParameter / InvalidParameterValue (not a number it can publish to).
ADDRESS_CODES = frozenset({"MessageRejected", "InvalidParameterValue", "InvalidParameter"})


class Channel(Protocol):
    """Sends one notification to one address; returns the provider's message id."""

    name: ChannelName

    def send(self, notification: Notification, address: str) -> str: ...


def classify(
    exc: Exception, channel: ChannelName, *, sender: str | None = None
) -> NotificationError:
    """The error to raise for a failed provider call (raise it ``from exc``)."""
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return ChannelUnavailable(f"{channel}: provider unreachable: {exc}")
    if not isinstance(exc, ClientError):
        return ChannelUnavailable(f"{channel}: {type(exc).__name__}: {exc}")
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    message = str(error.get("Message", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if code in TRANSIENT_CODES or status >= 500:
        return ChannelUnavailable(f"{channel}: {code or status}: {message}")
    if code in ADDRESS_CODES:
        if sender and sender.lower() in message.lower():
            # Our own sender identity is unverified: a configuration problem, not the buyer's.
            return ChannelUnavailable(f"{channel}: sender {sender} refused: {message}")
        return UndeliverableAddress(f"{channel}: {code}: {message}")
    return ChannelUnavailable(f"{channel}: {code or status}: {message}")


class EmailChannel:
    """Plain-text e-mail from the verified sender identity through SES v1 ``SendEmail``."""

    name = ChannelName.EMAIL

    def __init__(self, ses: Any, sender: str) -> None:
        if not sender:
            raise ValueError("an e-mail channel needs a verified sender address")
        self._ses = ses
        self.sender = sender

    def send(self, notification: Notification, address: str) -> str:
        content = render_email(notification)
        try:
            response = self._ses.send_email(
                Source=self.sender,
                Destination={"ToAddresses": [address]},
                Message={
                    "Subject": {"Data": content.subject, "Charset": CHARSET},
                    "Body": {"Text": {"Data": content.text, "Charset": CHARSET}},
                },
            )
        except (ClientError, BotoConnectionError, HTTPClientError) as exc:
            raise classify(exc, self.name, sender=self.sender) from exc
        return str(response["MessageId"])


class SmsChannel:
    """SMS straight to a phone number through SNS ``Publish`` (no topic), as Transactional: SNS
    optimizes those for reliability (Promotional for cost), which fits a ticket someone paid for."""

    name = ChannelName.SMS

    def __init__(self, sns: Any) -> None:
        self._sns = sns

    def send(self, notification: Notification, address: str) -> str:
        try:
            response = self._sns.publish(
                PhoneNumber=address,
                Message=render_sms(notification),
                MessageAttributes={
                    SMS_TYPE_ATTRIBUTE: {"DataType": "String", "StringValue": "Transactional"}
                },
            )
        except (ClientError, BotoConnectionError, HTTPClientError) as exc:
            raise classify(exc, self.name) from exc
        return str(response["MessageId"])
