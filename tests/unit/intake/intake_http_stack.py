"""The HTTP intake over fakes: the real app, ``Intake`` and caches over a fake queue,
inventory and clock; a harness around Starlette's TestClient (which runs the app's lifespan);
buyers' requests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from intake_http_fakes import FakeClock, FakeInventory, FakeQueue
from starlette.applications import Starlette
from starlette.testclient import TestClient

from flashsale.messages import PurchaseRequest
from flashsale.settings import Settings, get_settings
from intake.app import create_app
from intake.events import Inventory
from intake.orders import OrderReader
from intake.schemas import OrderView
from intake.services import IntakeServices, build_services

EVENT = "gig"
# Fast enough for tests, slow enough not to spin: the intake's linger thread wakes every 2.5 ms.
TEST_LINGER_MS = 5


@dataclass
class FakeOrders:
    orders: dict[str, OrderView]

    def get(self, order_id: str) -> OrderView | None:
        return self.orders.get(order_id)


@dataclass
class Harness:
    """One running intake app and what it talks to."""

    client: TestClient
    services: IntakeServices
    settings: Settings
    queue: FakeQueue
    inventory: FakeInventory
    clock: FakeClock

    def buy(self, n: int, *, quantity: int = 1, event: str = EVENT, request: str = "") -> Any:
        return self.client.post("/v1/purchases", json=purchase(n, quantity=quantity, event=event,
                                                               request=request))  # fmt: skip

    def run(self, fn: Callable[[], Any]) -> Any:
        """Run an async method of the app's services on the app's event loop."""
        return self.client.portal.call(fn)  # type: ignore[union-attr]


def purchase(n: int, *, quantity: int = 1, event: str = EVENT, request: str = "") -> dict[str, Any]:
    return {"event_id": event, "buyer_id": f"buyer-{n}", "quantity": quantity,
            "request_id": request or f"req-{n}"}  # fmt: skip


def order_id_of(body: dict[str, Any]) -> str:
    return PurchaseRequest.model_validate(body).order_id


MakeHarness = Callable[..., Harness]


@dataclass
class FakeStack:
    """An intake app over fakes, not started."""

    app: Starlette
    services: IntakeServices
    settings: Settings
    queue: FakeQueue
    inventory: FakeInventory
    clock: FakeClock


def fake_stack(
    *,
    seats: int = 10,
    sold: int = 0,
    inventory: FakeInventory | None = None,
    orders: OrderReader | None = None,
    linger_ms: int = TEST_LINGER_MS,
    **overrides: Any,
) -> FakeStack:
    """The app over fakes. ``overrides`` are ``flashsale.settings`` fields; the event ``gig``
    has ``seats`` seats of which ``sold`` are sold (unless ``inventory`` is given)."""
    # Long TTL and poll interval by default: no background read or poll within a test, so
    # counts are exact and time moves only by ``clock.advance``.
    defaults = {"intake_sold_out_ttl_seconds": 60.0, "intake_backlog_poll_seconds": 60.0}
    update = {**defaults, "intake_http_linger_ms": linger_ms, **overrides}
    settings = get_settings().model_copy(update=update)
    queue = FakeQueue()
    inventory = inventory or FakeInventory({EVENT: Inventory(capacity=seats, sold=sold)})
    clock = FakeClock()
    services = build_services(
        settings, sqs=queue, inventory=inventory, orders=orders or FakeOrders({}), clock=clock
    )
    app = create_app(services, settings)
    return FakeStack(app, services, settings, queue, inventory, clock)
