"""The HTTP client's error mapping: transient failures retry, permanent ones are bugs."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from flashsale.settings import get_settings
from infra.local.ports import free_port
from payments import client as client_module
from payments.client import (
    CHARGE_VOIDED,
    Charge,
    HttpPaymentProvider,
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

Handler = Callable[[httpx.Request], httpx.Response]

CHARGED = {
    "id": "ch_1",
    "key": "o-1:charge",
    "amount": 900,
    "currency": "usd",
    "status": "succeeded",
    "decline_code": None,
}


def _provider(handler: Handler) -> HttpPaymentProvider:
    return HttpPaymentProvider("http://provider.test", 1.0, transport=httpx.MockTransport(handler))


def _charge(provider: HttpPaymentProvider) -> Charge:
    return provider.charge(key="o-1:charge", amount=900, currency="usd", description="order o-1")


def test_charge__sends_the_key_header_and_body_and_reads_the_charge() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=CHARGED)

    charge = _charge(_provider(handler))

    [request] = seen
    assert request.method == "POST"
    assert request.url.path == "/v1/charges"
    assert request.headers["Idempotency-Key"] == "o-1:charge"
    assert json.loads(request.content) == {
        "amount": 900,
        "currency": "usd",
        "description": "order o-1",
    }
    assert charge == Charge("o-1:charge", "ch_1", 900, "usd", True, None)


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_charge__throttling_and_5xx_are_transient(status: int) -> None:
    provider = _provider(lambda _request: httpx.Response(status, json={"error": {}}))

    with pytest.raises(ProviderUnavailable, match=f"HTTP {status}"):
        _charge(provider)
    with pytest.raises(ProviderUnavailable):
        provider.refund(key="o-1:charge")


@pytest.mark.parametrize(
    "error",
    [
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.ConnectTimeout("slow"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadError("reset"),
    ],
)
def test_charge__transport_failures_are_transient(error: httpx.TransportError) -> None:
    def handler(_request: httpx.Request) -> httpx.Response:
        raise error

    with pytest.raises(ProviderUnavailable) as raised:
        _charge(_provider(handler))
    assert raised.value.__cause__ is error


def test_charge__connection_refused_by_a_closed_port_is_transient() -> None:
    with (
        HttpPaymentProvider(f"http://127.0.0.1:{free_port()}", 1.0) as provider,
        pytest.raises(ProviderUnavailable, match="ConnectError"),
    ):
        _charge(provider)


def test_charge__409_is_an_idempotency_mismatch() -> None:
    body = {"error": {"type": "idempotency_error", "message": "used with amount 800 usd"}}
    provider = _provider(lambda _request: httpx.Response(409, json=body))

    with pytest.raises(IdempotencyMismatch, match="used with amount 800 usd"):
        _charge(provider)


def test_charge__voided_key_is_a_declined_charge_not_an_error() -> None:
    body = {"error": {"type": "card_error", "code": "charge_voided", "message": "voided"}}
    provider = _provider(lambda _request: httpx.Response(402, json=body))

    assert _charge(provider) == Charge("o-1:charge", None, 900, "usd", False, CHARGE_VOIDED)


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, {"error": {"message": "amount must be positive"}}, InvalidPaymentRequest),
        (404, {"error": {"message": "no route"}}, InvalidPaymentRequest),
        (402, {"error": {"type": "card_error", "code": "expired_card"}}, UnexpectedResponse),
        (200, ["not", "an", "object"], UnexpectedResponse),
        (200, {"id": "ch_1"}, UnexpectedResponse),
    ],
)
def test_charge__permanent_failures(status: int, body: object, error: type[PaymentError]) -> None:
    provider = _provider(lambda _request: httpx.Response(status, json=body))

    with pytest.raises(error):
        _charge(provider)


def test_charge__body_that_is_not_json_is_unexpected() -> None:
    provider = _provider(lambda _request: httpx.Response(200, content=b"<html>"))

    with pytest.raises(UnexpectedResponse, match="not JSON"):
        _charge(provider)


@pytest.mark.parametrize("status", list(RefundStatus))
def test_refund__reads_each_status(status: RefundStatus) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": "re_1", "key": "o-1:charge", "status": status})

    refund = _provider(handler).refund(key="o-1:charge")

    assert refund == Refund("o-1:charge", status, "re_1")
    assert seen[0].url.path == "/v1/refunds"
    assert json.loads(seen[0].content) == {"key": "o-1:charge"}


def test_refund__unknown_status_is_unexpected() -> None:
    provider = _provider(lambda _request: httpx.Response(200, json={"status": "pending"}))

    with pytest.raises(UnexpectedResponse):
        provider.refund(key="o-1:charge")


def test_errors__share_one_root() -> None:
    for error in (ProviderUnavailable, IdempotencyMismatch, InvalidPaymentRequest):
        assert issubclass(error, PaymentError)


def test_provider_from_settings__one_client_per_process_and_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLASHSALE_PAYMENT_PROVIDER_URL", "http://127.0.0.1:4999")
    monkeypatch.setenv("FLASHSALE_PAYMENT_TIMEOUT_SECONDS", "2.5")
    get_settings.cache_clear()
    monkeypatch.setattr(client_module, "_providers", {})

    first = provider_from_settings()
    again = provider_from_settings()
    monkeypatch.setattr(client_module.os, "getpid", lambda: -1)  # as in a forked child
    in_child = provider_from_settings()

    assert first is again
    assert first.base_url == "http://127.0.0.1:4999"
    assert first._http.timeout == httpx.Timeout(2.5)
    assert in_child is not first
    assert in_child.base_url == first.base_url
