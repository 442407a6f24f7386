"""The Celery application: configured from ``tasks.celeryconfig``, tasks from the flow modules."""

from __future__ import annotations

from celery import Celery

from tasks.consumer import HubTicker

app = Celery("flashsale", include=["tasks.purchase"])
app.config_from_object("tasks.celeryconfig")
app.steps["worker"].add(HubTicker)
