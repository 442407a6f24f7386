"""The HTTP intake end to end: a real ``python -m intake`` process and a real purchase worker
on the local stack, buyers over HTTP on loopback.

Every count is exact: the 202s are read back from the orders table (each accepted order
decided once), the sold-out answers from the intake's own counters and the queue (nothing
enqueued for them), the backlog from SQS itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from polling import wait_until
from sale_harness import PURCHASES

from bench.ledger import read_ledger
from flashsale.settings import Settings
from infra.local.fleet import Fleet
from infra.local.ports import free_port
from tasks.inventory import create_event, event_orders, get_inventory

pytestmark = pytest.mark.integration

CLIENTS = 16  # concurrent HTTP clients


@pytest.fixture(scope="module")
def fleet(environ: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = Fleet(environ, tmp_path_factory.mktemp("intake-logs"))
    yield fleet
    fleet.stop_all()


def start_intake(fleet: Fleet, name: str, **settings: str) -> httpx.Client:
    port = free_port()
    env = {f"FLASHSALE_{key.upper()}": value for key, value in settings.items()}
    fleet.start_intake(name, port=port, extra_env=env)
    return httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)


def buyers(event_id: str, first: int, count: int) -> list[dict[str, Any]]:
    return [
        {"event_id": event_id, "buyer_id": f"b{n}", "quantity": 1, "request_id": f"r{n}"}
        for n in range(first, first + count)
    ]


def post_all(http: httpx.Client, requests: list[dict[str, Any]]) -> list[httpx.Response]:
    with ThreadPoolExecutor(CLIENTS) as pool:
        return list(pool.map(lambda body: http.post("/v1/purchases", json=body), requests))


def queue_depth(clients: dict[str, Any], settings: Settings) -> int:
    attributes = clients["sqs"].get_queue_attributes(
        QueueUrl=settings.purchases_queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(v) for v in attributes.values())


def test_http_sale__accepted_buyers_are_decided_once_and_sold_out_is_answered_at_the_edge(
    fleet: Fleet, settings: Settings, clients: dict[str, Any]
) -> None:
    fleet.start_worker("purchase-0", [PURCHASES])
    http = start_intake(fleet, "intake")
    ddb = clients["dynamodb"]
    event_id = f"http-{uuid.uuid4().hex[:12]}"
    create_event(ddb, settings.inventory_table, event_id, 50)

    # Wave 1: 200 buyers for 50 seats, and 20 of them clicking twice.
    wave1 = buyers(event_id, 0, 200)
    answers = post_all(http, wave1 + wave1[:20])
    accepted = {a.json()["order_id"] for a in answers if a.status_code == 202}
    early_sold_out = sum(a.status_code == 200 for a in answers)
    assert {a.status_code for a in answers} <= {200, 202}
    assert [a.json()["order_id"] for a in answers[200:]] == [
        a.json()["order_id"] for a in answers[:20]
    ]  # a retry gets the same order id, whatever the answer
    for answer in (a for a in answers if a.status_code == 202):
        assert answer.headers["location"] == answer.json()["status_url"]

    # Every accepted order is decided exactly once, and nobody else got an order.
    def decided() -> bool:
        return len(event_orders(ddb, settings.orders_table, event_id)) >= len(accepted)

    wait_until(decided, 120, f"{len(accepted)} decisions")
    orders = event_orders(ddb, settings.orders_table, event_id)
    assert sorted(o["order_id"] for o in orders) == sorted(accepted)
    ledger = read_ledger(get_inventory(ddb, settings.inventory_table, event_id) or {}, orders)
    assert (ledger.confirmed, ledger.sold_out, ledger.rejected) == (50, len(accepted) - 50, 0)
    assert (ledger.oversold, ledger.fcfs_inversions) == (0, 0)

    # The decision is what GET answers.
    by_id = {o["order_id"]: o["status"] for o in orders}
    with ThreadPoolExecutor(CLIENTS) as pool:
        statuses = list(pool.map(lambda oid: http.get(f"/v1/orders/{oid}"), sorted(accepted)))
    assert [s.status_code for s in statuses] == [200] * len(accepted)
    assert {s.json()["order_id"]: s.json()["status"] for s in statuses} == by_id

    # Wave 2, once the intake sees the sell-out: all answered at the edge, nothing enqueued.
    wait_until(
        lambda: http.get(f"/v1/events/{event_id}").json()["status"] == "sold_out",
        10,
        "the intake to see the sell-out",
    )
    before = http.get("/stats").json()
    wave2 = post_all(http, buyers(event_id, 200, 300))
    after = http.get("/stats").json()

    assert [a.json()["status"] for a in wave2] == ["sold_out"] * 300
    assert [a.status_code for a in wave2] == [200] * 300
    assert after["sold_out_at_edge"] - before["sold_out_at_edge"] == 300
    # Every accepted order of wave 1 went to the queue once (a double click is answered from
    # the intake's memory, not queued again), nothing since.
    assert after["requests_sent"] == before["requests_sent"] == len(accepted)
    assert after["repeats"] == 220 - early_sold_out - len(accepted)
    assert after["sold_out_at_edge"] == early_sold_out + 300
    assert len(event_orders(ddb, settings.orders_table, event_id)) == len(accepted)

    # SIGTERM: the intake stops cleanly, with nothing left unsent.
    assert fleet.stop("intake") == 0
    log = (fleet.log_dir / "intake.log").read_text()
    assert '"intake.stopped"' in log
    assert "intake.unsent_at_shutdown" not in log


def test_http_backpressure__without_workers_past_the_backlog_bound_answers_503_retry_after(
    fleet: Fleet, settings: Settings, clients: dict[str, Any]
) -> None:
    if "purchase-0" in fleet.processes:
        fleet.stop("purchase-0")
    wait_until(lambda: queue_depth(clients, settings) == 0, 60, "an empty purchases queue")
    http = start_intake(
        fleet, "intake-bp", intake_backlog_limit="3", intake_backlog_poll_seconds="0.2"
    )
    ddb = clients["dynamodb"]
    event_id = f"http-bp-{uuid.uuid4().hex[:12]}"
    create_event(ddb, settings.inventory_table, event_id, 1000)

    # One buyer at a time: each 202 is its own message on the queue, and nobody consumes them.
    answers: list[httpx.Response] = []
    for body in buyers(event_id, 0, 100):
        answers.append(http.post("/v1/purchases", json=body))
        if answers[-1].status_code == 503:
            break
    refused = answers[-1]
    accepted = [a.json()["order_id"] for a in answers if a.status_code == 202]

    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["reason"] == "backlog"
    assert len(accepted) == len(answers) - 1 >= 4  # the bound (3) was passed first
    assert queue_depth(clients, settings) == len(accepted)
    later = post_all(http, buyers(event_id, 1000, 20))
    assert [a.status_code for a in later] == [503] * 20
    assert all(a.headers["retry-after"] == "1" for a in later)

    # A worker comes back: everything accepted is decided, once; then buyers get through again.
    fleet.start_worker("purchase-1", [PURCHASES])
    wait_until(
        lambda: len(event_orders(ddb, settings.orders_table, event_id)) >= len(accepted),
        60,
        "the accepted buyers' decisions",
    )
    orders = event_orders(ddb, settings.orders_table, event_id)
    assert sorted(o["order_id"] for o in orders) == sorted(accepted)
    wait_until(lambda: queue_depth(clients, settings) == 0, 60, "the backlog to drain")
    wait_until(
        lambda: http.post("/v1/purchases", json=buyers(event_id, 5000, 1)[0]).status_code == 202,
        10,
        "the intake to take buyers again",
    )
    wait_until(
        lambda: len(event_orders(ddb, settings.orders_table, event_id)) == len(accepted) + 1,
        60,
        "the last buyer's decision",
    )
    assert fleet.stop("intake-bp") == 0
