"""The purchase path end to end: intake → purchases.fifo → real Celery workers → DynamoDB.

Every count is exact, read back from the orders table and the DLQ; nothing is sampled.
"""

from __future__ import annotations

import itertools
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from polling import wait_until

from bench.ledger import read_ledger
from bench.poison import count_dead_letters, poison_bodies, send_poison
from flashsale.messages import OrderStatus
from flashsale.names import QueueRole
from flashsale.settings import Settings
from infra.local.fleet import Fleet
from tasks.intake import Intake
from tasks.inventory import create_event, event_orders, get_inventory
from tasks.loadgen import fire

pytestmark = pytest.mark.integration

WORKERS = 4
PURCHASES = QueueRole.PURCHASES.celery_queue


@pytest.fixture(scope="module")
def fleet(environ: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Four purchase workers, ``celery -A tasks worker -c 1``, shared by this module's tests."""
    fleet = Fleet(environ, tmp_path_factory.mktemp("worker-logs"))
    for n in range(WORKERS):
        fleet.start_worker(f"purchase-{n}", [PURCHASES])
    yield fleet
    fleet.stop_all()
    for process in fleet.processes.values():
        assert not process.alive()


@pytest.fixture
def new_event(settings: Settings, clients: dict[str, Any]) -> Callable[[int], str]:
    def create(seats: int) -> str:
        event_id = f"it-{uuid.uuid4().hex[:12]}"
        create_event(clients["dynamodb"], settings.inventory_table, event_id, seats)
        return event_id

    return create


@pytest.fixture
def intake(settings: Settings, clients: dict[str, Any]) -> Iterator[Intake]:
    intake = Intake(
        clients["sqs"],
        settings.purchases_queue_url,
        batch_size=settings.purchase_batch_size,
        linger_ms=settings.intake_linger_ms,
        max_per_request=settings.max_tickets_per_request,
    )
    yield intake
    intake.close()


def decided_orders(
    settings: Settings, clients: dict[str, Any], event_id: str, expected: int, timeout: float
) -> list[dict[str, Any]]:
    """The event's orders once ``expected`` of them are decided."""
    found: list[dict[str, Any]] = []

    def enough() -> bool:
        found[:] = event_orders(clients["dynamodb"], settings.orders_table, event_id)
        return len(found) >= expected

    wait_until(enough, timeout, f"{expected} decided orders of {event_id}")
    return found


def single_seat_burst(event_id: str, count: int) -> list[dict[str, Any]]:
    return [
        {"event_id": event_id, "buyer_id": f"b{n}", "quantity": 1, "request_id": f"r{n}"}
        for n in range(count)
    ]


def test_contested_sale__2000_buyers_for_500_seats_sell_exactly_500(
    fleet: Fleet,
    settings: Settings,
    clients: dict[str, Any],
    new_event: Callable[[int], str],
    intake: Intake,
) -> None:
    event_id = new_event(500)
    burst = fire(intake, single_seat_burst(event_id, 2000), None)
    assert len(burst.accepted) == 2000

    orders = decided_orders(settings, clients, event_id, 2000, timeout=120)
    inventory = get_inventory(clients["dynamodb"], settings.inventory_table, event_id)
    ledger = read_ledger(inventory or {}, orders)

    assert len(orders) == 2000
    assert (ledger.confirmed, ledger.sold_out, ledger.rejected) == (500, 1500, 0)
    assert ledger.sold_counter == ledger.seats_confirmed == 500
    assert ledger.oversold == 0
    assert ledger.fcfs_inversions == 0


def test_order_within_an_event__follows_the_fifo_sequence(
    fleet: Fleet,
    settings: Settings,
    clients: dict[str, Any],
    new_event: Callable[[int], str],
    intake: Intake,
) -> None:
    event_id = new_event(300)
    fire(intake, single_seat_burst(event_id, 1000), None)

    orders = sorted(
        decided_orders(settings, clients, event_id, 1000, timeout=120),
        key=lambda o: o["accepted_seq"],
    )

    # The first 300 in line got the seats, everyone after them was told "sold out" ...
    assert [o["status"] for o in orders] == ["confirmed"] * 300 + ["sold_out"] * 700
    # ... and batches were decided one after the other in the queue's order.
    decided_at = [o["decided_at_ms"] for o in orders]
    assert decided_at == sorted(decided_at)


def test_repeated_request_ids__give_one_order_each(
    fleet: Fleet,
    settings: Settings,
    clients: dict[str, Any],
    new_event: Callable[[int], str],
    intake: Intake,
) -> None:
    event_id = new_event(100)
    unique = single_seat_burst(event_id, 300)
    # Double clicks next to each other (same batch), retries much later (other batches) ...
    repeated = list(itertools.chain.from_iterable([r, r] for r in unique[:50])) + unique[50:]
    repeated += unique[::7]
    burst = fire(intake, repeated, None)
    assert len(burst.accepted) == 300
    decided_orders(settings, clients, event_id, 300, timeout=120)
    # ... and a client retrying after its order was decided.
    fire(intake, unique[:20], None)
    intake.flush()

    def retries_handled() -> bool:
        attributes = clients["sqs"].get_queue_attributes(
            QueueUrl=settings.purchases_queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return sum(int(v) for v in attributes.values()) == 0

    wait_until(retries_handled, 60, "the retried requests to be consumed")
    orders = event_orders(clients["dynamodb"], settings.orders_table, event_id)
    inventory = get_inventory(clients["dynamodb"], settings.inventory_table, event_id)

    assert len(orders) == len({o["order_id"] for o in orders}) == 300
    assert inventory is not None and inventory["sold"] == 100
    assert sum(o["status"] == OrderStatus.CONFIRMED for o in orders) == 100


def test_poison_messages__exactly_n_dead_lettered_and_every_good_request_decided(
    fleet: Fleet,
    settings: Settings,
    clients: dict[str, Any],
    new_event: Callable[[int], str],
    intake: Intake,
) -> None:
    run_id = uuid.uuid4().hex
    poison = poison_bodies(run_id, 7, PURCHASES)  # not Celery, unknown task, bad schema...
    event_id = new_event(50)
    send_poison(clients["sqs"], settings.purchases_queue_url, poison[:4], fifo=True)
    fire(intake, single_seat_burst(event_id, 200), None)
    send_poison(clients["sqs"], settings.purchases_queue_url, poison[4:], fifo=True)

    orders = decided_orders(settings, clients, event_id, 200, timeout=120)
    counted: list[int] = []

    def all_dead_lettered() -> bool:
        counted.append(count_dead_letters(clients["sqs"], settings.purchases_dlq_url, run_id))
        return counted[-1] >= 7

    wait_until(all_dead_lettered, 90, "7 poison messages in the DLQ")
    assert counted[-1] == 7
    assert len(orders) == 200
    assert all(process.alive() for process in fleet.processes.values()), "a worker died"


def test_worker_killed_with_sigkill_mid_sale__loses_nothing(
    fleet: Fleet,
    settings: Settings,
    clients: dict[str, Any],
    new_event: Callable[[int], str],
    intake: Intake,
    tmp_path: Path,
) -> None:
    event_id = new_event(400)
    burst = fire(intake, single_seat_burst(event_id, 1600), None)
    assert len(burst.accepted) == 1600

    # Once the sale is under way, kill every worker that is not idle (and one more) mid-task.
    wait_until(
        lambda: len(event_orders(clients["dynamodb"], settings.orders_table, event_id)) > 0,
        60,
        "the sale to start",
    )
    fleet.kill("purchase-0", signal.SIGKILL)
    fleet.kill("purchase-1", signal.SIGKILL)
    decided_at_kill = len(event_orders(clients["dynamodb"], settings.orders_table, event_id))
    assert decided_at_kill < 1600, "the sale ended before the kill: the test proves nothing"
    fleet.start_worker("purchase-0", [PURCHASES])
    fleet.start_worker("purchase-1", [PURCHASES])

    # Messages the dead workers held reappear after the visibility timeout (60 s) and are
    # decided by the others; what they had committed is recognised as already decided.
    orders = decided_orders(settings, clients, event_id, 1600, timeout=240)
    inventory = get_inventory(clients["dynamodb"], settings.inventory_table, event_id)
    ledger = read_ledger(inventory or {}, orders)

    assert len(orders) == len({o["order_id"] for o in orders}) == 1600
    assert ledger.sold_counter == ledger.seats_confirmed == 400
    assert ledger.oversold == 0
    assert ledger.fcfs_inversions == 0
