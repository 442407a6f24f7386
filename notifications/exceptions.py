"""Errors of the notifications package, under one root. ``ClientError`` is wrapped here.

Two families, because the caller (the notification task) must decide between retrying and
giving up: ``TransientNotificationError`` is worth a retry with backoff; ``UndeliverableAddress``
never is.
"""

from __future__ import annotations


class NotificationError(Exception):
    """Root of the errors raised by the notifications package."""


class TransientNotificationError(NotificationError):
    """Nothing was lost and a later attempt may succeed: retry with backoff."""


class ChannelUnavailable(TransientNotificationError):
    """SES or SNS throttled, failed (5xx) or could not be reached; for a whole notification,
    at least one channel is still unsent (the others are recorded as sent)."""


class RateLimited(ChannelUnavailable):
    """This process's token bucket for the channel had no token within the allowed wait."""


class DeliveryInProgress(TransientNotificationError):
    """Another worker holds an unexpired claim on this delivery; it will finish or expire,
    ``retry_after`` seconds from now at the latest."""

    def __init__(self, message: str, *, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ClaimLost(TransientNotificationError):
    """Our claim's lease ran out and another worker took the notification over, so our mark
    was refused; the retry finds the record settled by that worker, or still in its hands."""


class DeliveryStoreUnavailable(TransientNotificationError):
    """A DynamoDB call on the delivery records failed (wraps ``botocore`` errors)."""


class UndeliverableAddress(NotificationError):
    """The provider refused the address or message for good: retrying cannot help."""
