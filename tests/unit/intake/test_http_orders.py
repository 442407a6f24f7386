"""``GET /v1/orders/{id}`` over moto's DynamoDB: orders decided by the real allocator (with
their sagas) read back in one call; 202 ``pending`` until decided."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from intake_http_stack import MakeHarness, order_id_of, purchase
from moto import mock_aws
from moto_tables import REGION, Tables

from flashsale.messages import AcceptedRequest, PurchaseBatch, PurchaseRequest
from intake.events import DynamoInventory, Inventory
from intake.orders import DynamoOrders


@pytest.fixture
def tables(aws_offline: None) -> Iterator[Tables]:
    with mock_aws():
        yield Tables(boto3.client("dynamodb", region_name=REGION))


def accepted(n: int, quantity: int = 1) -> AcceptedRequest:
    request = PurchaseRequest.model_validate(purchase(n, quantity=quantity))
    return AcceptedRequest(order_id=request.order_id, buyer_id=request.buyer_id,
                           request_id=request.request_id, quantity=quantity, accepted_seq=n,
                           accepted_at_ms=1_700_000_000_000 + n)  # fmt: skip


def orders_of(tables: Tables) -> DynamoOrders:
    return DynamoOrders(tables.ddb, orders_table=tables.orders, sagas_table=tables.names["sagas"])


def test_order__decided_orders_show_their_decision_fulfilment_and_saga(
    tables: Tables, make_harness: MakeHarness
) -> None:
    tables.new_event("gig", 2)
    batch = PurchaseBatch(event_id="gig", requests=[accepted(1, 2), accepted(2)])
    tables.allocator(sagas=True).allocate(batch)
    h = make_harness(orders=orders_of(tables))

    confirmed = h.client.get(f"/v1/orders/{order_id_of(purchase(1, quantity=2))}")
    sold_out = h.client.get(f"/v1/orders/{order_id_of(purchase(2))}")

    assert confirmed.status_code == 200
    body: dict[str, Any] = confirmed.json()
    assert {k: body[k] for k in ("event_id", "status", "quantity", "fulfilment", "reason")} == {
        "event_id": "gig", "status": "confirmed", "quantity": 2, "fulfilment": "held",
        "reason": "",
    }  # fmt: skip
    assert body["saga"] == {"status": "running", "reason": ""}
    assert body["accepted_at_ms"] == 1_700_000_000_001
    assert sold_out.status_code == 200
    assert sold_out.json()["status"] == "sold_out"
    assert sold_out.json()["fulfilment"] is None
    assert sold_out.json()["saga"] is None  # no seat, no saga


def test_order__not_decided_yet_is_202_pending_with_retry_after(
    tables: Tables, make_harness: MakeHarness
) -> None:
    h = make_harness(orders=orders_of(tables))
    order_id = str(uuid.uuid4())

    answer = h.client.get(f"/v1/orders/{order_id}")

    assert answer.status_code == 202
    assert answer.json() == {"order_id": order_id, "status": "pending"}
    assert answer.headers["retry-after"] == "1"


@pytest.mark.parametrize("bad", ["not-a-uuid", "1234", "%00"])
def test_order__an_id_that_is_not_an_order_id_is_422(make_harness: MakeHarness, bad: str) -> None:
    answer = make_harness().client.get(f"/v1/orders/{bad}")

    assert answer.status_code == 422
    assert answer.json()["errors"] == [{"field": "order_id", "message": "not an order id (a UUID)"}]


def test_order__an_unreadable_table_is_503_with_retry_after(make_harness: MakeHarness) -> None:
    class Failing:
        def get(self, order_id: str) -> None:
            raise ConnectionError("DynamoDB is unreachable (fake)")

    answer = make_harness(orders=Failing()).client.get(f"/v1/orders/{uuid.uuid4()}")

    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "1"
    assert answer.json()["reason"] == "unavailable"


def test_inventory_reader__reads_many_events_in_batches_of_a_hundred(tables: Tables) -> None:
    for n in range(150):
        tables.new_event(f"e{n}", n % 3)
    tables.ddb.update_item(TableName=tables.inventory, Key={"event_id": {"S": "e1"}},
                           UpdateExpression="SET sold = :one",
                           ExpressionAttributeValues={":one": {"N": "1"}})  # fmt: skip

    found = DynamoInventory(tables.ddb, tables.inventory).read(
        [f"e{n}" for n in range(150)] + ["missing"]
    )

    assert len(found) == 150
    assert found["e1"] == Inventory(capacity=1, sold=1)
    assert found["e1"].state == "sold_out"
    assert found["e0"].state == "sold_out"  # no seats at all
    assert found["e2"].state == "on_sale"
    assert "missing" not in found
