"""The purchase path end to end: intake → purchases.fifo → real Celery workers → DynamoDB.

Every count is exact, read back from the orders table and the DLQ; nothing is sampled.
"""

from __future__ import annotations

import itertools
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from polling import wait_until
from sale_harness import PURCHASES, Sale, single_seat_burst
from scenarios import Scenario, redecided, worker_logs

from bench.poison import count_dead_letters, poison_bodies, send_poison
from flashsale.messages import OrderStatus
from infra.local.fleet import Fleet

pytestmark = pytest.mark.integration

WORKERS = 4


@pytest.fixture(scope="module")
def fleet(environ: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Four purchase workers, ``celery -A tasks worker -c 1``, shared by this module's tests."""
    fleet = Fleet(environ, tmp_path_factory.mktemp("worker-logs"))
    for n in range(WORKERS):
        fleet.start_worker(f"purchase-{n}", [PURCHASES])
    yield fleet
    fleet.stop_all()


@pytest.mark.scenario(
    "happy path: contested sale",
    injected="none: 2,000 buyers, 500 seats, 4 workers",
    unit="requests",
)
def test_contested_sale__2000_buyers_for_500_seats_sell_exactly_500(
    sale: Sale, scenario: Scenario
) -> None:
    event_id = sale.new_event(500)
    assert sale.fire(single_seat_burst(event_id, 2000)) == 2000

    orders = sale.decided(event_id, 2000, timeout=120)
    ledger = sale.ledger(event_id, orders)
    record_sale(scenario, sale, event_id, 2000, orders)

    assert len(orders) == 2000
    assert (ledger.confirmed, ledger.sold_out, ledger.rejected) == (500, 1500, 0)
    assert ledger.sold_counter == ledger.seats_confirmed == 500
    assert ledger.oversold == 0
    assert ledger.fcfs_inversions == 0


@pytest.mark.scenario(
    "FIFO order across several consumers",
    injected="4 workers competing for one FIFO group",
    unit="requests",
)
def test_order_within_an_event__follows_the_fifo_sequence(sale: Sale, scenario: Scenario) -> None:
    event_id = sale.new_event(300)
    sale.fire(single_seat_burst(event_id, 1000))

    orders = sorted(sale.decided(event_id, 1000, timeout=120), key=lambda o: o["accepted_seq"])
    record_sale(scenario, sale, event_id, 1000, orders)

    # The first 300 in line got the seats, everyone after them was told "sold out" ...
    assert [o["status"] for o in orders] == ["confirmed"] * 300 + ["sold_out"] * 700
    # ... and batches were decided one after the other in the queue's order.
    decided_at = [o["decided_at_ms"] for o in orders]
    assert decided_at == sorted(decided_at)


@pytest.mark.scenario(
    "repeated request ids (double clicks, client retries)",
    injected="300 buyers, 113 of their requests sent again",
    unit="requests",
)
def test_repeated_request_ids__give_one_order_each(sale: Sale, scenario: Scenario) -> None:
    event_id = sale.new_event(100)
    unique = single_seat_burst(event_id, 300)
    # Double clicks next to each other (same batch), retries much later (other batches) ...
    repeated = list(itertools.chain.from_iterable([r, r] for r in unique[:50])) + unique[50:]
    repeated += unique[::7]
    assert sale.fire(repeated) == 300
    sale.decided(event_id, 300, timeout=120)
    # ... and a client retrying after its order was decided.
    sale.fire(unique[:20])
    wait_until(sale.queue_drained, 60, "the retried requests to be consumed")

    orders = sale.orders(event_id)
    ledger = sale.ledger(event_id, orders)
    scenario.record(
        sent=len(unique),
        processed=len({o["order_id"] for o in orders}),
        duplicated=len(repeated) + 20 - len(unique),
        seen_again_by_workers=redecided(worker_logs(sale.fleet.log_dir), event_id),
    )
    assert len(orders) == len({o["order_id"] for o in orders}) == 300
    assert ledger.sold_counter == 100
    assert sum(o["status"] == OrderStatus.CONFIRMED for o in orders) == 100


@pytest.mark.scenario(
    "poison messages to the DLQ",
    injected="7 poison messages among 200 buyers (not Celery, unknown task, bad schema)",
    unit="requests",
)
def test_poison_messages__exactly_n_dead_lettered_and_every_good_request_decided(
    sale: Sale, scenario: Scenario
) -> None:
    run_id = uuid.uuid4().hex
    poison = poison_bodies(run_id, 7, PURCHASES)  # not Celery, unknown task, bad schema...
    event_id = sale.new_event(50)
    send_poison(sale.sqs, sale.settings.purchases_queue_url, poison[:4], fifo=True)
    sale.fire(single_seat_burst(event_id, 200))
    send_poison(sale.sqs, sale.settings.purchases_queue_url, poison[4:], fifo=True)

    orders = sale.decided(event_id, 200, timeout=120)
    counted: list[int] = []

    def all_dead_lettered() -> bool:
        counted.append(count_dead_letters(sale.sqs, sale.settings.purchases_dlq_url, run_id))
        return counted[-1] >= 7

    wait_until(all_dead_lettered, 90, "7 poison messages in the DLQ")
    scenario.record(
        sent=200 + 7,
        processed=len({o["order_id"] for o in orders}),
        dead_lettered=counted[-1],
        duplicated=redecided(worker_logs(sale.fleet.log_dir), event_id),
    )
    assert counted[-1] == 7
    assert len(orders) == 200
    assert all(process.alive() for process in sale.fleet.processes.values()), "a worker died"


@pytest.mark.scenario(
    "crash after receive: SIGKILL of workers mid-sale",
    injected="SIGKILL of 2 of 4 workers mid-task; restarted",
    unit="requests",
)
def test_worker_killed_with_sigkill_mid_sale__loses_nothing(sale: Sale, scenario: Scenario) -> None:
    event_id = sale.new_event(400)
    assert sale.fire(single_seat_burst(event_id, 1600)) == 1600

    # Once the sale is under way, kill two of the four workers mid-task.
    wait_until(lambda: len(sale.orders(event_id)) > 0, 60, "the sale to start")
    sale.fleet.kill("purchase-0", signal.SIGKILL)
    sale.fleet.kill("purchase-1", signal.SIGKILL)
    assert len(sale.orders(event_id)) < 1600, "the sale ended before the kill: proves nothing"
    # New names: a worker's log is kept, so its executions are counted too.
    sale.fleet.start_worker("purchase-0-restarted", [PURCHASES])
    sale.fleet.start_worker("purchase-1-restarted", [PURCHASES])

    # Messages the dead workers held reappear after the visibility timeout (60 s) and are
    # decided by the others; what they had committed is recognised as already decided.
    orders = sale.decided(event_id, 1600, timeout=240)
    ledger = sale.ledger(event_id, orders)
    record_sale(scenario, sale, event_id, 1600, orders)

    assert len(orders) == len({o["order_id"] for o in orders}) == 1600
    assert ledger.sold_counter == ledger.seats_confirmed == 400
    assert ledger.oversold == 0
    assert ledger.fcfs_inversions == 0


def record_sale(
    scenario: Scenario, sale: Sale, event_id: str, sent: int, orders: list[dict[str, Any]]
) -> None:
    """A sale's row: requests sent, distinct orders decided, and how many requests the workers
    found already decided (redelivered messages, each a no-op)."""
    scenario.record(
        sent=sent,
        processed=len({o["order_id"] for o in orders}),
        duplicated=redecided(worker_logs(sale.fleet.log_dir), event_id),
    )
