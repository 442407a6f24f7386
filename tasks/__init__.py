"""Celery tasks: ``celery -A tasks worker``.

Celery finds the app as ``tasks.app``; the task modules are the steps of the flow
(intake → purchase → payment → notification).
"""

from tasks.app import app

__all__ = ["app"]
