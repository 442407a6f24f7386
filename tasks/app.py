"""The Celery application: configured from ``tasks.celeryconfig``, tasks from the flow modules."""

from __future__ import annotations

import os

from celery import Celery

from tasks.consumer import HubTicker

app = Celery(
    "flashsale",
    include=["tasks.purchase", "tasks.payment", "tasks.tickets", "tasks.notify"],
)
# ``celery --config MODULE`` (CELERY_CONFIG_MODULE) swaps the configuration, as the benchmark's
# baseline does with Celery's defaults.
app.config_from_object(os.environ.get("CELERY_CONFIG_MODULE", "tasks.celeryconfig"))
app.steps["worker"].add(HubTicker)
