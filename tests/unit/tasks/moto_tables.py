"""The purchase path's DynamoDB tables in moto's in-process mock, keyed as ``flashsale.names``
declares them (the same schema the Pulumi components create)."""

from __future__ import annotations

from typing import Any

from flashsale.names import (
    INVENTORY_PK,
    ORDERS_ACCEPTED_SEQ,
    ORDERS_BY_EVENT_INDEX,
    ORDERS_EVENT_ID,
    ORDERS_PK,
    Table,
)
from tasks.allocation import SeatAllocator
from tasks.inventory import create_event, event_orders, get_inventory

STACK = "unit"
REGION = "us-east-1"


def create_tables(ddb: Any, stack: str = STACK) -> tuple[str, str]:
    """The inventory table (hash ``event_id``) and the orders table (hash ``order_id``, index
    ``by_event`` on ``event_id`` + ``accepted_seq``); returns their names."""
    inventory = Table.INVENTORY.physical_name(stack)
    orders = Table.ORDERS.physical_name(stack)
    ddb.create_table(
        TableName=inventory,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": INVENTORY_PK, "AttributeType": "S"}],
        KeySchema=[{"AttributeName": INVENTORY_PK, "KeyType": "HASH"}],
    )
    ddb.create_table(
        TableName=orders,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": ORDERS_PK, "AttributeType": "S"},
            {"AttributeName": ORDERS_EVENT_ID, "AttributeType": "S"},
            {"AttributeName": ORDERS_ACCEPTED_SEQ, "AttributeType": "N"},
        ],
        KeySchema=[{"AttributeName": ORDERS_PK, "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": ORDERS_BY_EVENT_INDEX,
                "KeySchema": [
                    {"AttributeName": ORDERS_EVENT_ID, "KeyType": "HASH"},
                    {"AttributeName": ORDERS_ACCEPTED_SEQ, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    return inventory, orders


class Tables:
    """A DynamoDB client (inside ``mock_aws``) with the inventory and orders tables."""

    def __init__(self, ddb: Any, stack: str = STACK) -> None:
        self.ddb = ddb
        self.inventory, self.orders = create_tables(ddb, stack)

    def fresh(self, stack: str) -> Tables:
        """Another pair of empty tables in the same mock."""
        return Tables(self.ddb, stack)

    def new_event(self, event_id: str, capacity: int) -> str:
        create_event(self.ddb, self.inventory, event_id, capacity)
        return event_id

    def inventory_of(self, event_id: str) -> dict[str, Any]:
        found = get_inventory(self.ddb, self.inventory, event_id)
        assert found is not None, f"no inventory row for {event_id}"
        return found

    def sold(self, event_id: str) -> int:
        return int(self.inventory_of(event_id)["sold"])

    def orders_of(self, event_id: str) -> list[dict[str, Any]]:
        """The event's decided orders, in acceptance order (the ``by_event`` index)."""
        return event_orders(self.ddb, self.orders, event_id)

    def allocator(self, ddb: Any = None, *, max_per_request: int = 8) -> SeatAllocator:
        """An allocator over these tables, through ``ddb`` if given (e.g. a racing wrapper)."""
        return SeatAllocator(
            ddb if ddb is not None else self.ddb,
            inventory_table=self.inventory,
            orders_table=self.orders,
            max_per_request=max_per_request,
        )
