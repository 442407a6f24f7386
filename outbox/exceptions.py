"""Errors of the outbox, under one root. ``ClientError`` is wrapped here, never leaked."""

from __future__ import annotations


class OutboxError(Exception):
    """Root of the errors raised by the outbox package."""


class RecordTooLarge(OutboxError, ValueError):
    """A record whose Celery message (256 KiB) or DynamoDB item (400 KB) would be too large."""


class TransactionTooLarge(OutboxError, ValueError):
    """A unit of work over DynamoDB's transaction limits (100 items, 4 MB) or with a key twice."""


class DuplicateEvent(OutboxError):
    """An outbox record with this aggregate id and sequence already exists."""


class TransactionConflict(OutboxError):
    """Another transaction touched the same items; the caller may re-read and retry."""


class TransactionFailed(OutboxError):
    """DynamoDB cancelled or refused the transaction for a reason no one registered."""


class LeaseLost(OutboxError):
    """This relay no longer holds a shard's lease: another relay has taken it over."""


class StoreError(OutboxError):
    """A DynamoDB call of the relay failed (wraps ``botocore`` errors)."""
