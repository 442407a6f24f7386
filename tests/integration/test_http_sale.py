"""``make demo`` in small: a contested sale through the HTTP intake with the whole pipeline.

The same driver as ``make demo`` and ``make bench`` (``bench.spike``): a real intake, purchase
workers, the payment provider declining some cards, saga and notification workers, the relay
and the sweeper, buyers over HTTP from a separate load process, late buyers offered the seats
the declines released, and poison messages on the purchases queue. Every figure is counted
exactly (DynamoDB, the provider's ledger, LocalStack's sent e-mails and SMS, the load's own
record of every answer), so this guards the README's first command as well as the invariants.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from local_stacks import running_stack
from rich.console import Console

from bench.spike import SpikeSpec, run_spike
from bench.stats import ClientCalls
from infra.local.fleet import Fleet

pytestmark = pytest.mark.integration

SPEC = SpikeSpec(
    requests=1_200,
    seats=150,
    duplicates=60,
    malformed=3,
    connections=16,
    purchase_workers=1,
    decline_rate=0.2,
    saga_concurrency=2,
    resale_waves=1,
    poison=2,
    backlog_limit=20,
    load_cap_s=180.0,
    decide_cap_s=120.0,
    settle_cap_s=300.0,
)


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A stack of this module's own: its relay would otherwise run the sagas that earlier
    modules' sales left pending, and the provider's ledger would hold their charges."""
    yield from running_stack(tmp_path_factory)


@pytest.fixture(scope="module")
def fleet(environ: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = Fleet(environ, tmp_path_factory.mktemp("http-sale-logs"))
    yield fleet
    fleet.stop_all()


@pytest.fixture(scope="module")
def figures(fleet: Fleet) -> dict[str, Any]:
    run = run_spike(SPEC, fleet, Console(file=io.StringIO(), width=200), ClientCalls())
    return run.figures()


def test_http_sale__every_request_answered_and_every_accepted_one_decided(
    figures: dict[str, Any],
) -> None:
    assert figures["no_answer"] == 0
    assert figures["rejected_by_backpressure"] == 0
    assert figures["invalid"] == SPEC.malformed
    assert figures["lost"] == 0
    assert figures["dead_lettered"] == SPEC.poison
    assert figures["accepted"] == figures["confirmed"] + figures["sold_out"] + figures["rejected"]
    assert not any(figures["bounds_reached"].values())


def test_http_sale__no_oversell_first_come_first_served_no_double_charge(
    figures: dict[str, Any],
) -> None:
    assert figures["oversold"] == 0
    assert figures["fcfs_inversions"] == 0
    assert figures["duplicate_charges"] == 0
    assert figures["sold"] <= SPEC.seats


def test_http_sale__every_saga_final_and_every_buyer_told_once(figures: dict[str, Any]) -> None:
    saga = figures["saga"]
    assert saga["sagas_unfinished"] == saga["sagas_quarantined"] == saga["still_held"] == 0
    assert saga["declines"] > 0, "the provider declined no card: the compensation went untested"
    assert saga["ticketed"] + saga["released"] == figures["confirmed"]
    assert saga["charges"] == saga["ticketed"]
    assert saga["confirmation_emails"] == saga["ticketed"]
    assert saga["cancellation_emails"] == saga["released"]
