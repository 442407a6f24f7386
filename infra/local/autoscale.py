"""Scale Celery workers on a queue's depth: the local stand-in for an ECS target-tracking policy.

Why: a producer can outrun one worker, and the backlog alarm only tells someone. On AWS the
service's desired count would follow ``ApproximateNumberOfMessagesVisible`` (target tracking on
backlog per task); locally this controller does the same with ``Fleet``: it polls the queue's
visible depth, starts a worker while the backlog per worker is above ``per_worker`` (up to
``max_workers``), and stops one (a warm shutdown, which releases its prefetched messages at
once) after ``idle_polls`` polls in a row that would need fewer, down to ``min_workers``.

It adds at most one worker per poll and waits for it to be ready, as a real scale-out would
wait for a task to start; scaling in is slower on purpose, so a brief lull does not stop a
worker that the next burst needs.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from infra.local.fleet import Fleet


@dataclass(frozen=True)
class Sample:
    """One poll: when (seconds since start), the visible depth, workers before the decision,
    and the decision (+1 started, -1 stopped, 0 kept)."""

    at: float
    depth: int
    workers: int
    change: int


@dataclass
class QueueScaler:
    """Keeps ``min_workers``..``max_workers`` workers on ``queues``, following the depth of
    ``queue_url``. ``start(name)`` and ``stop(name)`` default to the fleet's own."""

    fleet: Fleet
    sqs: Any
    queue_url: str
    queues: list[str]
    name_prefix: str = "scaled"
    min_workers: int = 1
    max_workers: int = 4
    per_worker: int = 20
    idle_polls: int = 3
    interval: float = 1.0
    worker_env: dict[str, str] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    workers: list[str] = field(default_factory=list)
    started_total: int = 0
    _below: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _began: float = 0.0
    error: BaseException | None = None

    @property
    def max_depth(self) -> int:
        return max((s.depth for s in self.samples), default=0)

    @property
    def max_workers_reached(self) -> int:
        return max((s.workers + max(s.change, 0) for s in self.samples), default=len(self.workers))

    def depth(self) -> int:
        """Messages waiting to be received (what a backlog-per-task policy tracks)."""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"])

    def wanted(self, depth: int) -> int:
        """Workers the depth calls for, within the bounds."""
        return max(self.min_workers, min(self.max_workers, math.ceil(depth / self.per_worker)))

    def step(self) -> Sample:
        """One poll and at most one change."""
        depth = self.depth()
        current = len(self.workers)
        target = self.wanted(depth)
        change = 0
        if current < target:
            self._below = 0
            self._start_one()
            change = 1
        elif current > target:
            self._below += 1
            if self._below >= self.idle_polls:
                self._below = 0
                self._stop_one()
                change = -1
        else:
            self._below = 0
        sample = Sample(round(time.monotonic() - self._began, 2), depth, current, change)
        self.samples.append(sample)
        return sample

    def _start_one(self) -> None:
        self.started_total += 1
        name = f"{self.name_prefix}-{self.started_total}"
        self.fleet.start_worker(name, self.queues, extra_env=self.worker_env)
        self.workers.append(name)

    def _stop_one(self) -> None:
        name = self.workers.pop()
        self.fleet.stop(name, timeout=60)

    def start(self) -> QueueScaler:
        """Run in a background thread until ``stop()``; the minimum is started at once."""
        self._began = time.monotonic()
        while len(self.workers) < self.min_workers:
            self._start_one()

        def loop() -> None:
            try:
                while not self._stop.is_set():
                    self.step()
                    self._stop.wait(self.interval)
            except BaseException as exc:  # reported by stop(), never swallowed
                self.error = exc

        self._thread = threading.Thread(target=loop, name="queue-scaler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling (the workers keep running: ``Fleet.stop_all`` ends them)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)
        if self.error is not None:
            raise RuntimeError("the scaler failed") from self.error
