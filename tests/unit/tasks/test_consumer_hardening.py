"""The worker's guards around kombu 5.6.2 / Celery 5.6.3, each against the input that used to
end the worker (found by ``tests/integration/test_faults.py`` and ``test_raw_messages.py``)."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError
from kombu.asynchronous.aws.connection import AsyncAWSQueryConnection
from kombu.transport.SQS import Channel

import tasks.consumer as consumer
from flashsale.task_messages import task_message_body
from tasks.consumer import (
    RECEIVE_BACKOFF_CAP_SECONDS,
    RECEIVE_BACKOFF_FIRST_SECONDS,
    DeadLetteringConsumer,
    ReceiveBackoff,
    release_soon,
    throttling_code,
    tolerate_malformed_envelopes,
    tolerate_throttled_receives,
)

THROTTLED_JSON = json.dumps({"__type": "com.amazonaws.sqs#RequestThrottled"}).encode()


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected"),
    [
        (400, {"X-Amzn-Query-Error": "RequestThrottled;Sender"}, b"{}", "RequestThrottled"),
        (400, {}, THROTTLED_JSON, "RequestThrottled"),
        (403, {}, b"<Error><Code>RequestThrottled</Code></Error>", "RequestThrottled"),
        (
            400,
            {},
            b'{"__type": "com.amazon.coral.availability#ThrottlingException"}',
            "ThrottlingException",
        ),
        (429, {}, b"", "HTTP 429"),
        (400, {"x-amzn-query-error": "AWS.SimpleQueueService.NonExistentQueue;Sender"}, b"", None),
        (403, {}, b'{"__type": "AccessDenied"}', None),
        (503, {}, THROTTLED_JSON, None),  # a 5xx is kombu's own business (empty receive)
        (400, {}, b"not json, not xml", None),
    ],
)
def test_throttling_code__reads_the_code_like_botocore(
    status: int, headers: dict[str, str], body: bytes, expected: str | None
) -> None:
    assert throttling_code(status, headers, body) == expected


def test_receive_backoff__doubles_to_a_cap_and_resets_after_a_success() -> None:
    backoff = ReceiveBackoff()
    delays = [backoff.throttled() for _ in range(10)]
    assert delays[0] == RECEIVE_BACKOFF_FIRST_SECONDS
    assert delays[1] == 2 * RECEIVE_BACKOFF_FIRST_SECONDS
    assert delays[-1] == RECEIVE_BACKOFF_CAP_SECONDS
    assert 0 < backoff.remaining() <= RECEIVE_BACKOFF_CAP_SECONDS
    backoff.succeeded()
    assert backoff.throttled() == RECEIVE_BACKOFF_FIRST_SECONDS


class FakeResponse:
    def __init__(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.reason = "Bad Request"
        self._body = body
        self._headers = headers or {}

    def read(self) -> bytes:
        return self._body

    def getheaders(self) -> list[tuple[str, str]]:
        return list(self._headers.items())


@pytest.fixture
def fresh_backoff(monkeypatch: pytest.MonkeyPatch) -> ReceiveBackoff:
    backoff = ReceiveBackoff()
    monkeypatch.setattr(consumer, "receive_backoff", backoff)
    return backoff


def test_throttled_receive__is_an_empty_receive_and_delays_the_next(
    fresh_backoff: ReceiveBackoff,
) -> None:
    tolerate_throttled_receives()
    tolerate_throttled_receives()  # idempotent
    connection = AsyncAWSQueryConnection.__new__(AsyncAWSQueryConnection)
    response = FakeResponse(400, THROTTLED_JSON)

    assert connection._on_list_ready(None, [], "ReceiveMessage", response) == []
    assert fresh_backoff.remaining() > 0

    scheduled: list[tuple[str, Any]] = []
    hub = SimpleNamespace(
        call_later=lambda delay, fn, *args: scheduled.append(("later", delay)),
        call_soon=lambda fn, *args: scheduled.append(("soon", None)),
    )
    channel = SimpleNamespace(hub=hub, _schedule_queue=lambda queue: None)
    Channel._loop1(channel, "purchases.fifo")
    assert scheduled[0][0] == "later" and 0 < scheduled[0][1] <= RECEIVE_BACKOFF_FIRST_SECONDS

    fresh_backoff.until = 0.0
    Channel._loop1(channel, "purchases.fifo")
    assert scheduled[1] == ("soon", None)


def test_other_client_errors_on_receive__still_raise(fresh_backoff: ReceiveBackoff) -> None:
    tolerate_throttled_receives()
    connection = AsyncAWSQueryConnection.__new__(AsyncAWSQueryConnection)
    connection.sqs_connection = SimpleNamespace(meta=SimpleNamespace(service_model=None))
    with pytest.raises(Exception, match="HTTP 403"):
        connection._on_list_ready(None, [], "ReceiveMessage", FakeResponse(403, b"AccessDenied"))
    assert fresh_backoff.remaining() == 0


def sqs_channel() -> Any:
    channel = Channel.__new__(Channel)
    channel._noack_queues = set()
    channel.__dict__["sqs_base64_encoding"] = True
    return channel


def received(body: str) -> dict[str, Any]:
    return {"MessageId": "m-1", "ReceiptHandle": "rh-1", "Body": body, "Attributes": {}}


def envelope(fields: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(fields).encode()).decode()


@pytest.mark.parametrize(
    "body",
    [
        envelope({"body": "e30=", "properties": 5}),
        envelope({"body": "e30=", "properties": {"delivery_info": 5}}),
        envelope({"body": {"not": "a string"}, "properties": {"body_encoding": "base64"}}),
        envelope({"body": "e30=", "properties": {"body_encoding": "rot13"}}),
        envelope({"body": "e30=", "properties": {}, "headers": ["compression"]}),
    ],
)
def test_malformed_envelope__becomes_a_bare_message_on_the_queue_it_came_from(body: str) -> None:
    tolerate_malformed_envelopes()
    channel = sqs_channel()
    payload = Channel._message_to_python(channel, received(body), "purchases.fifo", "http://q")

    message = channel.Message(payload, channel=channel)  # what crashed the worker before
    assert message.body == body.encode()
    assert message.headers == {}
    assert message.delivery_tag == "rh-1"
    assert message.delivery_info["routing_key"] == "purchases.fifo"
    assert message.delivery_info["sqs_queue"] == "http://q"


def test_task_message__keeps_its_envelope_and_takes_the_queue_as_routing_key() -> None:
    tolerate_malformed_envelopes()
    channel = sqs_channel()
    body = task_message_body("tasks.purchase.allocate", {"batch": {}}, routing_key="elsewhere")
    payload = Channel._message_to_python(channel, received(body), "purchases.fifo", "http://q")

    message = channel.Message(payload, channel=channel)
    assert message.headers["task"] == "tasks.purchase.allocate"
    assert message.decode()[1] == {"batch": {}}
    assert message.delivery_info["routing_key"] == "purchases.fifo"
    assert message.delivery_info["sqs_message"]["MessageId"] == "m-1"


class FakeMessage:
    def __init__(self, *, reject_error: Exception | None = None) -> None:
        self.body: Any = None
        self.headers: dict[str, Any] = {}
        self.content_type = None
        self.content_encoding = None
        self.delivery_info = {"sqs_message": {"MessageId": "m-1"}, "sqs_queue": "http://q"}
        self.acknowledged = False
        self.rejected = 0
        self._reject_error = reject_error

    def reject(self, requeue: bool = False) -> None:
        self.rejected += 1
        self.acknowledged = True
        if self._reject_error is not None:
            raise self._reject_error

    def reject_log_error(self, logger: Any, errors: Any, requeue: bool = False) -> None:
        self.reject(requeue)


@pytest.fixture
def released(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []
    monkeypatch.setattr(consumer, "release_soon", calls.append)
    return calls


def bare_consumer() -> DeadLetteringConsumer:
    instance = DeadLetteringConsumer.__new__(DeadLetteringConsumer)
    instance.connection_errors = ()
    return instance


def test_unknown_message_without_a_body__is_dead_lettered_when_celerys_report_fails(
    released: list[Any],
) -> None:
    # Celery's report measures len(message.body): None raised TypeError inside the loop.
    message = FakeMessage()
    bare_consumer().on_unknown_message(None, message)
    assert message.rejected == 1
    assert released == [message]


def test_dead_letter__survives_a_reject_that_fails(released: list[Any]) -> None:
    # kombu's reject backoff reads headers["task"]: a forged envelope without it raised.
    message = FakeMessage(reject_error=KeyError("task"))
    bare_consumer().on_decode_error(message, ValueError("undecodable"))
    assert message.rejected == 1
    assert released == [message]


def test_release_soon__a_failed_visibility_change_is_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class ThrottledSqs:
        def change_message_visibility(self, **kwargs: Any) -> None:
            raise ClientError({"Error": {"Code": "RequestThrottled"}}, "ChangeMessageVisibility")

    monkeypatch.setattr(consumer.aws, "client", lambda service: ThrottledSqs())
    message = SimpleNamespace(
        delivery_info={
            "sqs_message": {"MessageId": "m-1", "ReceiptHandle": "rh-1", "Attributes": {}},
            "sqs_queue": "http://q",
        }
    )
    release_soon(message)  # no exception: the message waits out its visibility timeout
