"""A worker consumer that leaves every message it cannot run to the redrive policy.

Celery deletes an undecodable message so that it does not loop, and leaves an unknown one
invisible for the queue's whole visibility timeout. On SQS the redrive policy already ends the
loop, so here each such message is left in the queue, made visible again after the same short
backoff as a failed task, and reaches the DLQ after ``maxReceiveCount`` receives — where an
operator can inspect and redrive it — instead of vanishing or waiting minutes.
"""

from __future__ import annotations

from typing import Any, ClassVar

import structlog
from celery import bootsteps
from celery.worker.consumer import Consumer

from flashsale import aws

log = structlog.get_logger(__name__)

# A rejected (failed) message becomes visible again after this many seconds, by receive
# count, instead of after the full visibility timeout: a poison message reaches the DLQ in
# seconds, a transient failure gets a short pause. kombu applies it on reject for our tasks
# (``backoff_policy`` in celeryconfig); ``release_soon`` for messages that are not tasks.
REJECT_BACKOFF_SECONDS = {1: 1, 2: 2, 3: 4, 4: 8}


def release_soon(message: Any) -> None:
    """Make a rejected SQS message visible again after the backoff for its receive count."""
    info = message.delivery_info or {}
    sqs_message, queue_url = info.get("sqs_message"), info.get("sqs_queue")
    if not sqs_message or not queue_url:
        return
    receives = int(sqs_message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
    delay = REJECT_BACKOFF_SECONDS.get(receives, max(REJECT_BACKOFF_SECONDS.values()))
    aws.client("sqs").change_message_visibility(
        QueueUrl=queue_url, ReceiptHandle=sqs_message["ReceiptHandle"], VisibilityTimeout=delay
    )
    log.warning(
        "consumer.message_rejected",
        message_id=sqs_message.get("MessageId"),
        receives=receives,
        visible_in_s=delay,
    )


class DeadLetteringConsumer(Consumer):  # type: ignore[misc]
    def on_decode_error(self, message: Any, exc: Exception) -> None:
        log.error("consumer.undecodable_message", error=repr(exc))
        message.reject(requeue=False)
        release_soon(message)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        super().on_unknown_message(body, message)
        release_soon(message)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        super().on_unknown_task(body, message, exc)
        release_soon(message)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        super().on_invalid_task(body, message, exc)
        release_soon(message)


class HubTicker(bootsteps.StartStopStep):  # type: ignore[misc]
    """Wake the worker's event loop every few milliseconds.

    kombu's hub polls with a 1 s timeout whenever no timer is due, even if a callback was just
    queued with ``call_soon`` — and the SQS transport schedules its next ReceiveMessage that
    way. On a busy FIFO group that idles the worker ~1 s after every batch of messages (seen
    here: 10 tasks per 2 s). A short repeating timer bounds the poll timeout instead.
    """

    requires: ClassVar[set[str]] = {"celery.worker.components:Hub"}

    def include_if(self, worker: Any) -> bool:
        return bool(worker.app.conf.get("flashsale_hub_tick_seconds"))

    def start(self, worker: Any) -> None:
        if worker.hub is not None:
            interval = float(worker.app.conf.flashsale_hub_tick_seconds)
            self._timer = worker.hub.call_repeatedly(interval, _noop)

    def stop(self, worker: Any) -> None:
        timer = getattr(self, "_timer", None)
        if timer is not None:
            timer.cancel()


def _noop() -> None:
    """The ticker's timer does nothing: waking the loop is the point."""
