"""What the handlers use, built once per process: real AWS clients in production, fakes in tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flashsale.settings import Settings
from intake.backlog import BacklogMonitor, SqsQueueDepth
from intake.blocking import Blocking
from intake.enqueue import Enqueuer
from intake.events import DynamoInventory, EventCache, InventoryReader
from intake.orders import DynamoOrders, OrderReader

# Threads for AWS reads (inventory, order status, backlog, readiness); the in-flight bound
# queues the rest.
AWS_THREADS = 8


@dataclass
class IntakeServices:
    enqueuer: Enqueuer
    events: EventCache
    backlog: BacklogMonitor
    orders: OrderReader
    blocking: Blocking
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        """Start the background pollers: the backlog, and the refresh of hot events."""
        await self.backlog.poll()  # the bound applies from the first request
        self._tasks = [
            asyncio.create_task(self.backlog.run(), name="intake-backlog"),
            asyncio.create_task(self.events.run_refresher(), name="intake-events"),
        ]

    async def stop(self) -> None:
        """Stop polling, flush what is buffered to the queue, release the threads."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.enqueuer.close()
        self.blocking.close()


def build_services(
    settings: Settings,
    *,
    sqs: Any,
    dynamodb: Any = None,
    inventory: InventoryReader | None = None,
    orders: OrderReader | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> IntakeServices:
    """The services over boto3 clients; tests pass stand-ins for the readers and the clock."""
    blocking = Blocking(AWS_THREADS, "intake-aws")
    return IntakeServices(
        enqueuer=Enqueuer(
            sqs,
            settings.purchases_queue_url,
            batch_size=settings.purchase_batch_size,
            linger_ms=settings.intake_http_linger_ms,
            max_per_request=settings.max_tickets_per_request,
            buffer_limit=settings.intake_buffer_limit,
            timeout=settings.intake_enqueue_timeout_seconds,
            ack_when_queued=settings.intake_ack == "queued",
            recent=settings.intake_recent_orders,
        ),
        events=EventCache(
            inventory or DynamoInventory(dynamodb, settings.inventory_table),
            ttl=settings.intake_sold_out_ttl_seconds,
            max_events=settings.intake_event_cache_size,
            blocking=blocking,
            clock=clock,
        ),
        backlog=BacklogMonitor(
            SqsQueueDepth(sqs, settings.purchases_queue_url),
            limit=settings.intake_backlog_limit,
            interval=settings.intake_backlog_poll_seconds,
            blocking=blocking,
            clock=clock,
        ),
        orders=orders
        or DynamoOrders(
            dynamodb, orders_table=settings.orders_table, sagas_table=settings.sagas_table
        ),
        blocking=blocking,
    )
