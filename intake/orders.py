"""An order's status for ``GET /v1/orders/{order_id}``: its decision and its saga, one call."""

from __future__ import annotations

from typing import Any, Protocol

from flashsale.dynamo import from_item
from flashsale.messages import Fulfilment, OrderStatus
from flashsale.names import ORDERS_PK, SAGAS_PK
from intake.schemas import OrderView, SagaView
from saga.state import SagaState


class OrderReader(Protocol):
    def get(self, order_id: str) -> OrderView | None:
        """The order, or None while it is not decided (or was never accepted)."""
        ...


class DynamoOrders:
    """Reads the order and its purchase saga (same id) with one ``BatchGetItem``."""

    def __init__(self, dynamodb: Any, *, orders_table: str, sagas_table: str) -> None:
        self._ddb = dynamodb
        self._orders = orders_table
        self._sagas = sagas_table

    def get(self, order_id: str) -> OrderView | None:
        keys: dict[str, Any] = {
            # Consistent: a client told "confirmed" must not read "pending" a moment later.
            self._orders: {"Keys": [{ORDERS_PK: {"S": order_id}}], "ConsistentRead": True},
            self._sagas: {"Keys": [{SAGAS_PK: {"S": order_id}}], "ConsistentRead": True},
        }
        found: dict[str, list[dict[str, Any]]] = {self._orders: [], self._sagas: []}
        while keys:
            response = self._ddb.batch_get_item(RequestItems=keys)
            for table, items in response.get("Responses", {}).items():
                found[table].extend(items)
            keys = response.get("UnprocessedKeys") or {}
        if not found[self._orders]:
            return None
        order = from_item(found[self._orders][0])
        saga = SagaState.from_item(found[self._sagas][0]) if found[self._sagas] else None
        return OrderView(
            order_id=order[ORDERS_PK],
            event_id=order["event_id"],
            status=OrderStatus(order["status"]),
            quantity=int(order["quantity"]),
            fulfilment=Fulfilment(order["fulfilment"]) if order.get("fulfilment") else None,
            reason=order.get("reason") or "",
            accepted_at_ms=order.get("accepted_at_ms"),
            decided_at_ms=order.get("decided_at_ms"),
            saga=SagaView(status=saga.status, reason=saga.reason) if saga else None,
        )
