"""The visibility heartbeat with a fake SQS client: beats, stops, gives up on a lost message."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from celery import Celery

import tasks.heartbeat as heartbeat_module
from tasks.heartbeat import (
    HeartbeatTask,
    SqsDelivery,
    VisibilityHeartbeat,
    sqs_delivery,
    visibility_heartbeat,
)

QUEUE_URL = "http://sqs.unit.invalid/queue/q"


def sqs_request(handle: str = "rh-1", *, in_message: bool = True) -> SimpleNamespace:
    """A task request as kombu's SQS transport and Celery build it (``request.properties``)."""
    sqs_message = {"MessageId": "m-1", "ReceiptHandle": handle} if in_message else {}
    return SimpleNamespace(
        id="task-1",
        properties={
            "delivery_tag": handle,
            "delivery_info": {"sqs_message": sqs_message, "sqs_queue": QUEUE_URL},
        },
    )


class FakeSqs:
    """Records extensions; ``errors`` are raised by the calls in turn, then calls succeed."""

    def __init__(self, *errors: Exception) -> None:
        self.calls: list[dict[str, Any]] = []
        self.errors = list(errors)
        self.third_call = threading.Event()

    def change_message_visibility(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)
        if len(self.calls) >= 3:
            self.third_call.set()
        if self.errors:
            raise self.errors.pop(0)


def client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, "ChangeMessageVisibility")


def test_sqs_delivery__reads_the_receipt_handle_and_queue_from_the_message_properties() -> None:
    assert sqs_delivery(sqs_request()) == SqsDelivery(QUEUE_URL, "rh-1", "m-1")
    # The delivery tag is the receipt handle too.
    assert sqs_delivery(sqs_request("rh-2", in_message=False)) == SqsDelivery(QUEUE_URL, "rh-2")
    assert sqs_delivery(SimpleNamespace(properties=None)) is None
    assert sqs_delivery(SimpleNamespace()) is None


def test_heartbeat__extends_until_stopped_then_never_again() -> None:
    sqs = FakeSqs()
    beat = VisibilityHeartbeat(sqs, SqsDelivery(QUEUE_URL, "rh-1"), every=0.01, extend_by=30)
    beat.start()
    assert sqs.third_call.wait(5)
    beat.stop()
    calls = len(sqs.calls)

    assert beat.beats == calls >= 3
    assert sqs.calls[0] == {"QueueUrl": QUEUE_URL, "ReceiptHandle": "rh-1", "VisibilityTimeout": 30}
    assert len(sqs.calls) == calls  # stop() returned with no extension in flight


def test_heartbeat__keeps_beating_through_transient_failures() -> None:
    sqs = FakeSqs(client_error("ThrottlingException"), EndpointConnectionError(endpoint_url="x"))
    beat = VisibilityHeartbeat(sqs, SqsDelivery(QUEUE_URL, "rh-1"), every=0.01, extend_by=30)
    beat.start()
    assert sqs.third_call.wait(5)
    beat.stop()
    assert beat.failures == 2
    assert beat.beats >= 1
    assert not beat.lost


@pytest.mark.parametrize("code", ["ReceiptHandleIsInvalid", "InvalidParameterValue"])
def test_heartbeat__stops_when_the_message_is_no_longer_ours(code: str) -> None:
    sqs = FakeSqs(client_error(code))
    beat = VisibilityHeartbeat(sqs, SqsDelivery(QUEUE_URL, "rh-1"), every=0.01, extend_by=30)
    beat.start()
    beat._thread.join(5)
    assert beat.lost
    assert len(sqs.calls) == 1
    beat.stop()


@pytest.mark.parametrize(("every", "extend_by"), [(0, 10), (10, 10), (5, 43_201)])
def test_heartbeat__refuses_settings_that_cannot_work(every: float, extend_by: int) -> None:
    with pytest.raises(ValueError, match="every < extend_by"):
        VisibilityHeartbeat(
            FakeSqs(), SqsDelivery(QUEUE_URL, "rh"), every=every, extend_by=extend_by
        )


def test_context_manager__stops_the_heartbeat_when_the_block_raises() -> None:
    sqs = FakeSqs()
    with (
        pytest.raises(RuntimeError),
        visibility_heartbeat(sqs_request(), every=0.01, extend_by=30, sqs=sqs) as beat,
    ):
        assert beat is not None
        assert sqs.third_call.wait(5)
        raise RuntimeError("the task failed")
    assert beat is not None and not beat._thread.is_alive()


def test_context_manager__another_queue_url_and_nothing_outside_sqs() -> None:
    sqs = FakeSqs()
    with visibility_heartbeat(sqs_request(), "http://other/q", every=5, extend_by=30, sqs=sqs) as b:
        assert b is not None and b.delivery.queue_url == "http://other/q"
    with visibility_heartbeat(SimpleNamespace(id="t"), every=5, extend_by=30, sqs=sqs) as none:
        assert none is None
    assert sqs.calls == []


def test_task_base_class__beats_from_before_start_to_after_return(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sqs = FakeSqs()
    monkeypatch.setattr(heartbeat_module.aws, "client", lambda service: sqs)
    app = Celery("unit-heartbeat", set_as_current=False)

    class Beating(HeartbeatTask):
        visibility_heartbeat_every = 0.01
        visibility_heartbeat_extend_by = 30

    @app.task(base=Beating, name="unit.heartbeat")
    def work() -> None:
        pass

    work.push_request(id="task-1", properties=sqs_request().properties)
    try:
        work.before_start("task-1", (), {})
        assert sqs.third_call.wait(5)
        work.after_return("SUCCESS", None, "task-1", (), {}, None)
    finally:
        work.pop_request()
    calls = len(sqs.calls)
    assert calls >= 3
    assert HeartbeatTask._heartbeats == {}
    assert len(sqs.calls) == calls
