"""Errors of the payments package, under one root.

The split is the one the saga needs: ``ProviderUnavailable`` is transient (retry with the same
idempotency key, which makes the retry harmless); the others are permanent and mean a bug.
A declined card is not an error: it is a ``Charge`` with ``succeeded=False``.
"""

from __future__ import annotations


class PaymentError(Exception):
    """Root of the errors raised by the payments package."""


class ProviderUnavailable(PaymentError):
    """The provider did not answer usably (timeout, connection refused or reset, 5xx, 429)."""


class IdempotencyMismatch(PaymentError):
    """The idempotency key was used before with a different amount or currency."""


class InvalidPaymentRequest(PaymentError, ValueError):
    """The provider refused the request itself (missing key, bad amount): a caller's bug."""


class UnexpectedResponse(PaymentError):
    """The provider answered something this client does not understand."""
