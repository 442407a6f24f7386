"""The ticket-purchase task: allocate seats for one batch of accepted requests.

Thin on purpose: validation and the DynamoDB work live in ``tasks.allocation``. A message that
fails validation raises, is rejected without being deleted, and reaches the purchases DLQ
through the redrive policy; the worker carries on.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import structlog

from flashsale import aws
from flashsale.messages import PurchaseBatch
from flashsale.settings import get_settings
from tasks.allocation import SeatAllocator
from tasks.app import app
from tasks.purchase_saga import orchestrator, saga_starter

log = structlog.get_logger(__name__)


@cache
def _allocator() -> SeatAllocator:
    settings = get_settings()
    return SeatAllocator(
        aws.client("dynamodb"),
        inventory_table=settings.inventory_table,
        orders_table=settings.orders_table,
        max_per_request=settings.max_tickets_per_request,
        start_saga=saga_starter(orchestrator(), settings),
    )


@app.task(name="tasks.purchase.allocate", acks_late=True)
def allocate(batch: dict[str, Any]) -> dict[str, int]:
    """Decide every request of a purchase batch: confirmed, sold out or rejected."""
    parsed = PurchaseBatch.model_validate(batch)
    outcome = _allocator().allocate(parsed)
    summary = outcome.summary()
    log.info(
        "purchase.batch_allocated", event_id=parsed.event_id, batch_id=parsed.batch_id, **summary
    )
    return summary
