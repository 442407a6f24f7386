"""A worker consumer that leaves every message it cannot run to the redrive policy.

Celery deletes an undecodable message so that it does not loop, and leaves an unknown one
invisible for the queue's whole visibility timeout. On SQS the redrive policy already ends the
loop, so here each such message is left in the queue, made visible again after the same short
backoff as a failed task, and reaches the DLQ after ``maxReceiveCount`` receives — where an
operator can inspect and redrive it — instead of vanishing or waiting minutes.

It also keeps the worker alive where kombu 5.6.2's SQS transport would let an exception escape
the worker's event loop ("Unrecoverable error", the process exits): a throttled receive
(``tolerate_throttled_receives``) and a message whose kombu envelope has fields of the wrong
type (``tolerate_malformed_envelopes``). Both were found with ``infra.local.faults`` and the
fuzzed raw messages of ``tests/integration``.

And on a warm shutdown it hands back what it holds but will not run as soon as its last receive
has answered (``DeadLetteringConsumer.on_close``), instead of leaving it invisible to every other
worker.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any, ClassVar

import structlog
from botocore.exceptions import BotoCoreError, ClientError
from celery import bootsteps
from celery.worker import state as worker_state
from celery.worker.consumer import Consumer
from vine import promise

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
    try:
        aws.client("sqs").change_message_visibility(
            QueueUrl=queue_url, ReceiptHandle=sqs_message["ReceiptHandle"], VisibilityTimeout=delay
        )
    except (ClientError, BotoCoreError) as exc:
        # Raised here it would end the worker; the message comes back after the queue's
        # visibility timeout instead, and still reaches the DLQ.
        log.error(
            "consumer.release_failed", message_id=sqs_message.get("MessageId"), error=repr(exc)
        )
        return
    log.warning(
        "consumer.message_rejected",
        message_id=sqs_message.get("MessageId"),
        receives=receives,
        visible_in_s=delay,
    )


# The error codes AWS uses for throttling (botocore's standard retry mode treats them so);
# HTTP 429 counts too.
THROTTLING_CODES = frozenset(
    {
        "RequestThrottled",
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "KMS.ThrottlingException",
        "SlowDown",
    }
)
# After a throttled receive the next one waits this long, doubling per throttle up to the cap,
# and back to none after a receive that succeeds.
RECEIVE_BACKOFF_FIRST_SECONDS = 0.1
RECEIVE_BACKOFF_CAP_SECONDS = 5.0
_XML_CODE = re.compile(rb"<Code>([^<]+)</Code>")


def throttling_code(status: int, headers: dict[str, str], body: bytes) -> str | None:
    """The throttling error code of an SQS error answer, or ``None`` if it is another error.

    Read like botocore does: the JSON protocol's ``x-amzn-query-error`` header or ``__type``,
    or the query protocol's ``<Code>``.
    """
    if status < 400 or status >= 500:
        return None
    lowered = {key.lower(): value for key, value in headers.items()}
    code = lowered.get("x-amzn-query-error", "").split(";")[0]
    if not code:
        try:
            document = json.loads(body or b"{}")
            code = str(document.get("__type", "") if isinstance(document, dict) else "")
        except ValueError:
            found = _XML_CODE.search(body or b"")
            code = found.group(1).decode("utf-8", "replace") if found else ""
        code = code.rsplit("#", 1)[-1]
    if code in THROTTLING_CODES:
        return code
    return "HTTP 429" if status == 429 else None


class ReceiveBackoff:
    """How long the next receive waits after throttled ones (one per worker process)."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.until = 0.0

    def throttled(self) -> float:
        self.delay = min(
            max(self.delay * 2, RECEIVE_BACKOFF_FIRST_SECONDS), RECEIVE_BACKOFF_CAP_SECONDS
        )
        self.until = time.monotonic() + self.delay
        return self.delay

    def succeeded(self) -> None:
        self.delay = 0.0

    def remaining(self) -> float:
        return max(0.0, self.until - time.monotonic())


