"""Faults injected between a running purchase worker and AWS, while a sale runs (issue 5).

One worker, started once for the module, reaches SQS and DynamoDB only through two
fault-injecting proxies (``infra.local.faults``), by the standard ``AWS_ENDPOINT_URL_SQS`` /
``AWS_ENDPOINT_URL_DYNAMODB`` variables. The test's own intake and reads go straight to the
emulators, so only the worker is hurt. Each test breaks the network in one way during a whole
contested sale, then requires: the same worker process alive, an exact ledger (sold ==
capacity, nothing oversold, every accepted request decided exactly once), and the proxies'
counters showing that the faults really reached the worker (kombu sends every SQS call to the
endpoint, not to the host in the queue URL).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from polling import wait_until
from sale_harness import PURCHASES, Sale, open_sale, single_seat_burst
from scenarios import Scenario, redecided, worker_logs

from flashsale.settings import Settings
from infra.local.faults import FaultProxy, FaultRule, FaultStats
from infra.local.fleet import AppProcess, Fleet

pytestmark = pytest.mark.integration

SEATS = 100
BUYERS = 400
WORKER = "faulty-purchase-0"
RECEIVE = "AmazonSQS.ReceiveMessage"
DELETE = "AmazonSQS.DeleteMessage"
VISIBILITY = "AmazonSQS.ChangeMessageVisibility"
TRANSACT = "DynamoDB_20120810.TransactWriteItems"
BATCH_GET = "DynamoDB_20120810.BatchGetItem"
# kombu receives with pycurl, whose request timeout is 20 s (kombu.asynchronous.aws
# .connection.AsyncHTTPSConnection): held longer than that, a receive really times out.
KOMBU_RECEIVE_TIMEOUT_SECONDS = 20.0


class Proxies:
    """The worker's way to SQS and to DynamoDB."""

    def __init__(self, sqs: FaultProxy, dynamodb: FaultProxy) -> None:
        self.sqs = sqs
        self.dynamodb = dynamodb

    def reset(self) -> None:
        for proxy in (self.sqs, self.dynamodb):
            proxy.clear()
            proxy.reset_stats()


@pytest.fixture(scope="module")
def proxies(environ: dict[str, str]) -> Iterator[Proxies]:
    with (
        FaultProxy(environ["AWS_ENDPOINT_URL_SQS"], seed=11) as sqs,
        FaultProxy(environ["AWS_ENDPOINT_URL_DYNAMODB"], seed=12) as dynamodb,
    ):
        yield Proxies(sqs, dynamodb)


@pytest.fixture(scope="module")
def fleet(
    environ: dict[str, str], tmp_path_factory: pytest.TempPathFactory, proxies: Proxies
) -> Iterator[Fleet]:
    """One purchase worker whose every AWS call goes through the proxies."""
    fleet = Fleet(environ, tmp_path_factory.mktemp("fault-worker-logs"))
    fleet.start_worker(
        WORKER,
        [PURCHASES],
        extra_env={
            "AWS_ENDPOINT_URL_SQS": proxies.sqs.url,
            "AWS_ENDPOINT_URL_DYNAMODB": proxies.dynamodb.url,
        },
    )
    yield fleet
    fleet.stop_all()


@pytest.fixture
def sale(
    fleet: Fleet, proxies: Proxies, settings: Settings, clients: dict[str, Any]
) -> Iterator[Sale]:
    proxies.reset()
    with open_sale(fleet, settings, clients) as sale:
        yield sale
    proxies.reset()


def run_sale_under_faults(
    sale: Sale, scenario: Scenario, timeout: float = 120
) -> tuple[AppProcess, float]:
    """A contested sale with whatever rules are set; checks the ledger exactly (and reports it
    in ``scenario``'s row). The worker process and how long the sale took."""
    worker = sale.fleet.processes[WORKER]
    pid = worker.pid
    started = time.monotonic()
    event_id = sale.new_event(SEATS)
    assert sale.fire(single_seat_burst(event_id, BUYERS)) == BUYERS

    orders = sale.decided(event_id, BUYERS, timeout=timeout)
    took = time.monotonic() - started
    wait_until(sale.queue_drained, 60, "the purchases queue to drain")
    ledger = sale.ledger(event_id, orders)
    scenario.record(
        sent=BUYERS,
        processed=len({o["order_id"] for o in orders}),
        duplicated=redecided(worker_logs(sale.fleet.log_dir), event_id),
    )

    assert worker.alive() and worker.pid == pid, f"the worker died; see {worker.log}"
    assert len(orders) == len({o["order_id"] for o in orders}) == BUYERS
    assert (ledger.confirmed, ledger.sold_out, ledger.rejected) == (SEATS, BUYERS - SEATS, 0)
    assert ledger.sold_counter == ledger.seats_confirmed == SEATS
    assert ledger.oversold == 0
    assert ledger.fcfs_inversions == 0
    return worker, took


def report(name: str, took: float, scenario: Scenario, *stats: FaultStats) -> None:
    injected = [s.injected for s in stats]
    scenario.observe(faults_injected=sum(s.count() for s in stats))
    print(f"\n{name}: sale decided in {took:.1f} s; injected {injected}")


