"""``PaymentProvider`` on Stripe: one PaymentIntent per key, created and confirmed at once.

Needs the optional extra (``pip install 'flashsale[stripe]'``); the SDK is imported only when
this adapter is used. Where Stripe differs from the local provider, and what is done here:

- **Keys expire.** Stripe keeps an idempotency key for 24 hours, the local provider forever;
  a charge retried later than that creates a second PaymentIntent. The saga must give up on a
  charge (DLQ) well within 24 hours.
- **Replays compare every parameter** (Stripe answers ``idempotency_error``), not only the
  amount and currency; a decline is a 402 ``CardError``, replayed as such.
- **Void is cancelling the PaymentIntent.** A compensation for a key Stripe has not seen yet
  creates an unconfirmed intent under that key, marked ``flashsale_void``, and cancels it. The
  charge arriving later with the key then gets ``idempotency_error`` (other parameters), which
  is turned into a ``charge_voided`` decline once the marker is found.
- **Finding a key's intent uses the Search API** (``metadata['flashsale_key']``), which lags
  writes by up to about a minute and is not offered in every region. Whenever search cannot
  see an intent that must exist, the call raises ``ProviderUnavailable``: retry later.
- **No buyer is present**: an intent that wants more from them (3-D Secure) is reported as a
  decline with code ``requires_action`` and cancelled by a refund.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import structlog

from payments.client import CHARGE_VOIDED, Charge, Refund, RefundStatus
from payments.exceptions import (
    IdempotencyMismatch,
    InvalidPaymentRequest,
    PaymentError,
    ProviderUnavailable,
)

log = structlog.get_logger("payments.stripe")

KEY_FIELD = "flashsale_key"
VOID_FIELD = "flashsale_void"
VOID_AMOUNT = 50  # Stripe's minimum for usd; the placeholder is never confirmed
_CANCELLABLE = {
    "requires_payment_method",
    "requires_confirmation",
    "requires_action",
    "requires_capture",
}


def _stripe() -> ModuleType:
    import stripe

    return stripe


class StripePaymentProvider:
    """Takes a ``stripe.StripeClient`` (or anything with its ``v1`` services)."""

    def __init__(self, client: Any, *, payment_method: str = "pm_card_visa") -> None:
        self._v1 = client.v1
        self._payment_method = payment_method

    @classmethod
    def from_api_key(cls, api_key: str, **kwargs: Any) -> StripePaymentProvider:
        # No SDK retries: the caller retries with the same key and owns the backoff.
        return cls(_stripe().StripeClient(api_key, max_network_retries=0), **kwargs)

    def charge(self, *, key: str, amount: int, currency: str, description: str) -> Charge:
        stripe = _stripe()
        params = {
            "amount": amount,
            "currency": currency,
            "description": description,
            "confirm": True,
            "payment_method": self._payment_method,
            "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
            "metadata": {KEY_FIELD: key},
        }
        try:
            intent = self._v1.payment_intents.create(
                params=params, options={"idempotency_key": key}
            )
        except stripe.CardError as exc:
            error = exc.error
            declined = getattr(error, "payment_intent", None)
            code = getattr(error, "decline_code", None) or exc.code or "card_declined"
            log.info("payments.stripe_declined", key=key, decline_code=code)
            return Charge(key, declined.id if declined else None, amount, currency, False, code)
        except stripe.IdempotencyError as exc:
            if self._voided(key):
                return Charge(key, None, amount, currency, False, CHARGE_VOIDED)
            raise IdempotencyMismatch(f"{key}: {exc.user_message}") from exc
        except stripe.StripeError as exc:
            raise _translate(exc, key) from exc
        succeeded = intent.status == "succeeded"
        log.info("payments.stripe_charge", key=key, intent=intent.id, status=intent.status)
        return Charge(
            key, intent.id, amount, currency, succeeded, None if succeeded else intent.status
        )

    def refund(self, *, key: str) -> Refund:
        stripe = _stripe()
        try:
            intent = self._find(key)
            if intent is None:
                return self._void_unseen(key)
            if _metadata(intent, VOID_FIELD):
                self._cancel(key, intent)
                return Refund(key, RefundStatus.VOIDED)
            if intent.status == "succeeded":
                refund = self._v1.refunds.create(
                    params={"payment_intent": intent.id},
                    options={"idempotency_key": f"{key}:refund"},
                )
                log.info("payments.stripe_refund", key=key, intent=intent.id, refund=refund.id)
                return Refund(key, RefundStatus.REFUNDED, refund.id)
            if intent.status in _CANCELLABLE or intent.status == "canceled":
                self._cancel(key, intent)  # a declined intent: nothing was captured
                return Refund(key, RefundStatus.NOTHING_TO_REFUND)
            raise ProviderUnavailable(f"{key}: intent {intent.id} is {intent.status}; retry")
        except stripe.StripeError as exc:
            raise _translate(exc, key) from exc

    def _void_unseen(self, key: str) -> Refund:
        """Take the key with a cancelled placeholder so a late charge with it is refused."""
        stripe = _stripe()
        try:
            placeholder = self._v1.payment_intents.create(
                params={
                    "amount": VOID_AMOUNT,
                    "currency": "usd",
                    "payment_method_types": ["card"],
                    "metadata": {KEY_FIELD: key, VOID_FIELD: "true"},
                },
                options={"idempotency_key": key},
            )
        except stripe.IdempotencyError as exc:
            # A real charge holds the key but search does not show it yet.
            raise ProviderUnavailable(f"{key}: charged but not yet searchable") from exc
        self._cancel(key, placeholder)
        log.info("payments.stripe_void", key=key, intent=placeholder.id)
        return Refund(key, RefundStatus.VOIDED)

    def _cancel(self, key: str, intent: Any) -> None:
        if intent.status != "canceled":
            self._v1.payment_intents.cancel(intent.id, options={"idempotency_key": f"{key}:cancel"})

    def _voided(self, key: str) -> bool:
        intent = self._find(key)
        if intent is None:
            raise ProviderUnavailable(f"{key}: used before but not yet searchable")
        return bool(_metadata(intent, VOID_FIELD))

    def _find(self, key: str) -> Any | None:
        stripe = _stripe()
        escaped = key.replace("\\", "\\\\").replace("'", "\\'")
        try:
            result = self._v1.payment_intents.search(
                params={"query": f"metadata['{KEY_FIELD}']:'{escaped}'", "limit": 10}
            )
        except stripe.StripeError as exc:
            raise _translate(exc, key) from exc
        return result.data[0] if result.data else None


def _metadata(intent: Any, name: str) -> str | None:
    try:
        return str(intent.metadata[name])
    except (AttributeError, KeyError, TypeError):
        return None


def _translate(exc: Exception, key: str) -> PaymentError:
    """Stripe's errors as this package's: transient ones become ``ProviderUnavailable``."""
    stripe = _stripe()
    # APIError covers 5xx and 409 "idempotency key in use" (a request with the key in flight).
    if isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError | stripe.APIError):
        return ProviderUnavailable(f"{key}: {exc!r}")
    if isinstance(exc, stripe.IdempotencyError):
        return IdempotencyMismatch(f"{key}: {exc!r}")
    return InvalidPaymentRequest(f"{key}: {exc!r}")