receive_backoff = ReceiveBackoff()


def tolerate_throttled_receives() -> None:
    """Make a throttled ReceiveMessage an empty receive followed by a backoff, not a crash.

    kombu 5.6.2's asynchronous receive turns a 5xx or a timeout into an empty list
    (celery/kombu#1064) but raises on any 4xx, and the exception escapes the worker's event
    loop: one ``RequestThrottled`` (HTTP 400) ends the worker with "Unrecoverable error" (seen
    with ``infra.local.faults``). Other 4xx answers (access denied, no such queue) still stop
    the worker: those are configuration errors a restart does not fix. Idempotent; patches
    the pinned kombu in this process only.
    """
    from kombu.asynchronous.aws.connection import AsyncAWSQueryConnection
    from kombu.transport.SQS import Channel

    if getattr(AsyncAWSQueryConnection._on_list_ready, "flashsale_patched", False):
        return
    on_list_ready = AsyncAWSQueryConnection._on_list_ready
    loop1 = Channel._loop1

    def _on_list_ready(self: Any, parent: Any, markers: Any, operation: str, response: Any) -> Any:
        if response.status != 200:
            code = throttling_code(
                int(response.status or 0), dict(response.getheaders()), response.read() or b""
            )
            if code is not None:
                delay = receive_backoff.throttled()
                log.warning(
                    "consumer.receive_throttled", operation=operation, code=code, retry_in_s=delay
                )
                return []
        result = on_list_ready(self, parent, markers, operation, response)
        if response.status == 200:
            receive_backoff.succeeded()
        return result

    def _loop1(self: Any, queue: str, _: Any = None) -> None:
        wait = receive_backoff.remaining()
        if wait > 0:
            self.hub.call_later(wait, self._schedule_queue, queue)
        else:
            loop1(self, queue, _)

    _on_list_ready.flashsale_patched = True  # type: ignore[attr-defined]
    AsyncAWSQueryConnection._on_list_ready = _on_list_ready
    Channel._loop1 = _loop1


def tolerate_malformed_envelopes() -> None:
    """Turn a message whose kombu envelope kombu cannot read into a plain unknown message.

    kombu 5.6.2 reads any body that decodes to a JSON object as its own envelope and trusts
    its fields: ``{"properties": 5}`` (base64) raises ``AttributeError`` inside the receive
    callback, which ends the worker — and, not deleted, the message then ends the next worker
    that receives it. Here the envelope is checked the way the consumer will use it (building
    kombu's ``Message``); if that fails the message is handed on as a bare body, which Celery
    reports as an unknown message and this consumer leaves to the DLQ. The routing key is
    also set to the queue the message was received from: with the producer's, a message
    naming another queue got no reject backoff (60 s per retry) and could not be acked.
    Idempotent.
    """
    from kombu.transport.SQS import Channel

    if getattr(Channel._message_to_python, "flashsale_patched", False):
        return
    message_to_python = Channel._message_to_python

    def _message_to_python(self: Any, message: Any, queue_name: str, q_url: str) -> Any:
        try:
            payload = message_to_python(self, message, queue_name, q_url)
            # The queue it came from, not what the producer wrote: kombu picks the client for
            # the ack and the reject backoff by this name (an unknown one fails the ack).
            payload["properties"]["delivery_info"]["routing_key"] = queue_name
            self.Message(payload, channel=self)  # what the consume callback does next
            return payload
        except Exception as exc:
            log.error(
                "consumer.malformed_envelope",
                message_id=message.get("MessageId"),
                error=repr(exc),
            )
            return {
                "body": message.get("Body"),
                "properties": {
                    "delivery_tag": message["ReceiptHandle"],
                    "delivery_info": {
                        "sqs_message": message,
                        "sqs_queue": q_url,
                        "routing_key": queue_name,
                    },
                },
            }

    _message_to_python.flashsale_patched = True  # type: ignore[attr-defined]
    Channel._message_to_python = _message_to_python


