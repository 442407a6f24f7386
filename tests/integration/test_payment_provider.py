"""The payment provider as its own process: a crash right after charging loses no charge and
makes none twice, because the ledger outlives the process and the retry reuses the key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.local.fleet import Fleet, provider_url
from infra.local.ports import free_port
from payments.client import HttpPaymentProvider
from payments.control import ProviderControl
from payments.exceptions import ProviderUnavailable
from payments.provider import CRASH_EXIT_CODE

pytestmark = pytest.mark.integration


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(environment={}, log_dir=tmp_path / "logs")
    yield fleet
    fleet.stop_all()


def test_provider__crash_after_charge_then_restart_replays_the_one_charge(
    fleet: Fleet, tmp_path: Path
) -> None:
    port = free_port()
    ledger = tmp_path / "provider-ledger.db"
    crashing = fleet.start_provider(
        "provider-crashing", port=port, ledger=ledger, args=["--crash-after-charge-rate", "1"]
    )

    with HttpPaymentProvider(provider_url(port), timeout_seconds=5.0) as client:
        with pytest.raises(ProviderUnavailable):
            client.charge(key="order-1:charge", amount=4_200, currency="usd", description="o-1")
        assert crashing.popen.wait(timeout=10) == CRASH_EXIT_CODE
        assert '"provider.crash_after_charge"' in crashing.log.read_text()

        fleet.start_provider("provider", port=port, ledger=ledger)
        retried = client.charge(
            key="order-1:charge", amount=4_200, currency="usd", description="o-1"
        )

    with ProviderControl(provider_url(port)) as control:
        [recorded] = control.charges()
        summary = control.summary()
    assert retried.succeeded
    assert retried.charge_id == recorded["id"]
    assert recorded["key"] == "order-1:charge"
    assert summary == {
        "charges": 1,
        "declines": 0,
        "refunds": 0,
        "voids": 0,
        "replays": 1,
        "refund_replays": 0,
        "idempotency_conflicts": 0,
        "refused_voided": 0,
        "captured_cents": 4_200,
    }
    assert fleet.stop("provider") == 0  # SIGTERM: a clean stop
