"""From an HTTP request to the purchases queue, through ``tasks.intake.Intake``.

By default (``intake_ack=queued``) the HTTP answer ``202 Accepted`` is given only once the
request's batch is on SQS: an accepted order id is then never lost with the process (a crash, a
deploy), and every accepted request reaches a final state. It costs the linger time plus one
``SendMessageBatch`` (shared by up to 320 buyers) of latency, and measured here about half the
requests per second of answering at once. A request not on the queue within ``timeout`` gets a
503; it may still be sent later, which is harmless: the client retries with the same request
id, and one request id is only ever one order.

``intake_ack=buffered`` answers as soon as the request is in the buffer, as ``tasks.intake``
does: faster, but a crash of the intake process loses what it had not sent yet (at most the
buffer bound, usually one linger's worth); those clients see ``pending`` until they retry.

A repeat of a request (a double click, a retry after a lost answer) is answered from this
process's memory of the order ids it queued (``recent``, least recently used forgotten) or joins
the wait of its copy still in the buffer: it is not queued again. The allocator would make the
copy one order anyway, but a copy costs it a cancelled transaction and a read.

``Intake.submit`` runs on the event loop itself (about 35 us; a thread hop per request cost
more than it does), so acceptance order is the order requests reach it. It never sends there:
``TrackedIntake`` leaves a full buffer to the linger thread, which sends within ``linger / 2``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import structlog

from flashsale.messages import PurchaseBatch, PurchaseRequest
from intake.exceptions import Overloaded
from tasks.intake import Accepted, Intake

log = structlog.get_logger(__name__)

# After a failed send, sending pauses this long (doubling, capped): a refusing queue is not
# hammered every linger tick. The buffer bound answers new buyers meanwhile.
FIRST_BACKOFF_SECONDS = 0.1
MAX_BACKOFF_SECONDS = 5.0


class TrackedIntake(Intake):
    """``Intake`` that reports the order ids of each batch that reached the queue; that sends
    only from its linger thread (``submit`` on the event loop must never block on SQS); and
    that keeps running when a send fails (the base class raises out of ``flush``, which would
    end its linger thread for good): what was not sent stays buffered, in order, for next time.
    """

    def __init__(self, *args: Any, on_sent: Callable[[list[str]], None], **kwargs: Any) -> None:
        self._on_sent = on_sent
        self.requests_sent = 0
        self.send_failures = 0
        self._backoff = 0.0
        self._resume_at = 0.0
        self._closing = False
        super().__init__(*args, **kwargs)

    def _send(self, batches: list[PurchaseBatch]) -> int:
        sent = super()._send(batches)
        order_ids = [r.order_id for batch in batches for r in batch.requests]
        self.requests_sent += len(order_ids)
        self._on_sent(order_ids)
        return sent

    def flush(self) -> int:
        if not self._closing and threading.current_thread() is not self._flusher:
            return 0  # submit() found the buffer full: the linger thread sends it right away
        if not self._closing and time.monotonic() < self._resume_at:
            return 0
        try:
            sent = super().flush()
        except Exception as exc:  # requeued by Intake.flush; retried after the backoff
            self.send_failures += 1
            self._backoff = min(max(2 * self._backoff, FIRST_BACKOFF_SECONDS), MAX_BACKOFF_SECONDS)
            self._resume_at = time.monotonic() + self._backoff
            log.error("intake.send_failed", error=repr(exc), retry_in_s=self._backoff)
            return 0
        self._backoff = 0.0
        return sent

    def close(self) -> None:
        self._closing = True
        super().close()


class Enqueuer:
    """Puts validated purchases on the queue and tells each request when it is there."""

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        *,
        batch_size: int,
        linger_ms: int,
        max_per_request: int,
        buffer_limit: int,
        timeout: float,
        ack_when_queued: bool = True,
        recent: int = 100_000,
    ) -> None:
        self._buffer_limit = buffer_limit
        self._timeout = timeout
        self._ack_when_queued = ack_when_queued
        self._loop: asyncio.AbstractEventLoop | None = None
        # Order id -> the requests waiting for it to reach the queue (on the loop only).
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        # Order id -> its acceptance, while in the buffer, then once on the queue (on the loop).
        self._unsent: dict[str, Accepted] = {}
        self._queued: OrderedDict[str, Accepted] = OrderedDict()
        self._recent = recent
        self.submitted = 0
        self.repeats = 0
        self._intake = TrackedIntake(
            sqs,
            queue_url,
            batch_size=batch_size,
            linger_ms=linger_ms,
            max_per_request=max_per_request,
            on_sent=self._sent,
        )

    @property
    def buffered(self) -> int:
        """Requests handed to the intake and not yet on the queue."""
        return max(0, self.submitted - self._intake.requests_sent)

    @property
    def requests_sent(self) -> int:
        return self._intake.requests_sent

    @property
    def messages_sent(self) -> int:
        return self._intake.messages_sent

    def knows(self, order_id: str) -> bool:
        """Whether ``order_id`` is in the buffer or was put on the queue by this process."""
        return order_id in self._unsent or order_id in self._queued

    async def enqueue(self, request: PurchaseRequest) -> Accepted:
        """Accept ``request`` and return once it is on the queue (or, with
        ``ack_when_queued=False``, once it is in the buffer); ``Overloaded`` if the buffer is
        full or the queue does not take it within the timeout. A repeat is never queued twice.
        """
        order_id = request.order_id
        if (queued := self._queued.get(order_id)) is not None:
            self._queued.move_to_end(order_id)
            self.repeats += 1
            return queued
        self._loop = asyncio.get_running_loop()
        accepted = self._unsent.get(order_id)
        if accepted is not None:
            self.repeats += 1
        else:
            accepted = self._submit(request)
        if self._ack_when_queued:
            await self._until_queued(order_id)
        return accepted

    def _submit(self, request: PurchaseRequest) -> Accepted:
        if self.buffered >= self._buffer_limit:
            raise Overloaded(
                "buffer",
                f"{self.buffered} purchases are waiting to be queued (limit "
                f"{self._buffer_limit}); retry with the same request_id",
            )
        self.submitted += 1
        try:
            accepted = self._intake.submit(request)
        except Exception:  # refused (e.g. more tickets than allowed): never buffered
            self.submitted -= 1
            raise
        self._unsent[request.order_id] = accepted
        return accepted

    async def _until_queued(self, order_id: str) -> None:
        """Wait for ``order_id``'s batch to reach the queue. No ``await`` comes between finding
        the request unsent and registering the waiter, and ``_wake`` runs on this loop: a send
        cannot slip between them."""
        assert self._loop is not None
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._waiters.setdefault(order_id, []).append(waiter)
        try:
            async with asyncio.timeout(self._timeout):
                await waiter
        except TimeoutError:
            raise Overloaded(
                "enqueue_timeout",
                f"not on the queue within {self._timeout:g} s; retry with the same request_id "
                "(it cannot become a second order)",
            ) from None
        finally:
            self._forget(order_id, waiter)

    async def close(self) -> None:
        """Flush what is buffered (one last try even after failures) and stop."""
        await asyncio.to_thread(self._intake.close)
        if self.buffered:
            # Nobody was told 202 for these (that waits for the send): their clients got a 503.
            log.error("intake.unsent_at_shutdown", requests=self.buffered)

    def _sent(self, order_ids: list[str]) -> None:
        """From a sending thread: wake the requests whose order ids just reached the queue."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        # RuntimeError: the loop closed meanwhile (shutdown), and nobody is waiting.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._wake, order_ids)

    def _wake(self, order_ids: list[str]) -> None:
        for order_id in order_ids:
            accepted = self._unsent.pop(order_id, None)
            if accepted is not None and self._recent:
                self._queued[order_id] = accepted
                if len(self._queued) > self._recent:
                    self._queued.popitem(last=False)
            for waiter in self._waiters.pop(order_id, ()):
                if not waiter.done():
                    waiter.set_result(None)

    def _forget(self, order_id: str, waiter: asyncio.Future[None]) -> None:
        waiters = self._waiters.get(order_id)
        if waiters is None:
            return
        if waiter in waiters:
            waiters.remove(waiter)
        if not waiters:
            del self._waiters[order_id]