# Celery's built-in tasks: never sent to flashsale's queues by flashsale.
CELERY_BUILTIN_PREFIX = "celery."
# SQS's limit on the entries of one ChangeMessageVisibilityBatch.
_SQS_BATCH = 10
# After its last receive was sent, how much longer than the long poll a stopping worker waits
# for the answer, to hand back what it brings.
RECEIVE_DRAIN_MARGIN_SECONDS = 2.0
# How long a stopping worker waits for pool processes to confirm the jobs already written to
# them (a child confirms within milliseconds of reading its job).
ACCEPT_WAIT_SECONDS = 2.0


def release_now(queue_url: str, receipt_handles: list[str]) -> int:
    """Make received messages visible again at once (visibility 0); how many were released.

    A failed entry (its receipt handle expired, say) is logged and left to the queue's
    visibility timeout: it is never lost, only late.
    """
    sqs = aws.client("sqs")
    released = 0
    for start in range(0, len(receipt_handles), _SQS_BATCH):
        chunk = receipt_handles[start : start + _SQS_BATCH]
        try:
            answer = sqs.change_message_visibility_batch(
                QueueUrl=queue_url,
                Entries=[
                    {"Id": str(n), "ReceiptHandle": handle, "VisibilityTimeout": 0}
                    for n, handle in enumerate(chunk)
                ],
            )
        except (ClientError, BotoCoreError) as exc:
            log.error("consumer.release_failed", queue_url=queue_url, error=repr(exc))
            continue
        released += len(answer.get("Successful", []))
        for failed in answer.get("Failed", []):
            log.error("consumer.release_failed", queue_url=queue_url, error=failed.get("Code"))
    return released


def release_orphaned_receives() -> None:
    """Hand back at once what a receive brings after its consumer was cancelled.

    A stopping worker cancels its consumer while a long-poll ReceiveMessage may still be
    open; SQS counts what that poll returns as received. kombu 5.6.2 then fails on the
    missing consumer (``KeyError`` in ``_on_messages_ready``, celery/kombu#1819) and the
    messages stay invisible for the queue's whole visibility timeout (seen here: 60 s).
    Idempotent; patches the pinned kombu in this process only.
    """
    from kombu.transport.SQS import Channel

    if getattr(Channel._on_messages_ready, "flashsale_patched", False):
        return
    on_messages_ready = Channel._on_messages_ready

    def _on_messages_ready(self: Any, queue_url: str, queue_name: str, response: Any) -> Any:
        if queue_name not in self.connection._callbacks:
            orphans = [m["ReceiptHandle"] for m in (response or {}).get("Messages") or []]
            if orphans:
                released = release_now(queue_url, orphans)
                log.info("consumer.orphaned_receive_released", queue=queue_name, released=released)
            return None
        return on_messages_ready(self, queue_url, queue_name, response)

    _on_messages_ready.flashsale_patched = True  # type: ignore[attr-defined]
    Channel._on_messages_ready = _on_messages_ready


def _may_run(request: Any) -> bool:
    """Whether a reserved request has started, or may still start, in a pool process.

    Running (accepted), or handed to a process (the prefork pool keeps writing a payload it
    began to write): its message is the pool's, acked or restored by Celery. Only a request
    still queued in the main process is surely dropped by Celery's shutdown (``pool.flush``).
    A pool without this bookkeeping counts as "may run": its messages are left to kombu.
    """
    if request in worker_state.active_requests:
        return True
    job = _pool_job(request)
    if job is None:  # never handed to the pool (rate limit bucket), or gone from it
        return False
    return bool(
        getattr(job, "_accepted", True)
        or getattr(job, "_write_to", None) is not None
        or getattr(job, "_scheduled_for", None) is not None
    )


