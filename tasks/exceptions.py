"""Errors of the purchase path, under one root."""

from __future__ import annotations


class FlashsaleTaskError(Exception):
    """Root of the errors raised by the tasks package."""


class InvalidPurchaseRequest(FlashsaleTaskError, ValueError):
    """A purchase request that fails validation at the intake; it is never enqueued."""


class EnqueueFailed(FlashsaleTaskError):
    """SQS refused to take purchase messages; the requests stay buffered at the intake."""


class ConcurrentAllocation(FlashsaleTaskError):
    """Another writer changed the inventory or an order between our read and our write."""


class EventAlreadyExists(FlashsaleTaskError):
    """An event with this id is already on sale."""


class OrderNotHeld(FlashsaleTaskError):
    """A saga step expected the order's seat to be held, and it is not (a bug, not a race:
    the saga's version check runs first)."""
