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
from sale_harness import PURCHASES, Sale, open_sale, single_seat_burst

from bench.poison import count_dead_letters, poison_bodies, send_poison
from flashsale.messages import OrderStatus
from flashsale.settings import Settings
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


@pytest.fixture
def sale(fleet: Fleet, settings: Settings, clients: dict[str, Any]) -> Iterator[Sale]:
    with open_sale(fleet, settings, clients) as sale:
        yield sale


def test_contested_sale__2000_buyers_for_500_seats_sell_exactly_500(sale: Sale) -> None:
    event_id = sale.new_event(500)
    assert sale.fire(single_seat_burst(event_id, 2000)) == 2000

    orders = sale.decided(event_id, 2000, timeout=120)
    ledger = sale.ledger(event_id, orders)

    assert len(orders) == 2000
    assert (ledger.confirmed, ledger.sold_out, ledger.rejected) == (500, 1500, 0)
    assert ledger.sold_counter == ledger.seats_confirmed == 500
    assert ledger.oversold == 0
    assert ledger.fcfs_inversions == 0


def test_order_within_an_event__follows_the_fifo_sequence(sale: Sale) -> None:
    event_id = sale.new_event(300)
    sale.fire(single_seat_burst(event_id, 1000))

    orders = sorted(sale.decided(event_id, 1000, timeout=120), key=lambda o: o["accepted_seq"])

    # The first 300 in line got the seats, everyone after them was told "sold out" ...
    assert [o["status"] for o in orders] == ["confirmed"] * 300 + ["sold_out"] * 700
    # ... and batches were decided one after the other in the queue's order.
    decided_at = [o["decided_at_ms"] for o in orders]
    assert decided_at == sorted(decided_at)


def test_repeated_request_ids__give_one_order_each(sale: Sale) -> None:
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
    assert len(orders) == len({o["order_id"] for o in orders}) == 300
    assert ledger.sold_counter == 100
    assert sum(o["status"] == OrderStatus.CONFIRMED for o in orders) == 100


def test_poison_messages__exactly_n_dead_lettered_and_every_good_request_decided(
    sale: Sale,
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
    assert counted[-1] == 7
    assert len(orders) == 200
    assert all(process.alive() for process in sale.fleet.processes.values()), "a worker died"


def test_worker_killed_with_sigkill_mid_sale__loses_nothing(sale: Sale) -> None:
    event_id = sale.new_event(400)
    assert sale.fire(single_seat_burst(event_id, 1600)) == 1600

    # Once the sale is under way, kill two of the four workers mid-task.
    wait_until(lambda: len(sale.orders(event_id)) > 0, 60, "the sale to start")
    sale.fleet.kill("purchase-0", signal.SIGKILL)
    sale.fleet.kill("purchase-1", signal.SIGKILL)
    assert len(sale.orders(event_id)) < 1600, "the sale ended before the kill: proves nothing"
    sale.fleet.start_worker("purchase-0", [PURCHASES])
    sale.fleet.start_worker("purchase-1", [PURCHASES])

    # Messages the dead workers held reappear after the visibility timeout (60 s) and are
    # decided by the others; what they had committed is recognised as already decided.
    orders = sale.decided(event_id, 1600, timeout=240)
    ledger = sale.ledger(event_id, orders)

    assert len(orders) == len({o["order_id"] for o in orders}) == 1600
    assert ledger.sold_counter == ledger.seats_confirmed == 400
    assert ledger.oversold == 0
    assert ledger.fcfs_inversions == 0
