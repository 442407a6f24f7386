"""The port the saga charges through, and its adapter for the HTTP provider.

Every call carries the order's idempotency key, so the caller's answer to any
``ProviderUnavailable`` is the same: retry with the same key. A declined card (or a charge
refused because a compensation voided its key first) is a ``Charge`` with
``succeeded=False``, a business outcome, not an exception.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Any, Protocol, Self

import httpx
import structlog

from flashsale.settings import get_settings
from payments.exceptions import (
    IdempotencyMismatch,
    InvalidPaymentRequest,
    ProviderUnavailable,
    UnexpectedResponse,
)

log = structlog.get_logger("payments.client")

CHARGE_VOIDED = "charge_voided"


class RefundStatus(StrEnum):
    REFUNDED = "refunded"
    VOIDED = "voided"  # no charge existed: the key is voided, a later charge is refused
    NOTHING_TO_REFUND = "nothing_to_refund"  # the charge was declined


@dataclass(frozen=True)
class Charge:
    """The provider's decision for one key. ``charge_id`` is None only for a voided key."""

    key: str
    charge_id: str | None
    amount: int
    currency: str
    succeeded: bool
    decline_code: str | None


@dataclass(frozen=True)
class Refund:
    key: str
    status: RefundStatus
    refund_id: str | None = None


class PaymentProvider(Protocol):
    """Charges and refunds by idempotency key; both are safe to repeat with the same key.

    Raises ``ProviderUnavailable`` (transient, retry with the same key) and
    ``IdempotencyMismatch`` / ``InvalidPaymentRequest`` (permanent: a bug).
    """

    def charge(self, *, key: str, amount: int, currency: str, description: str) -> Charge: ...

    def refund(self, *, key: str) -> Refund: ...


class HttpApi:
    """An HTTP client of the provider's API with one connection pool, closed on exit."""

    def __init__(
        self,
        base_url: str,
        timeout_seconds: float,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        self._http = httpx.Client(
            base_url=base_url,
            timeout=timeout_seconds,
            transport=transport,
            headers={"User-Agent": "flashsale-payments"},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class HttpPaymentProvider(HttpApi):
    """``PaymentProvider`` over ``payments.provider``'s HTTP API, one connection pool per
    instance (thread-safe; ``provider_from_settings`` keeps one per process)."""

    def charge(self, *, key: str, amount: int, currency: str, description: str) -> Charge:
        response = self._post(
            "/v1/charges",
            {"amount": amount, "currency": currency, "description": description},
            key=key,
            headers={"Idempotency-Key": key},
        )
        if response.status_code == httpx.codes.PAYMENT_REQUIRED:
            error = _body(response).get("error") or {}
            if error.get("code") == CHARGE_VOIDED:
                log.info("payments.charge_voided", key=key)
                return Charge(key, None, amount, currency, False, CHARGE_VOIDED)
            raise UnexpectedResponse(f"charge {key}: 402 without charge_voided: {error}")
        body = self._ok(response, key)
        try:
            charge = Charge(
                key=str(body["key"]),
                charge_id=str(body["id"]),
                amount=int(body["amount"]),
                currency=str(body["currency"]),
                succeeded=body["status"] == "succeeded",
                decline_code=body.get("decline_code"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UnexpectedResponse(f"charge {key}: unexpected body {body!r}") from exc
        log.info(
            "payments.charge",
            key=key,
            charge_id=charge.charge_id,
            succeeded=charge.succeeded,
            replayed=response.headers.get("Idempotent-Replayed") == "true",
        )
        return charge

    def refund(self, *, key: str) -> Refund:
        response = self._post("/v1/refunds", {"key": key}, key=key)
        body = self._ok(response, key)
        try:
            refund = Refund(key=key, status=RefundStatus(body["status"]), refund_id=body.get("id"))
        except (KeyError, TypeError, ValueError) as exc:
            raise UnexpectedResponse(f"refund {key}: unexpected body {body!r}") from exc
        log.info("payments.refund", key=key, status=str(refund.status))
        return refund

    def _post(
        self, path: str, payload: dict[str, Any], *, key: str, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        try:
            response = self._http.post(path, json=payload, headers=headers)
        except httpx.TransportError as exc:  # timeouts, refused, reset, dropped mid-answer
            log.warning("payments.unavailable", key=key, path=path, error=repr(exc))
            raise ProviderUnavailable(f"{path} for {key}: {exc!r}") from exc
        status = response.status_code
        if status == httpx.codes.TOO_MANY_REQUESTS or status >= 500:
            log.warning("payments.unavailable", key=key, path=path, status=status)
            raise ProviderUnavailable(f"{path} for {key}: HTTP {status}")
        return response

    @staticmethod
    def _ok(response: httpx.Response, key: str) -> dict[str, Any]:
        status = response.status_code
        if status == httpx.codes.OK:
            return _body(response)
        message = (_body(response).get("error") or {}).get("message", response.text)
        if status == httpx.codes.CONFLICT:
            raise IdempotencyMismatch(f"{key}: {message}")
        raise InvalidPaymentRequest(f"{key}: HTTP {status}: {message}")


def _body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as exc:
        raise UnexpectedResponse(f"HTTP {response.status_code}: not JSON") from exc
    if not isinstance(body, dict):
        raise UnexpectedResponse(f"HTTP {response.status_code}: not a JSON object")
    return body


_providers: dict[tuple[int, str, float], HttpPaymentProvider] = {}
_providers_lock = threading.Lock()


def provider_from_settings() -> HttpPaymentProvider:
    """The process's client for the configured provider, created on first use.

    Keyed by process id too: a pool inherited through ``fork`` (Celery's prefork children)
    would share its sockets with the parent.
    """
    settings = get_settings()
    cache_key = (os.getpid(), settings.payment_provider_url, settings.payment_timeout_seconds)
    with _providers_lock:
        provider = _providers.get(cache_key)
        if provider is None:
            provider = HttpPaymentProvider(
                settings.payment_provider_url, settings.payment_timeout_seconds
            )
            _providers[cache_key] = provider
        return provider
