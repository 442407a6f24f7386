"""Test-only Celery settings for ``test_heartbeat.py``: the service's, plus one throwaway queue.

The queue (short visibility timeout, a DLQ after 2 receives) is created by the test and named
by ``IT_HEARTBEAT_QUEUE_URL``; its tasks live in ``tests.integration.heartbeat_tasks``, so no
test task ships in ``tasks/``. Loaded by a worker started with
``config_module="tests.integration.heartbeat_celeryconfig"``.
"""

from __future__ import annotations

import os
from typing import Any

from kombu import Queue

from tasks import celeryconfig as _service
from tasks.celeryconfig import *  # noqa: F403 - the service's settings, then the overrides

HEARTBEAT_QUEUE = "it-heartbeat"

_predefined: dict[str, Any] = dict(_service.broker_transport_options["predefined_queues"])  # type: ignore[call-overload]
_predefined[HEARTBEAT_QUEUE] = {"url": os.environ["IT_HEARTBEAT_QUEUE_URL"]}
broker_transport_options = {**_service.broker_transport_options, "predefined_queues": _predefined}
task_queues = [*_service.task_queues, Queue(HEARTBEAT_QUEUE)]
imports = ("tests.integration.heartbeat_tasks",)
