"""What a stopping worker hands back (``tasks.consumer``): the prefetched messages no pool
process took, and whatever a receive still open brings after the consumer was cancelled.
The real thing runs in ``tests/integration/test_scenarios.py``; here the bookkeeping."""

from __future__ import annotations

import weakref
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError
from celery.worker import state as worker_state
from kombu.asynchronous import Hub
from kombu.transport.SQS import Channel

import tasks.consumer as consumer
from tasks.consumer import DeadLetteringConsumer, release_now, release_orphaned_receives

QUEUE = "https://sqs.unit.invalid/0/flashsale-unit-payments"


class FakeSqs:
    """Records ChangeMessageVisibilityBatch calls; entries whose handle starts with "bad"
    fail, as an expired receipt handle does."""

    def __init__(self, error: bool = False) -> None:
        self.calls: list[dict[str, Any]] = []
        self.error = error

    def change_message_visibility_batch(self, **kwargs: Any) -> dict[str, Any]:
        if self.error:
            raise ClientError({"Error": {"Code": "ServiceUnavailable"}}, "ChangeVisibility")
        self.calls.append(kwargs)
        entries = kwargs["Entries"]
        return {
            "Successful": [
                {"Id": e["Id"]} for e in entries if not e["ReceiptHandle"].startswith("bad")
            ],
            "Failed": [
                {"Id": e["Id"], "Code": "ReceiptHandleIsInvalid"}
                for e in entries
                if e["ReceiptHandle"].startswith("bad")
            ],
        }


@pytest.fixture
def sqs(monkeypatch: pytest.MonkeyPatch) -> FakeSqs:
    fake = FakeSqs()
    monkeypatch.setattr(consumer.aws, "client", lambda service: fake)
    return fake


def test_release_now__makes_messages_visible_at_once_ten_per_call(sqs: FakeSqs) -> None:
    handles = [f"h{n}" for n in range(23)]

    assert release_now(QUEUE, handles) == 23

    assert [len(call["Entries"]) for call in sqs.calls] == [10, 10, 3]
    entries = [entry for call in sqs.calls for entry in call["Entries"]]
    assert [e["ReceiptHandle"] for e in entries] == handles
    assert {e["VisibilityTimeout"] for e in entries} == {0}


