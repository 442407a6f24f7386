"""The purchase path's DynamoDB tables in moto's in-process mock, created from the Pulumi
program's own table declarations (``infra.components.tables.TABLE_SPECS``)."""

from __future__ import annotations

from typing import Any

from flashsale.names import Table
from infra.components.tables import TABLE_SPECS
from tasks.allocation import SeatAllocator
from tasks.inventory import create_event, event_orders, get_inventory

STACK = "unit"
REGION = "us-east-1"


def create_tables(ddb: Any, stack: str = STACK) -> tuple[str, str]:
    """The inventory and orders tables as the Pulumi program declares them; their names."""
    names = []
    for table in (Table.INVENTORY, Table.ORDERS):
        name = table.physical_name(stack)
        ddb.create_table(TableName=name, **TABLE_SPECS[table].create_table_parameters())
        names.append(name)
    return names[0], names[1]


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
