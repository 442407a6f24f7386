"""Charging buyers: the ``PaymentProvider`` port, its HTTP and Stripe adapters, and a local
provider process (``python -m payments.provider``) with Stripe-like idempotency and faults.

The provider and the Stripe adapter are not imported here: ``-m payments.provider`` then runs
its module once, and the Stripe SDK stays an optional extra.
"""

from __future__ import annotations

from payments.client import (
    CHARGE_VOIDED,
    Charge,
    HttpPaymentProvider,
    PaymentProvider,
    Refund,
    RefundStatus,
    provider_from_settings,
)
from payments.exceptions import (
    IdempotencyMismatch,
    InvalidPaymentRequest,
    PaymentError,
    ProviderUnavailable,
    UnexpectedResponse,
)

__all__ = [
    "CHARGE_VOIDED",
    "Charge",
    "HttpPaymentProvider",
    "IdempotencyMismatch",
    "InvalidPaymentRequest",
    "PaymentError",
    "PaymentProvider",
    "ProviderUnavailable",
    "Refund",
    "RefundStatus",
    "UnexpectedResponse",
    "provider_from_settings",
]