def test_release_now__counts_only_what_sqs_released_and_never_raises(
    sqs: FakeSqs, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert release_now(QUEUE, ["h1", "bad-h2", "h3"]) == 2
    monkeypatch.setattr(consumer.aws, "client", lambda service: FakeSqs(error=True))
    assert release_now(QUEUE, ["h1"]) == 0  # left to the visibility timeout, not lost


class FakeQos:
    """kombu's virtual QoS bookkeeping: delivered messages by tag, acked tags as dirty."""

    def __init__(self, delivered: dict[str, Any]) -> None:
        self._delivered = delivered
        self._dirty: set[str] = set()

    def ack(self, tag: str) -> None:
        self._dirty.add(tag)


def sqs_message(tag: str, queue: str = QUEUE, group: str | None = None) -> Any:
    return SimpleNamespace(
        delivery_info={"sqs_message": {"ReceiptHandle": f"handle-{tag}"}, "sqs_queue": queue},
        properties={"MessageGroupId": group} if group else {},
    )


def released_handles(sqs: FakeSqs) -> dict[str, list[str]]:
    return {call["QueueUrl"]: [e["ReceiptHandle"] for e in call["Entries"]] for call in sqs.calls}


def test_release_held__releases_all_but_running_and_acked_and_takes_them_off_kombus_books(
    sqs: FakeSqs,
) -> None:
    other = QUEUE + "-2"
    qos = FakeQos(
        {
            "running": sqs_message("running"),
            "acked": sqs_message("acked"),
            "waiting-1": sqs_message("waiting-1"),
            "waiting-2": sqs_message("waiting-2", other),
        }
    )
    qos._dirty.add("acked")

    released = DeadLetteringConsumer._release_held(
        SimpleNamespace(qos=qos), keep={"running"}, defer_running_groups=True
    )

    assert released == (2, 0)
    assert released_handles(sqs) == {QUEUE: ["handle-waiting-1"], other: ["handle-waiting-2"]}
    # kombu's own restore at channel close now skips them (it would use a stale handle).
    assert qos._dirty == {"acked", "waiting-1", "waiting-2"}


def test_release_held__holds_back_fifo_messages_behind_a_running_task_of_their_group(
    sqs: FakeSqs,
) -> None:
    fifo = QUEUE + ".fifo"
    qos = FakeQos(
        {
            "a1": sqs_message("a1", fifo, "event-a"),  # running
            "a2": sqs_message("a2", fifo, "event-a"),  # behind it: must wait
            "b1": sqs_message("b1", fifo, "event-b"),  # another event: free to go
            "x1": sqs_message("x1", fifo),  # group unknown: may be event-a's
        }
    )
    channel = SimpleNamespace(qos=qos)

    first = DeadLetteringConsumer._release_held(channel, {"a1"}, defer_running_groups=True)
    assert first == (1, 2)
    assert released_handles(sqs) == {fifo: ["handle-b1"]}

    qos._dirty.add("a1")  # the running task ended and was acked; then, at shutdown:
    second = DeadLetteringConsumer._release_held(channel, set(), defer_running_groups=False)
    assert second == (2, 0)
    assert [e["ReceiptHandle"] for e in sqs.calls[-1]["Entries"]] == ["handle-a2", "handle-x1"]


def test_a_task_that_ended_is_acked_before_the_release_not_handed_to_another_worker(
    sqs: FakeSqs,
) -> None:
    """Celery acks an ended task on the event loop's next turn; a shutdown in between must
    not release its message (another worker would run the task again)."""
    qos = FakeQos({"ended": sqs_message("ended"), "waiting": sqs_message("waiting")})
    hub = Hub()
    hub.call_soon(qos.ack, "ended")  # what Request.acknowledge queued

    def broken() -> None:
        raise RuntimeError("a callback that fails")

    hub.call_soon(broken)
    instance = DeadLetteringConsumer.__new__(DeadLetteringConsumer)
    instance.hub = hub

    instance._settle_ended_tasks()  # the failing callback is logged, the rest still run
    released = DeadLetteringConsumer._release_held(
        SimpleNamespace(qos=qos), keep=set(), defer_running_groups=True
    )

    assert released == (1, 0)
    assert released_handles(sqs) == {QUEUE: ["handle-waiting"]}
    assert not hub._ready


class Job:
    def __init__(self, accepted: bool = False, write_to: Any = None) -> None:
        self._accepted = accepted
        self._write_to = write_to
        self._scheduled_for = None


class Request:
    """Celery's request as far as the shutdown looks: its message, a weak reference to its
    pool job."""

    def __init__(self, job: Job | None) -> None:
        self._apply_result = weakref.ref(job) if job is not None else None
        self.message = SimpleNamespace(delivery_tag=id(self))


def request_for(job: Job | None) -> Request:
    return Request(job)


def test_may_run__only_a_request_no_pool_process_took_is_surely_dropped() -> None:
    queued, written, accepted = Job(), Job(write_to=object()), Job(accepted=True)

    assert consumer._may_run(request_for(queued)) is False
    assert consumer._may_run(request_for(None)) is False  # never handed to the pool
    assert consumer._may_run(request_for(written)) is True  # the payload is being written
    assert consumer._may_run(request_for(accepted)) is True
    active = request_for(Job())
    worker_state.active_requests.add(active)
    try:
        assert consumer._may_run(active) is True
    finally:
        worker_state.active_requests.discard(active)


class ConfirmingHub:
    """An event loop whose every turn lets the pool confirm one written job, as a child's
    ack read from its pipe does; ``fail`` makes a turn raise instead."""

    def __init__(self, jobs: list[Job], fail: bool = False) -> None:
        self.jobs, self.fail, self.turns = jobs, fail, 0

    def run_once(self) -> None:
        self.turns += 1
        if self.fail:
            raise OSError("the loop broke")
        for job in self.jobs:
            if job._write_to is not None and not job._accepted:
                job._accepted = True
                return

    def _pop_ready(self) -> list[Any]:
        return []  # no pending acks here


def awaiting() -> bool:
    return consumer._unconfirmed_jobs() > 0


@pytest.fixture
def reserved() -> Any:
    added: list[Request] = []

    def reserve(job: Job | None) -> Request:
        request = request_for(job)
        worker_state.reserved_requests.add(request)
        added.append(request)
        return request

    yield reserve
    for request in added:
        worker_state.reserved_requests.discard(request)


def test_a_stopping_worker__waits_until_every_written_job_is_confirmed_by_its_process(
    reserved: Any,
) -> None:
    """``pool.flush`` discards unconfirmed jobs; a process that had read one ran it anyway,
    its result was dropped and its message redelivered: the task ran twice."""
    written = [Job(write_to=object()), Job(write_to=object())]
    queued, running = Job(), Job(accepted=True, write_to=object())
    for job in (*written, queued, running):
        reserved(job)
    reserved(None)  # never handed to the pool
    instance = DeadLetteringConsumer.__new__(DeadLetteringConsumer)
    instance.hub = ConfirmingHub(written)

    assert consumer._unconfirmed_jobs() == 2
    instance._run_loop_while(awaiting, 5.0)

    assert instance.hub.turns == 2
    assert all(job._accepted for job in written)
    assert queued._accepted is False  # a job no process has: flushed, released, not awaited
    assert consumer._unconfirmed_jobs() == 0


def test_on_close__celery_flushes_its_pool_only_after_the_written_jobs_were_confirmed(
    reserved: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = Job(write_to=object())
    reserved(written)
    unconfirmed_at_flush: list[int] = []
    monkeypatch.setattr(
        consumer.Consumer, "on_close", lambda self: unconfirmed_at_flush.append(awaiting())
    )
    instance = DeadLetteringConsumer.__new__(DeadLetteringConsumer)
    instance.hub = ConfirmingHub([written])
    instance._stopping, instance.task_consumer = True, None

    instance.on_close()

    assert unconfirmed_at_flush == [False]
    assert written._accepted


def test_a_stopping_worker__waits_for_confirmation_a_bounded_time_and_not_past_a_broken_loop(
    reserved: Any,
) -> None:
    stuck = Job(write_to=object())
    reserved(stuck)
    instance = DeadLetteringConsumer.__new__(DeadLetteringConsumer)
    instance.hub = ConfirmingHub([])  # the process never confirms

    waited = instance._run_loop_while(awaiting, 0.05)
    assert 0.05 <= waited < 1.0
    assert instance.hub.turns > 1

    instance.hub = ConfirmingHub([stuck], fail=True)
    instance._run_loop_while(awaiting, 5.0)
    assert instance.hub.turns == 1
    instance.hub = None
    assert instance._run_loop_while(awaiting, 5.0) == 0.0


def test_orphaned_receive__is_released_instead_of_failing_on_the_missing_consumer(
    sqs: FakeSqs,
) -> None:
    release_orphaned_receives()
    release_orphaned_receives()  # idempotent
    delivered: list[Any] = []
    channel = SimpleNamespace(connection=SimpleNamespace(_callbacks={}))
    response = {"Messages": [{"ReceiptHandle": "late-1"}, {"ReceiptHandle": "late-2"}]}

    Channel._on_messages_ready(channel, QUEUE, "payments", response)

    assert [e["ReceiptHandle"] for e in sqs.calls[0]["Entries"]] == ["late-1", "late-2"]
    assert delivered == []
    # With its consumer still there, a receive is delivered as before.
    channel.connection._callbacks["payments"] = delivered.append
    channel._message_to_python = lambda message, name, url: message  # type: ignore[attr-defined]
    Channel._on_messages_ready(channel, QUEUE, "payments", {"Messages": [{"Body": "x"}]})
    assert delivered == [{"Body": "x"}]
    assert len(sqs.calls) == 1


def test_a_message_naming_a_celery_builtin_task__is_dead_lettered_not_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ran: list[Any] = []
    released: list[Any] = []
    monkeypatch.setattr(consumer.Consumer, "create_task_handler", lambda self, p: ran.append)
    monkeypatch.setattr(consumer, "release_soon", released.append)
    instance = DeadLetteringConsumer.__new__(DeadLetteringConsumer)
    instance.connection_errors = ()
    instance.channel_errors = ()
    handle = instance.create_task_handler()
    builtin = SimpleNamespace(
        headers={"task": "celery.backend_cleanup"},
        delivery_info={"sqs_message": {"MessageId": "m-1"}},
        acknowledged=False,
        reject=lambda requeue=False: None,
    )
    ours = SimpleNamespace(headers={"task": "tasks.purchase.allocate"})

    handle(builtin)
    handle(ours)

    assert released == [builtin]  # rejected, visible again after the short backoff
    assert ran == [ours]
