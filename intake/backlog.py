"""The purchases queue's backlog, polled in the background: the intake's main backpressure.

Buyers accepted past what the workers can decide in reasonable time only wait longer for the
same answer, so past ``limit`` messages the intake answers 503 with ``Retry-After`` instead.
The queue is asked at most once per ``interval`` per process (``GetQueueAttributes``), never
per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from intake.blocking import Blocking

log = structlog.get_logger(__name__)

# Waiting and being worked on: both are requests not yet decided.
BACKLOG_ATTRIBUTES = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]


class QueueDepth(Protocol):
    def depth(self) -> int:
        """Messages on the queue now (approximately, as SQS counts them)."""
        ...


class SqsQueueDepth:
    def __init__(self, sqs: Any, queue_url: str) -> None:
        self._sqs = sqs
        self._queue_url = queue_url

    def depth(self) -> int:
        response = self._sqs.get_queue_attributes(
            QueueUrl=self._queue_url, AttributeNames=BACKLOG_ATTRIBUTES
        )
        return sum(int(response["Attributes"].get(name, 0)) for name in BACKLOG_ATTRIBUTES)


class BacklogMonitor:
    """The last known depth of the purchases queue; ``over_limit`` is read per request."""

    def __init__(
        self,
        probe: QueueDepth,
        *,
        limit: int,
        interval: float,
        blocking: Blocking,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probe = probe
        self.limit = limit
        self._interval = interval
        self._blocking = blocking
        self._clock = clock
        self.depth: int | None = None
        self.peak: int | None = None
        self.polls = 0
        self._polled_at: float | None = None

    @property
    def over_limit(self) -> bool:
        return self.depth is not None and self.depth > self.limit

    def reachable(self) -> bool:
        """Whether the last successful poll is recent (three intervals)."""
        return self._polled_at is not None and (
            self._clock() - self._polled_at <= 3 * self._interval
        )

    async def poll(self) -> None:
        """One ``GetQueueAttributes``; on failure the last depth stands."""
        self.polls += 1
        try:
            depth = await self._blocking.run(self._probe.depth)
        except Exception as exc:  # the sends fail too, and the buffer bound takes over
            log.warning("intake.backlog_poll_failed", error=repr(exc))
            return
        if self.over_limit != (depth > self.limit):
            log.info("intake.backlog_bound", depth=depth, limit=self.limit, over=depth > self.limit)
        self.depth = depth
        self.peak = depth if self.peak is None else max(self.peak, depth)
        self._polled_at = self._clock()

    async def run(self) -> None:
        """Poll every ``interval`` (after the first poll, made at startup) for as long as the
        intake runs (cancelled at shutdown)."""
        while True:
            await asyncio.sleep(self._interval)
            await self.poll()
