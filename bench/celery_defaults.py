"""The baseline's Celery configuration: the same queues, everything else Celery's default.

Default prefetch (4 per process), early acks, short polling with a 1 s idle sleep, no reject
backoff. Used by ``make bench`` as ``celery -A tasks --config bench.celery_defaults worker``.
"""

from __future__ import annotations

from flashsale.names import QueueRole
from flashsale.settings import get_settings

broker_url = "sqs://"
broker_transport_options = {
    "predefined_queues": {
        role.celery_queue: {"url": get_settings().queue_url(role)} for role in QueueRole
    },
}
task_routes = {"tasks.purchase.allocate": {"queue": QueueRole.PURCHASES.celery_queue}}
