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
    """Celery's request as far as the shutdown looks: a weak reference to its pool job."""

    def __init__(self, job: Job | None) -> None:
        self._apply_result = weakref.ref(job) if job is not None else None


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