def _unconfirmed_jobs() -> int:
    """How many reserved requests' jobs a pool process was handed (or is being handed) and
    has not yet confirmed: ``pool.flush`` would discard such a job while the process runs it."""
    jobs = (_pool_job(request) for request in list(worker_state.reserved_requests))
    return sum(
        1
        for job in jobs
        if job is not None
        and not getattr(job, "_accepted", True)
        and getattr(job, "_write_to", None) is not None
    )


def _pool_job(request: Any) -> Any:
    """The prefork pool's job for a request, or ``None`` (never handed to the pool, or gone)."""
    reference = getattr(request, "_apply_result", None)
    return reference() if reference is not None else None


def _fifo_group(message: Any) -> tuple[str | None, str | None]:
    """(queue URL, message group) of a received message; the group is ``None`` where neither
    SQS's attributes nor the kombu envelope (our producers put it there) say."""
    info = message.delivery_info or {}
    sqs_message = info.get("sqs_message") or {}
    group = (sqs_message.get("Attributes") or {}).get("MessageGroupId")
    if group is None:
        group = (getattr(message, "properties", None) or {}).get("MessageGroupId")
    return info.get("sqs_queue"), group


def _behind_a_running_task(message: Any, running: set[tuple[str | None, str | None]]) -> bool:
    """Whether a FIFO message may follow, in its group, a message whose task still runs
    here; an unknown group (on either side) counts as the same group."""
    queue, group = _fifo_group(message)
    if not str(queue).endswith(".fifo"):
        return False
    groups_running_here = {g for q, g in running if q == queue}
    if not groups_running_here:
        return False
    return group is None or None in groups_running_here or group in groups_running_here


