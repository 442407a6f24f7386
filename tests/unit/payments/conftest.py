"""The payment provider served in a thread of the test process, on a free port.

``crash_after_charge`` cannot ``os._exit`` here: the servers get a crash action that records
the call and returns, and the provider then drops the connection without an answer, as a
crashed process would (the real exit is covered by the integration test).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from infra.local.ports import free_port
from payments.client import HttpPaymentProvider
from payments.control import ProviderControl
from payments.provider import Faults, ProviderServer, serve_in_thread

StartProvider = Callable[..., ProviderServer]


@pytest.fixture
def crashes() -> list[float]:
    """When the in-process providers "crashed" (``time.monotonic()`` per crash)."""
    return []


@pytest.fixture(scope="session")
def http() -> Iterator[httpx.Client]:
    """A raw HTTP client with a pool (a new ``httpx.Client`` per call costs ~65 ms here)."""
    with httpx.Client(timeout=5.0) as client:
        yield client


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "provider-ledger.db"


@pytest.fixture
def start_provider(ledger_path: Path, crashes: list[float]) -> Iterator[StartProvider]:
    """``start_provider(faults=Faults(...), seed=7, ledger=path)``; all are closed after."""
    servers: list[ProviderServer] = []

    def start(
        *, faults: Faults | None = None, seed: int | None = 7, ledger: Path | None = None
    ) -> ProviderServer:
        server = serve_in_thread(
            ledger or ledger_path,
            port=free_port(),
            faults=faults,
            seed=seed,
            crash=lambda: crashes.append(time.monotonic()),
        )
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def provider(start_provider: StartProvider) -> ProviderServer:
    return start_provider()


@pytest.fixture
def client(provider: ProviderServer) -> Iterator[HttpPaymentProvider]:
    with HttpPaymentProvider(provider.url, timeout_seconds=5.0) as client:
        yield client


@pytest.fixture
def control(provider: ProviderServer) -> Iterator[ProviderControl]:
    control = ProviderControl(provider.url)
    yield control
    control.close()


_EMPTY_LEDGER = {
    "charges": 0,
    "declines": 0,
    "refunds": 0,
    "voids": 0,
    "replays": 0,
    "refund_replays": 0,
    "idempotency_conflicts": 0,
    "refused_voided": 0,
    "captured_cents": 0,
}


ExpectedLedger = Callable[..., dict[str, int]]


@pytest.fixture
def expected_ledger() -> ExpectedLedger:
    """``expected_ledger(charges=1, replays=1)``: a whole ``GET /_ledger``, zeros elsewhere."""

    def expected(**counts: int) -> dict[str, int]:
        unknown = set(counts) - set(_EMPTY_LEDGER)
        assert not unknown, f"not ledger counts: {unknown}"
        return _EMPTY_LEDGER | counts

    return expected
