"""The HTTP intake: the front door buyers reach (``python -m intake``).

A top-level package of its own, apart from ``tasks`` (the Celery worker package), because it
is a different process with a different job and shape: it runs behind a load balancer and
scales on request rate, answers in milliseconds, keeps only bounded, short-lived state, never
runs a task, and has its own IAM role (send to the purchases queue, read three tables). It
reuses the validation and batching of ``tasks.intake`` and the schemas of ``flashsale``.
"""

from __future__ import annotations

from intake.app import create_app
from intake.services import IntakeServices, build_services

__all__ = ["IntakeServices", "build_services", "create_app"]
