"""Buyer notifications: e-mail through SES and SMS through SNS, each sent at most once per
(order, message kind, channel) outside one documented crash window, rate-limited per channel."""

from __future__ import annotations

from notifications.channels import EmailChannel, SmsChannel
from notifications.dedup import DeliveryRecords, delivery_key
from notifications.exceptions import (
    ChannelUnavailable,
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
from notifications.notifier import Delivery, DeliveryStatus, Notifier, notifier_from_settings
from notifications.ratelimit import TokenBucket

__all__ = [
    "ChannelName",
    "ChannelUnavailable",
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