@pytest.mark.scenario(
    "SQS 5xx and timeouts into a running worker",
    injected="30% 5xx on receive/delete, a 22 s receive timeout, 2 delete timeouts",
    unit="requests",
)
def test_sqs_5xx_and_timeouts__on_receive_and_delete_the_worker_survives_and_sells_exactly(
    sale: Sale, proxies: Proxies, scenario: Scenario
) -> None:
    proxies.sqs.set_rules(
        [
            # One receive held past kombu's own 20 s timeout: a real client-side timeout.
            FaultRule(
                "timeout",
                operation=RECEIVE,
                hold_seconds=KOMBU_RECEIVE_TIMEOUT_SECONDS + 2,
                max_count=1,
            ),
            # Deletes go through kombu's boto3 client (60 s read timeout, blocking the worker's
            # loop): held 3 s then dropped, which botocore retries like a timeout.
            FaultRule("timeout", operation=DELETE, hold_seconds=3, max_count=2),
            FaultRule("error", operation=RECEIVE, rate=0.3, status=503),
            FaultRule("error", operation=(RECEIVE, DELETE), rate=0.3),
        ]
    )
    _, took = run_sale_under_faults(sale, scenario, timeout=150)
    stats = proxies.sqs.stats()
    report("sqs 5xx + timeouts", took, scenario, stats)

    assert stats.count("timeout", RECEIVE) == 1
    assert stats.count("timeout", DELETE) == 2
    assert stats.count("error", RECEIVE) > 0
    assert stats.count("error", DELETE) > 0
    # Every delete passed through the proxy: one per message at least.
    assert stats.requests[DELETE] >= BUYERS // sale.settings.purchase_batch_size


@pytest.mark.scenario(
    "SQS throttling into a running worker",
    injected="RequestThrottled on 30% of SQS calls, 2 deletes, 2 receives",
    unit="requests",
)
def test_sqs_throttling__on_every_call_the_worker_survives_and_sells_exactly(
    sale: Sale, proxies: Proxies, scenario: Scenario
) -> None:
    proxies.sqs.set_rules(
        [
            # kombu's boto3 client (botocore's legacy retry mode) does not retry a 400
            # RequestThrottled: the delete fails, the message is rejected and redelivered.
            FaultRule("throttle", operation=DELETE, max_count=2),
            # A sale takes only a handful of receives (ten messages each): two are throttled
            # for certain, whatever the rate below draws.
            FaultRule("throttle", operation=RECEIVE, max_count=2),
            FaultRule("throttle", operation="AmazonSQS.*", rate=0.3),
        ]
    )
    _, took = run_sale_under_faults(sale, scenario)
    stats = proxies.sqs.stats()
    report("sqs throttling", took, scenario, stats)

    assert stats.count("throttle", RECEIVE) > 0
    assert stats.count("throttle", DELETE) >= 2


@pytest.mark.scenario(
    "DynamoDB throttling and 5xx into a running worker",
    injected="throttling + 5xx on transactions and reads (capped bursts), lost answers",
    unit="requests",
)
def test_dynamodb_throttling_and_5xx__the_worker_survives_and_sells_exactly(
    sale: Sale, proxies: Proxies, scenario: Scenario
) -> None:
    # Budgets, not only rates: at most 5 faults in a row, so each call gets through within
    # botocore's 6 attempts (flashsale.aws) and no task fails. A purchase task that does fail
    # breaks first-come-first-served order today: the messages prefetched behind it in its
    # FIFO group run before it is redelivered (6 failed attempts on the first transaction of a
    # 100-seat sale: 100 inversions). Open, not hidden: this test keeps requiring 0.
    proxies.dynamodb.set_rules(
        [
            # The transaction was applied, its answer lost: the retry must change nothing.
            FaultRule("error", operation=TRANSACT, phase="response", max_count=2),
            FaultRule("throttle", operation=TRANSACT, max_count=2),
            FaultRule("error", operation=TRANSACT, status=503, max_count=1),
            FaultRule("throttle", operation=BATCH_GET, code="ThrottlingException", max_count=2),
            FaultRule("error", operation=BATCH_GET, max_count=2),
            # And a few more spread over the sale.
            FaultRule("throttle", operation=(TRANSACT, BATCH_GET), rate=0.05),
            FaultRule("error", operation=(TRANSACT, BATCH_GET), rate=0.05),
        ]
    )
    _, took = run_sale_under_faults(sale, scenario)
    stats = proxies.dynamodb.stats()
    report("dynamodb throttling + 5xx", took, scenario, stats)

    assert stats.count("error", TRANSACT) >= 3
    assert stats.count("throttle", TRANSACT) >= 2
    assert stats.count("error", BATCH_GET) >= 2
    assert stats.count("throttle", BATCH_GET) >= 2


@pytest.mark.scenario(
    "slow SQS and DynamoDB responses",
    injected="+300 ms on half of all calls",
    unit="requests",
)
def test_slow_responses__from_sqs_and_dynamodb_the_worker_survives_and_sells_exactly(
    sale: Sale, proxies: Proxies, scenario: Scenario
) -> None:
    slow = [FaultRule("latency", rate=0.5, delay_seconds=0.3)]
    proxies.sqs.set_rules(slow)
    proxies.dynamodb.set_rules(slow)
    _, took = run_sale_under_faults(sale, scenario)
    report("slow responses", took, scenario, proxies.sqs.stats(), proxies.dynamodb.stats())

    assert proxies.sqs.stats().count("latency", RECEIVE) > 0
    assert proxies.sqs.stats().count("latency", DELETE) > 0
    assert proxies.dynamodb.stats().count("latency", TRANSACT) > 0