class DeadLetteringConsumer(Consumer):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        tolerate_throttled_receives()
        tolerate_malformed_envelopes()
        release_orphaned_receives()
        self._stopping = False
        self._held_channel: Any = None
        super().__init__(*args, **kwargs)

    def stop(self) -> None:
        """Warm (or cold) shutdown: the consumer's ``on_close`` will hand messages back."""
        self._stopping = True
        super().stop()

    def on_close(self) -> None:
        """On shutdown, release every message this worker holds and will not run, as soon as
        its last receive has answered.

        Celery's warm shutdown lets running tasks finish and drops the prefetched ones from
        its books; kombu gives those back only when the channel closes, after the running
        tasks end (up to their time limit), and then with a visibility of ``wait_time_seconds``
        (20 s on AWS), while a receive still open brings messages nobody handles (invisible
        for the full visibility timeout). Here: the consumer is cancelled (no new receive),
        the acks of tasks that already ended are sent, the last receive is awaited (at most
        its long poll; what it brings is released, ``release_orphaned_receives``), and then
        the prefetched messages no pool process has taken are made visible. Running tasks
        finish as before. Before Celery drops its books (``pool.flush``), a job already written
        to a pool process is awaited until that process confirms it: flushed unconfirmed, the
        process still ran it but its result was discarded, its message went back to the queue
        and the task ran a second time (seen: one backpressure run in ten redelivered a batch).

        The order matters: released while this worker's own receive is still open, a message
        comes straight back to it, and every receive counts toward the queue's
        ``maxReceiveCount`` (seen: two purchase messages handed back by two stopping workers
        this way reached the DLQ without ever running).

        On a FIFO queue, a message whose group has a task still running here is held back
        until that task ends (``shutdown``): released now, another worker could run it before
        its predecessor commits. AWS keeps the group locked meanwhile, but LocalStack hands
        such a message out (seen: an event's second batch decided before its first). On a
        connection loss (not a shutdown) Celery's own behaviour is kept.
        """
        if not self._stopping:
            super().on_close()
            return
        started = time.monotonic()
        channel = getattr(self.task_consumer, "channel", None)
        self._held_channel = channel
        if self.task_consumer is not None:
            try:
                self.task_consumer.cancel()
            except Exception as exc:  # a lost connection: nothing more to receive anyway
                log.warning("consumer.cancel_failed", error=repr(exc))
        self._settle_ended_tasks()
        unconfirmed = _unconfirmed_jobs()
        confirmed_in = self._run_loop_while(lambda: _unconfirmed_jobs() > 0, ACCEPT_WAIT_SECONDS)
        keep = {
            request.message.delivery_tag
            for request in list(worker_state.reserved_requests)
            if _may_run(request)
        }
        super().on_close()
        waited = self._await_last_receive(channel)
        self._settle_ended_tasks()  # tasks that ended while the receive was awaited
        released = deferred = 0
        if channel is not None:
            released, deferred = self._release_held(channel, keep, defer_running_groups=True)
        log.info(
            "consumer.released_on_shutdown",
            released=released,
            deferred_behind_running_tasks=deferred,
            kept_for_running_tasks=len(keep),
            awaited_pool_confirmations=unconfirmed,
            waited_for_pool_s=round(confirmed_in, 3),
            waited_for_receive_s=round(waited, 2),
            took_s=round(time.monotonic() - started, 2),
        )

    def shutdown(self) -> None:
        """After the running tasks ended: release what was held back, and any message whose
        task did not finish, at once (kombu's own restore would hide it ``wait_time_seconds``)."""
        channel = self._held_channel
        if self._stopping and channel is not None:
            self._settle_ended_tasks()
            released, _ = self._release_held(channel, set(), defer_running_groups=False)
            log.info("consumer.released_after_running_tasks", released=released)
        super().shutdown()

    def _settle_ended_tasks(self) -> None:
        """Ack (or reject) now the messages of tasks that have already ended.

        Celery acks an ended task's message on the event loop's next turn (``call_soon``), and
        the task leaves the worker's books at once: a shutdown in between found its message
        held, not acked, and released it, and another worker ran the task again (seen: a batch
        decided twice, once per worker). The hub runs these callbacks only when it closes,
        after the release; here they run before it, as ``Hub.close`` runs them.
        """
        if self.hub is None:
            self.perform_pending_operations()
            return
        for callback in self.hub._pop_ready():
            try:
                callback()
            except Exception as exc:
                log.warning("consumer.pending_callback_failed", error=repr(exc))

    @staticmethod
    def _release_held(
        channel: Any, keep: set[Any], *, defer_running_groups: bool
    ) -> tuple[int, int]:
        """Release what kombu holds unacked, except ``keep`` and, if ``defer_running_groups``,
        FIFO messages that may belong to the group of a kept one. Each released message
        leaves kombu's books, so its restore at channel close does not touch it again.
        Returns (released, deferred)."""
        qos = channel.qos
        held = [
            (tag, message) for tag, message in list(qos._delivered.items()) if tag not in qos._dirty
        ]
        running = {_fifo_group(message) for tag, message in held if tag in keep}
        by_queue: dict[str, list[tuple[Any, str]]] = {}
        deferred = 0
        for tag, message in held:
            if tag in keep:
                continue
            info = message.delivery_info or {}
            sqs_message, queue_url = info.get("sqs_message"), info.get("sqs_queue")
            if not sqs_message or not queue_url:
                continue
            if defer_running_groups and _behind_a_running_task(message, running):
                deferred += 1
                continue
            by_queue.setdefault(queue_url, []).append((tag, sqs_message["ReceiptHandle"]))
        released = 0
        for queue_url, chunk in by_queue.items():
            count = release_now(queue_url, [handle for _, handle in chunk])
            released += count
            if count == len(chunk):
                for tag, _ in chunk:
                    qos.ack(tag)  # kombu's bookkeeping only: no DeleteMessage
        return released, deferred

    def _await_last_receive(self, channel: Any) -> float:
        """Run the event loop until the receives still open have answered (at most one long
        poll plus a margin); their messages are released as they arrive. Seconds waited."""
        client = getattr(self.hub, "_current_http_client", None)
        if client is None:
            return 0.0

        def busy() -> bool:
            return bool(client._pending) or len(client._free_list) < len(client._curls)

        wait = float(getattr(channel, "wait_time_seconds", 0) or 0)
        return self._run_loop_while(busy, wait + RECEIVE_DRAIN_MARGIN_SECONDS)

    def _run_loop_while(self, condition: Callable[[], bool], seconds: float) -> float:
        """Turn the event loop while ``condition()`` holds, for at most ``seconds``; a failing
        turn ends the wait (the shutdown goes on with what it has). Seconds waited."""
        if self.hub is None:
            return 0.0
        started = time.monotonic()
        deadline = started + seconds
        while condition() and time.monotonic() < deadline:
            try:
                self.hub.run_once()
            except Exception as exc:
                log.warning("consumer.shutdown_loop_failed", error=repr(exc))
                break
        return time.monotonic() - started

    def create_task_handler(self, promise: Any = promise) -> Any:
        """Celery's handler, made to dead-letter a task message it cannot even read.

        Celery 5.6.3 checks a task message's headers but not the shape of its body: a body
        that is not ``[args, kwargs, embed]`` raises ``ValueError`` in ``Request.__init__``
        inside the receive callback, which ends the worker (found by the fuzzed raw messages).
        Any such error for one message now makes it an invalid task, left to the DLQ;
        connection errors still go to Celery, which reconnects.

        A message naming one of Celery's own tasks (``celery.backend_cleanup``...) is refused
        the same way: nothing of ours sends them to these queues, and run with a forged body
        they fail outside kombu's reject backoff, so each receive waited the full visibility
        timeout (60 s) before the DLQ (found by the fuzzed raw messages).
        """
        handler = super().create_task_handler(promise)
        recoverable = (*self.connection_errors, *self.channel_errors)

        def on_task_received(message: Any) -> Any:
            name = (getattr(message, "headers", None) or {}).get("task")
            if isinstance(name, str) and name.startswith(CELERY_BUILTIN_PREFIX):
                self._dead_letter(message, "consumer.builtin_task_refused")
                return None
            try:
                return handler(message)
            except recoverable:
                raise
            except Exception as exc:
                self._dead_letter(message, "consumer.unreadable_task_message", exc)
                return None

        return on_task_received

    def _dead_letter(self, message: Any, event: str, exc: Exception | None = None) -> None:
        """Reject without deleting, visible again soon: the redrive policy takes it from there."""
        info = message.delivery_info or {}
        message_id = (info.get("sqs_message") or {}).get("MessageId")
        log.error(event, message_id=message_id, error=repr(exc) if exc else None)
        if not message.acknowledged:
            try:
                message.reject(requeue=False)
            except Exception as reject_exc:
                # kombu's reject backoff reads headers["task"]; a forged envelope may lack it.
                # The message is already off the worker's books: only the backoff is lost.
                log.error("consumer.reject_failed", message_id=message_id, error=repr(reject_exc))
        release_soon(message)

    def _report_then_dead_letter(self, report: Any, message: Any, event: str) -> None:
        """Celery's own report (log, reject), then the short release; if Celery's report
        itself fails (it measures ``len(body)``, which a missing body breaks), ours instead."""
        try:
            report()
        except Exception as exc:
            self._dead_letter(message, event, exc)
            return
        release_soon(message)

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        self._dead_letter(message, "consumer.undecodable_message", exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self._report_then_dead_letter(
            lambda: super(DeadLetteringConsumer, self).on_unknown_message(body, message),
            message,
            "consumer.unknown_message",
        )

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._report_then_dead_letter(
            lambda: super(DeadLetteringConsumer, self).on_unknown_task(body, message, exc),
            message,
            "consumer.unknown_task",
        )

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._report_then_dead_letter(
            lambda: super(DeadLetteringConsumer, self).on_invalid_task(body, message, exc),
            message,
            "consumer.invalid_task",
        )


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
