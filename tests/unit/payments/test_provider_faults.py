"""Injected faults: errors, hangs, a crash after charging, latency, and changing them live."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from payments.client import Charge, HttpPaymentProvider
from payments.control import ProviderControl
from payments.exceptions import ProviderUnavailable
from payments.provider import Faults, ProviderServer

ExpectedLedger = Callable[..., dict[str, int]]
StartProvider = Callable[..., ProviderServer]


def _charge(client: HttpPaymentProvider, key: str) -> Charge:
    return client.charge(key=key, amount=1_500, currency="usd", description="fault test")


def test_error_rate__answers_5xx_before_recording_and_client_sees_unavailable(
    http: httpx.Client, start_provider: StartProvider, expected_ledger: ExpectedLedger
) -> None:
    provider = start_provider(faults=Faults(error_rate=1.0))
    statuses = {
        http.post(
            f"{provider.url}/v1/charges",
            json={"amount": 1, "currency": "usd"},
            headers={"Idempotency-Key": f"k-{n}"},
        ).status_code
        for n in range(20)
    }
    with HttpPaymentProvider(provider.url, 5.0) as client, ProviderControl(provider.url) as control:
        with pytest.raises(ProviderUnavailable, match=r"HTTP 50[03]"):
            _charge(client, "o-1:charge")
        with pytest.raises(ProviderUnavailable):
            client.refund(key="o-1:charge")

        assert statuses == {500, 503}
        # The operator endpoints are never faulted.
        assert control.summary() == expected_ledger()


def test_timeout_rate__hangs_past_the_client_timeout_and_records_nothing(
    start_provider: StartProvider, expected_ledger: ExpectedLedger
) -> None:
    provider = start_provider(faults=Faults(timeout_rate=1.0))
    with HttpPaymentProvider(provider.url, 0.3) as client, ProviderControl(provider.url) as control:
        started = time.monotonic()
        with pytest.raises(ProviderUnavailable, match="Timeout"):
            _charge(client, "o-2:charge")

        assert time.monotonic() - started < 5
        assert control.summary() == expected_ledger()


def test_crash_after_charge__records_the_charge_then_answers_nothing(
    start_provider: StartProvider, crashes: list[float], expected_ledger: ExpectedLedger
) -> None:
    provider = start_provider(faults=Faults(crash_after_charge_rate=1.0))
    with HttpPaymentProvider(provider.url, 5.0) as client, ProviderControl(provider.url) as control:
        with pytest.raises(ProviderUnavailable, match="RemoteProtocolError"):
            _charge(client, "o-3:charge")
        [recorded] = control.charges()

        # The retry with the same key is a replay: the crash fault only follows a new charge.
        retried = _charge(client, "o-3:charge")

        assert len(crashes) == 1
        assert retried.charge_id == recorded["id"]
        assert control.summary() == expected_ledger(charges=1, replays=1, captured_cents=1_500)


def test_faults__change_at_runtime_and_read_back(
    client: HttpPaymentProvider, control: ProviderControl, expected_ledger: ExpectedLedger
) -> None:
    assert control.faults() == {
        "latency_ms": 0.0,
        "decline_rate": 0.0,
        "error_rate": 0.0,
        "timeout_rate": 0.0,
        "crash_after_charge_rate": 0.0,
    }
    _charge(client, "o-4:charge")

    assert control.set_faults(error_rate=1.0)["error_rate"] == 1.0
    with pytest.raises(ProviderUnavailable):
        _charge(client, "o-5:charge")

    after = control.set_faults(error_rate=0.0, decline_rate=1.0)
    declined = _charge(client, "o-5:charge")

    assert after == control.faults()
    assert after["decline_rate"] == 1.0
    assert after["error_rate"] == 0.0
    assert not declined.succeeded
    assert control.summary() == expected_ledger(charges=1, declines=1, captured_cents=1_500)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"error_rate": 1.5}, "between 0 and 1"),
        ({"latency_ms": -1}, ">= 0"),
        ({"timeout_rate": True}, "must be a number"),
        ({"timeout_rate": "0.5"}, "must be a number"),
        ({"explode_rate": 0.1}, "unknown fault 'explode_rate'"),
    ],
)
def test_faults__bad_values_are_refused_with_400(
    http: httpx.Client,
    provider: ProviderServer,
    control: ProviderControl,
    changes: dict[str, object],
    message: str,
) -> None:
    before = control.faults()
    answer = http.post(f"{provider.url}/_control/faults", json=changes)

    assert answer.status_code == 400
    assert message in answer.json()["error"]["message"]
    assert control.faults() == before


def test_latency__delays_each_provider_call(
    client: HttpPaymentProvider, control: ProviderControl
) -> None:
    control.set_faults(latency_ms=200)
    started = time.monotonic()
    _charge(client, "o-6:charge")
    slow = time.monotonic() - started

    control.set_faults(latency_ms=0)
    started = time.monotonic()
    _charge(client, "o-7:charge")
    fast = time.monotonic() - started

    assert slow >= 0.2
    assert fast < 0.2


def test_seed__makes_the_fault_dice_repeatable(
    http: httpx.Client, start_provider: StartProvider
) -> None:
    def pattern(server: ProviderServer) -> list[int]:
        return [
            http.post(
                f"{server.url}/v1/charges",
                json={"amount": 1, "currency": "usd"},
                headers={"Idempotency-Key": f"k-{n}"},
            ).status_code
            for n in range(30)
        ]

    first = start_provider(faults=Faults(error_rate=0.5), seed=11)
    second = start_provider(
        faults=Faults(error_rate=0.5), seed=11, ledger=first.ledger.path.with_name("other.db")
    )

    statuses = pattern(first)

    assert pattern(second) == statuses
    assert set(statuses) == {200, 500, 503}
