"""The intake: validate a purchase request, accept it, enqueue it on ``purchases.fifo``.

Invalid requests get a clear error here and are never enqueued. Accepted requests are buffered
for at most ``linger_ms`` and sent as batches — many requests per message (one DynamoDB
transaction each on the worker), ten messages per ``SendMessageBatch`` — in acceptance order,
with the event as the FIFO message group, so seats go first come, first served.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import ValidationError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_result,
    stop_after_attempt,
    wait_random_exponential,
)

from flashsale.messages import AcceptedRequest, PurchaseBatch, PurchaseRequest
from flashsale.names import QueueRole
from flashsale.task_messages import batch_entry
from tasks.exceptions import EnqueueFailed, InvalidPurchaseRequest

log = structlog.get_logger(__name__)

PURCHASE_TASK = "tasks.purchase.allocate"
SQS_BATCH_LIMIT = 10
SEND_ATTEMPTS = 8


def _give_up(state: RetryCallState) -> None:
    raise EnqueueFailed(f"SQS kept failing purchase messages after {state.attempt_number} tries")


@dataclass(frozen=True)
class Accepted:
    """The intake's answer: the order id to poll, and the place in line."""

    order_id: str
    event_id: str
    accepted_seq: int


def parse_request(raw: Mapping[str, Any] | PurchaseRequest) -> PurchaseRequest:
    """Validate a raw request, or raise InvalidPurchaseRequest naming every bad field."""
    if isinstance(raw, PurchaseRequest):
        return raw
    if not isinstance(raw, Mapping):
        raise InvalidPurchaseRequest(f"a purchase request is an object, not {type(raw).__name__}")
    try:
        return PurchaseRequest.model_validate(dict(raw))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'request'}: {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidPurchaseRequest(f"invalid purchase request: {problems}") from None


class Intake:
    """Accepts purchase requests and sends them in ordered batches; thread-safe."""

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        *,
        batch_size: int,
        linger_ms: int,
        max_per_request: int,
    ) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._batch_size = batch_size
        self._linger_s = linger_ms / 1000
        self._max_per_request = max_per_request
        self._lock = threading.Lock()  # guards the buffers and the sequence
        self._send_lock = threading.Lock()  # one sender at a time keeps FIFO order
        self._pending: dict[str, list[AcceptedRequest]] = {}
        self._oldest: float | None = None
        self._last_seq = 0
        self._closed = threading.Event()
        self._flusher = threading.Thread(target=self._flush_lingering, daemon=True)
        self._flusher.start()
        self.messages_sent = 0

    def submit(self, raw: Mapping[str, Any] | PurchaseRequest) -> Accepted:
        """Validate and accept one request; raises InvalidPurchaseRequest at the edge."""
        request = parse_request(raw)
        if request.quantity > self._max_per_request:
            raise InvalidPurchaseRequest(
                f"invalid purchase request: quantity: at most {self._max_per_request} tickets"
            )
        now = time.time()
        with self._lock:
            # Microseconds, strictly increasing: a place in line comparable across runs.
            self._last_seq = max(self._last_seq + 1, time.time_ns() // 1000)
            accepted = AcceptedRequest(
                order_id=request.order_id,
                buyer_id=request.buyer_id,
                request_id=request.request_id,
                quantity=request.quantity,
                accepted_seq=self._last_seq,
                accepted_at_ms=int(now * 1000),
                email=request.email,
                phone=request.phone,
            )
            pending = self._pending.setdefault(request.event_id, [])
            pending.append(accepted)
            self._oldest = self._oldest or now
            full = len(pending) >= self._batch_size * SQS_BATCH_LIMIT
        if full:
            self.flush()
        return Accepted(accepted.order_id, request.event_id, accepted.accepted_seq)

    def flush(self) -> int:
        """Send everything buffered; returns the number of SQS messages sent.

        If sending fails, what was not sent goes back to the front of the buffer, in order,
        and the error is raised: an accepted request is never dropped by the intake.
        """
        with self._send_lock:
            with self._lock:
                pending, self._pending, self._oldest = self._pending, {}, None
            sent = 0
            try:
                while pending:
                    event_id, requests = next(iter(pending.items()))
                    chunk = requests[: self._batch_size * SQS_BATCH_LIMIT]
                    batches = [
                        PurchaseBatch(event_id=event_id, requests=chunk[i : i + self._batch_size])
                        for i in range(0, len(chunk), self._batch_size)
                    ]
                    sent += self._send(batches)
                    if len(chunk) == len(requests):
                        del pending[event_id]
                    else:
                        pending[event_id] = requests[len(chunk) :]
            finally:
                self.messages_sent += sent
                if pending:
                    self._requeue(pending)
            return sent

    def _requeue(self, unsent: dict[str, list[AcceptedRequest]]) -> None:
        with self._lock:
            for event_id, requests in self._pending.items():
                unsent.setdefault(event_id, []).extend(requests)
            self._pending = unsent
            self._oldest = self._oldest or time.time()

    def close(self) -> None:
        """Flush what is buffered and stop the linger thread."""
        self._closed.set()
        self._flusher.join()
        self.flush()

    def _send(self, batches: list[PurchaseBatch]) -> int:
        entries = [
            batch_entry(
                str(n),
                PURCHASE_TASK,
                {"batch": b.model_dump(mode="json")},
                routing_key=QueueRole.PURCHASES.celery_queue,
                group_id=b.event_id,
                dedup_id=b.batch_id,
            )
            for n, b in enumerate(batches)
        ]
        remaining = entries

        def send_remaining() -> list[dict[str, Any]]:
            nonlocal remaining
            remaining = self._send_entries(remaining)
            return remaining

        Retrying(
            retry=retry_if_result(bool),  # entries left to send
            wait=wait_random_exponential(multiplier=0.05, max=2),
            stop=stop_after_attempt(SEND_ATTEMPTS),
            retry_error_callback=_give_up,
        )(send_remaining)
        return len(batches)

    def _send_entries(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One SendMessageBatch; returns the entries still to send, in order."""
        response = self._sqs.send_message_batch(QueueUrl=self._queue_url, Entries=entries)
        failed = response.get("Failed", [])
        if not failed:
            return []
        if any(f.get("SenderFault") for f in failed):
            raise EnqueueFailed(f"SQS refused purchase messages: {failed}")
        # Resend from the first failure on, in order, with the same dedup ids: the FIFO queue
        # drops those that did arrive, and the group's order is kept.
        log.warning("intake.batch_send_partial_failure", failed=len(failed))
        first = min(int(f["Id"]) for f in failed)
        return [e for e in entries if int(e["Id"]) >= first]

    def _flush_lingering(self) -> None:
        while not self._closed.wait(self._linger_s / 2 or 0.001):
            oldest = self._oldest
            if oldest is not None and time.time() - oldest >= self._linger_s:
                self.flush()
