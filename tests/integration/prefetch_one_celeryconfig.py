"""Test-only Celery settings: the service's, with a prefetch of one message.

A worker that holds its one message stops receiving, so in the duplicate-delivery scenario the
message that outlives its visibility timeout is received again by *another* worker — never by
the one still working on it (which would, at a short visibility timeout, keep receiving it until
the redrive policy dead-lettered it). Loaded with
``config_module="tests.integration.prefetch_one_celeryconfig"``.
"""

from __future__ import annotations

from tasks.celeryconfig import *  # noqa: F403 - the service's settings, then the override

worker_prefetch_multiplier = 1
