"""A visibility heartbeat: a long task keeps its own SQS message invisible while it runs.

Why: SQS hands a message out again once its visibility timeout passes without a delete, so a
task that outlasts the timeout runs a second time while the first is still working. Raising
the queue's timeout to the worst case would also delay, by as much, every redelivery after a
worker crash. Instead the task extends its own message's visibility (``ChangeMessageVisibility``)
every ``every`` seconds by ``extend_by`` seconds while it runs, and stops when it ends; the
ack (a delete) or the reject backoff (``tasks.consumer``) then decides what happens next.

How a task reaches its message with kombu's SQS transport (5.6.2): ``Channel._envelope_payload``
stores the receipt handle as the message's ``properties["delivery_tag"]``, and the raw SQS
message and the queue URL as ``properties["delivery_info"]["sqs_message"]`` and
``["sqs_queue"]``. Celery hands the message properties to the pool process as
``task.request.properties``; ``task.request.delivery_info`` only keeps exchange, routing key,
priority and redelivered (``celery.worker.request.Request.__init__``).

Two ways to use it::

    @app.task(bind=True, acks_late=True)
    def rebuild(self, ...):
        with visibility_heartbeat(self.request, every=20, extend_by=60):
            ...

    @app.task(base=HeartbeatTask, acks_late=True)   # every run of the task, same settings
    def rebuild(...): ...
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import structlog
from botocore.exceptions import BotoCoreError, ClientError
from celery import Task

from flashsale import aws

log = structlog.get_logger(__name__)

# SQS refuses a visibility timeout above 12 hours.
MAX_VISIBILITY_SECONDS = 43_200
# Answers that mean the message is no longer ours: deleted, or handed to another consumer
# after its visibility ran out. Extending again cannot help.
_LOST_CODES = frozenset(
    {
        "ReceiptHandleIsInvalid",
        "MessageNotInflight",
        "AWS.SimpleQueueService.MessageNotInflight",
        "InvalidParameterValue",
    }
)


@dataclass(frozen=True)
class SqsDelivery:
    """Where a task's message came from: enough to change its visibility."""

    queue_url: str
    receipt_handle: str
    message_id: str | None = None


def sqs_delivery(request: Any) -> SqsDelivery | None:
    """The SQS message behind a Celery task request, or ``None`` (not from SQS, or eager)."""
    properties = getattr(request, "properties", None) or {}
    info = properties.get("delivery_info") or {}
    sqs_message = info.get("sqs_message") or {}
    receipt_handle = sqs_message.get("ReceiptHandle") or properties.get("delivery_tag")
    queue_url = info.get("sqs_queue")
    if not receipt_handle or not queue_url:
        return None
    return SqsDelivery(str(queue_url), str(receipt_handle), sqs_message.get("MessageId"))


class VisibilityHeartbeat:
    """A daemon thread that extends one message's visibility until stopped.

    A failed extension is logged and tried again at the next beat; an answer saying the
    message is gone sets ``lost`` and ends the heartbeat (the task may then be running twice:
    it must be idempotent anyway).
    """

    def __init__(
        self,
        sqs: Any,
        delivery: SqsDelivery,
        *,
        every: float,
        extend_by: int,
    ) -> None:
        if not 0 < every < extend_by <= MAX_VISIBILITY_SECONDS:
            raise ValueError(
                f"need 0 < every < extend_by <= {MAX_VISIBILITY_SECONDS}, "
                f"got every={every}, extend_by={extend_by}"
            )
        self.delivery = delivery
        self.every = every
        self.extend_by = extend_by
        self.beats = 0
        self.failures = 0
        self.lost = False
        self._sqs = sqs
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="visibility-heartbeat", daemon=True)

    def start(self) -> VisibilityHeartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop beating; returns once no extension is in flight."""
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        while not self._stopped.wait(self.every):
            if not self._extend():
                return

    def _extend(self) -> bool:
        """One beat; ``False`` when the message is no longer ours."""
        ids = {"message_id": self.delivery.message_id, "queue_url": self.delivery.queue_url}
        try:
            self._sqs.change_message_visibility(
                QueueUrl=self.delivery.queue_url,
                ReceiptHandle=self.delivery.receipt_handle,
                VisibilityTimeout=self.extend_by,
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in _LOST_CODES:
                self.lost = True
                log.warning("heartbeat.lost", code=code, beats=self.beats, **ids)
                return False
            self.failures += 1
            log.warning("heartbeat.extend_failed", code=code, **ids)
            return True
        except BotoCoreError as exc:
            self.failures += 1
            log.warning("heartbeat.extend_failed", error=repr(exc), **ids)
            return True
        self.beats += 1
        log.debug("heartbeat.extended", extend_by=self.extend_by, beats=self.beats, **ids)
        return True


@contextmanager
def visibility_heartbeat(
    request: Any,
    queue_url: str | None = None,
    *,
    every: float,
    extend_by: int,
    sqs: Any | None = None,
) -> Iterator[VisibilityHeartbeat | None]:
    """Keep the message of ``request`` (a task's ``self.request``) invisible while the block
    runs; the heartbeat stops when the block ends, however it ends.

    ``queue_url`` defaults to the queue the message came from. Yields ``None`` (and does
    nothing) when the task did not come from SQS, e.g. when it is called directly.
    """
    delivery = sqs_delivery(request)
    if delivery is None:
        log.debug("heartbeat.not_from_sqs", task_id=getattr(request, "id", None))
        yield None
        return
    if queue_url is not None:
        delivery = SqsDelivery(queue_url, delivery.receipt_handle, delivery.message_id)
    heartbeat = VisibilityHeartbeat(
        sqs if sqs is not None else aws.client("sqs"), delivery, every=every, extend_by=extend_by
    ).start()
    try:
        yield heartbeat
    finally:
        heartbeat.stop()


class HeartbeatTask(Task):  # type: ignore[misc]
    """A task base class: every run keeps its message invisible with a heartbeat.

    Uses Celery's ``before_start``/``after_return`` hooks, which run in the pool process with
    the real request, rather than ``__call__`` (a custom ``__call__`` gets a bare request).
    """

    visibility_heartbeat_every: ClassVar[float] = 20.0
    visibility_heartbeat_extend_by: ClassVar[int] = 60

    _heartbeats: ClassVar[dict[str, VisibilityHeartbeat]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        delivery = sqs_delivery(self.request)
        if delivery is None:
            return
        heartbeat = VisibilityHeartbeat(
            aws.client("sqs"),
            delivery,
            every=self.visibility_heartbeat_every,
            extend_by=self.visibility_heartbeat_extend_by,
        ).start()
        with self._lock:
            self._heartbeats[task_id] = heartbeat

    def after_return(
        self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        with self._lock:
            heartbeat = self._heartbeats.pop(task_id, None)
        if heartbeat is not None:
            heartbeat.stop()
