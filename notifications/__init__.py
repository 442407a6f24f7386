"""Buyer notifications: e-mail through SES and SMS through SNS, each sent at most once per
(order, message kind, channel) outside one documented crash window, rate-limited per channel;
one delivery record per (order, message kind) for all channels."""

from __future__ import annotations

from notifications.channels import EmailChannel, SmsChannel
from notifications.dedup import DeliveryRecords, delivery_key
from notifications.exceptions import (
    ChannelUnavailable,
    ClaimLost,
    DeliveryInProgress,
    DeliveryStoreUnavailable,
    NotificationError,
    RateLimited,
    TransientNotificationError,
    UndeliverableAddress,
)
from notifications.messages import (
    ChannelName,
    Notification,
    NotificationKind,
    Priority,
    render_email,
    render_sms,
)
from notifications.notifier import (
    Delivery,
    DeliveryStatus,
    Notifier,
    Outcome,
    notifier_from_settings,
)
from notifications.ratelimit import TokenBucket

__all__ = [
    "ChannelName",
    "ChannelUnavailable",
    "ClaimLost",
    "Delivery",
    "DeliveryInProgress",
    "DeliveryRecords",
    "DeliveryStatus",
    "DeliveryStoreUnavailable",
    "EmailChannel",
    "Notification",
    "NotificationError",
    "NotificationKind",
    "Notifier",
    "Outcome",
    "Priority",
    "RateLimited",
    "SmsChannel",
    "TokenBucket",
    "TransientNotificationError",
    "UndeliverableAddress",
    "delivery_key",
    "notifier_from_settings",
    "render_email",
    "render_sms",
]
