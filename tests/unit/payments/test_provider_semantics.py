"""The provider's Stripe-like semantics: idempotent charges, declines, refunds and voids."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from payments.client import CHARGE_VOIDED, Charge, HttpPaymentProvider, RefundStatus
from payments.control import ProviderControl
from payments.exceptions import IdempotencyMismatch, InvalidPaymentRequest
from payments.provider import Faults, ProviderServer, declines

ExpectedLedger = Callable[..., dict[str, int]]


def _charge(
    client: HttpPaymentProvider, key: str, amount: int = 2_500, currency: str = "usd"
) -> Charge:
    return client.charge(key=key, amount=amount, currency=currency, description=f"order {key}")


def _post(
    http: httpx.Client, server: ProviderServer, path: str, body: Any, **headers: str
) -> httpx.Response:
    return http.post(f"{server.url}{path}", json=body, headers=headers)


def test_charge__repeat_with_same_key_replays_the_first_result(
    http: httpx.Client,
    provider: ProviderServer,
    client: HttpPaymentProvider,
    control: ProviderControl,
    expected_ledger: ExpectedLedger,
) -> None:
    body = {"amount": 2_500, "currency": "usd", "description": "order o-1"}
    first = _post(http, provider, "/v1/charges", body, **{"Idempotency-Key": "o-1:charge"})
    second = _post(http, provider, "/v1/charges", body, **{"Idempotency-Key": "o-1:charge"})
    through_client = _charge(client, "o-1:charge")

    assert first.status_code == second.status_code == 200
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Idempotent-Replayed"] == "true"
    assert first.json() == second.json()
    assert first.json()["status"] == "succeeded"
    assert first.json()["decline_code"] is None
    assert first.json()["id"].startswith("ch_")
    assert through_client.charge_id == first.json()["id"]
    assert through_client.succeeded
    assert control.summary() == expected_ledger(charges=1, replays=2, captured_cents=2_500)


def test_charge__same_key_with_other_amount_or_currency_is_409(
    client: HttpPaymentProvider, control: ProviderControl, expected_ledger: ExpectedLedger
) -> None:
    _charge(client, "o-2:charge", amount=1_000)

    with pytest.raises(IdempotencyMismatch, match="o-2:charge"):
        _charge(client, "o-2:charge", amount=1_001)
    with pytest.raises(IdempotencyMismatch):
        _charge(client, "o-2:charge", amount=1_000, currency="eur")

    assert control.summary() == expected_ledger(
        charges=1, idempotency_conflicts=2, captured_cents=1_000
    )


def test_charge__conflict_answer_names_the_error_type(
    http: httpx.Client, provider: ProviderServer
) -> None:
    key = {"Idempotency-Key": "o-3:charge"}
    _post(http, provider, "/v1/charges", {"amount": 100, "currency": "usd"}, **key)
    conflict = _post(http, provider, "/v1/charges", {"amount": 200, "currency": "usd"}, **key)

    assert conflict.status_code == 409
    assert conflict.json()["error"]["type"] == "idempotency_error"


def test_declines__are_a_pure_function_of_the_key() -> None:
    keys = [f"order-{n}:charge" for n in range(1_000)]

    assert not any(declines(key, 0.0) for key in keys)
    assert all(declines(key, 1.0) for key in keys)
    assert [declines(key, 0.3) for key in keys] == [declines(key, 0.3) for key in keys]
    # A key declined at some rate stays declined at every higher rate.
    assert all(declines(key, 0.6) for key in keys if declines(key, 0.3))
    assert 250 <= sum(declines(key, 0.3) for key in keys) <= 350


def test_charge__declines_exactly_the_predicted_keys(
    start_provider: Callable[..., ProviderServer], expected_ledger: ExpectedLedger
) -> None:
    provider = start_provider(faults=Faults(decline_rate=0.5))
    keys = [f"order-{n}:charge" for n in range(40)]
    predicted = {key for key in keys if declines(key, 0.5)}
    assert 0 < len(predicted) < len(keys)  # both outcomes are exercised

    with HttpPaymentProvider(provider.url, 5.0) as client:
        charges = [_charge(client, key, amount=100) for key in keys]
        replays = [_charge(client, key, amount=100) for key in keys]

    assert {charge.key for charge in charges if not charge.succeeded} == predicted
    assert {charge.decline_code for charge in charges if not charge.succeeded} == {"card_declined"}
    assert replays == charges
    with ProviderControl(provider.url) as control:
        assert control.summary() == expected_ledger(
            charges=len(keys) - len(predicted),
            declines=len(predicted),
            replays=len(keys),
            captured_cents=100 * (len(keys) - len(predicted)),
        )


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        ({"amount": 100, "currency": "usd"}, {}, "Idempotency-Key header is required"),
        ({"amount": 0, "currency": "usd"}, {"Idempotency-Key": "k"}, "amount"),
        ({"amount": "100", "currency": "usd"}, {"Idempotency-Key": "k"}, "amount"),
        ({"amount": True, "currency": "usd"}, {"Idempotency-Key": "k"}, "amount"),
        ({"currency": "usd"}, {"Idempotency-Key": "k"}, "amount"),
        ({"amount": 100, "currency": "USD"}, {"Idempotency-Key": "k"}, "currency"),
        ({"amount": 100, "currency": "usd", "description": 7}, {"Idempotency-Key": "k"}, "desc"),
        ([100, "usd"], {"Idempotency-Key": "k"}, "JSON object"),
        ({"amount": 100}, {"Idempotency-Key": "k" * 256}, "longer than 255"),
    ],
)
def test_charge__bad_request_is_400_and_records_nothing(
    http: httpx.Client,
    provider: ProviderServer,
    control: ProviderControl,
    expected_ledger: ExpectedLedger,
    body: Any,
    headers: dict[str, str],
    message: str,
) -> None:
    answer = _post(http, provider, "/v1/charges", body, **headers)

    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "invalid_request_error"
    assert message in answer.json()["error"]["message"]
    assert control.summary() == expected_ledger()


def test_charge__body_that_is_not_json_is_400(http: httpx.Client, provider: ProviderServer) -> None:
    answer = http.post(
        f"{provider.url}/v1/charges", content=b"amount=1", headers={"Idempotency-Key": "k"}
    )

    assert answer.status_code == 400
    assert "not valid JSON" in answer.json()["error"]["message"]


def test_client__maps_400_to_invalid_payment_request(client: HttpPaymentProvider) -> None:
    with pytest.raises(InvalidPaymentRequest, match="amount must be a positive integer"):
        _charge(client, "o-4:charge", amount=-5)


def test_refund__succeeded_charge_is_refunded_once(
    client: HttpPaymentProvider, control: ProviderControl, expected_ledger: ExpectedLedger
) -> None:
    charge = _charge(client, "o-5:charge", amount=4_000)

    first = client.refund(key="o-5:charge")
    second = client.refund(key="o-5:charge")

    assert first.status is second.status is RefundStatus.REFUNDED
    assert first.refund_id is not None
    assert first.refund_id.startswith("re_")
    assert second.refund_id == first.refund_id
    assert control.summary() == expected_ledger(charges=1, refunds=1, refund_replays=1)
    [entry] = control.charges()
    assert entry["id"] == charge.charge_id
    assert entry["refunded"] is True
    assert entry["refund_id"] == first.refund_id


def test_refund__declined_charge_has_nothing_to_refund(
    start_provider: Callable[..., ProviderServer], expected_ledger: ExpectedLedger
) -> None:
    provider = start_provider(faults=Faults(decline_rate=1.0))
    with HttpPaymentProvider(provider.url, 5.0) as client, ProviderControl(provider.url) as control:
        assert not _charge(client, "o-6:charge").succeeded

        assert client.refund(key="o-6:charge").status is RefundStatus.NOTHING_TO_REFUND
        assert control.summary() == expected_ledger(declines=1)


def test_refund__before_any_charge_voids_the_key_and_refuses_the_late_charge(
    http: httpx.Client,
    provider: ProviderServer,
    client: HttpPaymentProvider,
    control: ProviderControl,
    expected_ledger: ExpectedLedger,
) -> None:
    assert client.refund(key="o-7:charge").status is RefundStatus.VOIDED

    late = _charge(client, "o-7:charge")
    raw = _post(
        http,
        provider,
        "/v1/charges",
        {"amount": 1, "currency": "usd"},
        **{"Idempotency-Key": "o-7:charge"},
    )
    again = client.refund(key="o-7:charge")

    assert not late.succeeded
    assert late.decline_code == CHARGE_VOIDED
    assert late.charge_id is None
    assert raw.status_code == 402
    assert raw.json()["error"]["type"] == "card_error"
    assert raw.json()["error"]["code"] == "charge_voided"
    assert again.status is RefundStatus.VOIDED
    assert control.summary() == expected_ledger(voids=1, refused_voided=2, refund_replays=1)
    assert control.charges() == []
    assert control.voided_keys() == ["o-7:charge"]


def test_refund__without_a_key_is_400(http: httpx.Client, provider: ProviderServer) -> None:
    answer = _post(http, provider, "/v1/refunds", {"key": ""})

    assert answer.status_code == 400
    assert "key" in answer.json()["error"]["message"]


def test_ledger__lists_each_charged_key_once_with_its_state(
    client: HttpPaymentProvider, control: ProviderControl
) -> None:
    for n in range(3):
        _charge(client, f"o-{n}:charge", amount=100 + n)
    _charge(client, "o-0:charge", amount=100)
    client.refund(key="o-1:charge")

    entries = {entry["key"]: entry for entry in control.charges()}

    assert sorted(entries) == ["o-0:charge", "o-1:charge", "o-2:charge"]
    assert {key: entry["refunded"] for key, entry in entries.items()} == {
        "o-0:charge": False,
        "o-1:charge": True,
        "o-2:charge": False,
    }
    assert {entry["status"] for entry in entries.values()} == {"succeeded"}
    assert control.summary()["captured_cents"] == 100 + 102


def test_ledger__survives_a_restart_and_replays_from_it(
    start_provider: Callable[..., ProviderServer],
    ledger_path: Path,
    expected_ledger: ExpectedLedger,
) -> None:
    first = start_provider()
    with HttpPaymentProvider(first.url, 5.0) as client:
        original = _charge(client, "o-8:charge")
    first.close()

    second = start_provider(ledger=ledger_path)
    with HttpPaymentProvider(second.url, 5.0) as client, ProviderControl(second.url) as control:
        assert _charge(client, "o-8:charge") == original
        assert control.summary() == expected_ledger(charges=1, replays=1, captured_cents=2_500)


def test_charge__concurrent_requests_with_one_key_charge_once(
    client: HttpPaymentProvider, control: ProviderControl, expected_ledger: ExpectedLedger
) -> None:
    results: list[Any] = []
    barrier = threading.Barrier(16)

    def buy() -> None:
        barrier.wait()
        results.append(_charge(client, "o-9:charge"))

    threads = [threading.Thread(target=buy) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 16
    assert len({charge.charge_id for charge in results}) == 1
    assert control.summary() == expected_ledger(charges=1, replays=15, captured_cents=2_500)


def test_health_and_unknown_route(
    http: httpx.Client, provider: ProviderServer, control: ProviderControl
) -> None:
    assert control.healthy()
    assert http.get(f"{provider.url}/v1/nothing").status_code == 404
