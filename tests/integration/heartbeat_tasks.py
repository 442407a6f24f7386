"""Test-only tasks for ``test_heartbeat.py``: work that outlasts its queue's visibility timeout.

Each run appends one line to ``record`` (a file the test reads), so executions are counted
exactly, whichever worker process ran them.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import nullcontext
from typing import Any

from tasks.app import app
from tasks.heartbeat import HeartbeatTask, sqs_delivery, visibility_heartbeat

EVERY_SECONDS = 1.0
EXTEND_BY_SECONDS = 4


def _record(path: str, run_id: str, phase: str, request: Any, beats: int | None = None) -> None:
    """One line per start and per end of a run: a second run shows up as soon as it starts."""
    delivery = sqs_delivery(request)
    line = {
        "run_id": run_id,
        "phase": phase,
        "at": time.time(),
        "pid": os.getpid(),
        "message_id": delivery.message_id if delivery else None,
        "beats": beats,
    }
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(line) + "\n")


@app.task(name="it.heartbeat.slow", bind=True, acks_late=True)
def slow(self: Any, record: str, run_id: str, seconds: float, heartbeat: bool) -> None:
    """Work for ``seconds``, with the heartbeat context manager or without it."""
    _record(record, run_id, "start", self.request)
    keeper = (
        visibility_heartbeat(self.request, every=EVERY_SECONDS, extend_by=EXTEND_BY_SECONDS)
        if heartbeat
        else nullcontext(None)
    )
    with keeper as beating:
        time.sleep(seconds)  # the long work itself, not a wait for a condition
    _record(record, run_id, "end", self.request, beating.beats if beating else None)


class _Beating(HeartbeatTask):
    visibility_heartbeat_every = EVERY_SECONDS
    visibility_heartbeat_extend_by = EXTEND_BY_SECONDS


@app.task(name="it.heartbeat.slow_base", bind=True, base=_Beating, acks_late=True)
def slow_base(self: Any, record: str, run_id: str, seconds: float) -> None:
    """The same work, kept invisible by the ``HeartbeatTask`` base class."""
    _record(record, run_id, "start", self.request)
    time.sleep(seconds)
    _record(record, run_id, "end", self.request)
