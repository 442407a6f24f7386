"""The application's DynamoDB tables in moto's in-process mock, created from the Pulumi
program's own table declarations (``infra.components.tables.TABLE_SPECS``)."""

from __future__ import annotations

from typing import Any

from flashsale.names import Table
from flashsale.settings import get_settings
from infra.components.tables import TABLE_SPECS
from saga import Orchestrator
from tasks.allocation import SeatAllocator
from tasks.inventory import create_event, event_orders, get_inventory
from tasks.purchase_saga import build_orchestrator, saga_starter

STACK = "unit"
REGION = "us-east-1"


def create_tables(ddb: Any, stack: str = STACK) -> dict[Table, str]:
    """Every table as the Pulumi program declares it; their names."""
    names = {}
    for table in Table:
        name = table.physical_name(stack)
        ddb.create_table(TableName=name, **TABLE_SPECS[table].create_table_parameters())
        names[table] = name
    return names


class Tables:
    """A DynamoDB client (inside ``mock_aws``) with the application's tables."""

    def __init__(self, ddb: Any, stack: str = STACK) -> None:
        self.ddb = ddb
        self.names = create_tables(ddb, stack)
        self.inventory, self.orders = self.names[Table.INVENTORY], self.names[Table.ORDERS]

    def fresh(self, stack: str) -> Tables:
        """Another set of empty tables in the same mock."""
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

    def orchestrator(self) -> Orchestrator:
        """The purchase saga's orchestrator over these tables."""
        settings = get_settings().model_copy(
            update={
                "sagas_table": self.names[Table.SAGAS],
                "outbox_table": self.names[Table.OUTBOX],
            }
        )
        return build_orchestrator(self.ddb, settings)

    def allocator(
        self, ddb: Any = None, *, max_per_request: int = 8, sagas: bool = False
    ) -> SeatAllocator:
        """An allocator over these tables, through ``ddb`` if given (e.g. a racing wrapper);
        with ``sagas``, each confirmed seat starts its purchase saga."""
        return SeatAllocator(
            ddb if ddb is not None else self.ddb,
            inventory_table=self.inventory,
            orders_table=self.orders,
            max_per_request=max_per_request,
            start_saga=saga_starter(self.orchestrator(), get_settings()) if sagas else None,
        )
