"""``flashsale.task_messages``: bodies a Celery worker on SQS runs exactly as ``apply_async``'s."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from celery import Celery
from celery.worker.request import Request
from kombu.transport.SQS import Channel
from kombu.transport.virtual import Message
from moto import mock_aws

from flashsale.names import QueueRole
from flashsale.task_messages import batch_entry, task_message_body

TASK = "tasks.purchase.allocate"
QUEUE = QueueRole.PURCHASES.celery_queue
KWARGS = {"batch": {"event_id": "gig", "requests": [{"buyer_id": "ann", "quantity": 2}]}}


def envelope_of(body: str) -> dict[str, Any]:
    return json.loads(base64.b64decode(body))


def task_body_of(envelope: dict[str, Any]) -> Any:
    return json.loads(base64.b64decode(envelope["body"]))


def shape(value: Any) -> Any:
    """The keys of nested dicts, values left out: what two messages must agree on."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    return type(value).__name__ if value is not None else None


def received_as_kombu_message(body: str, *, queue_url: str = "https://sqs.invalid/q") -> Message:
    """``body`` as the worker's SQS channel turns a received message into a kombu message."""
    channel = Channel.__new__(Channel)  # the decoding helpers need no connection
    sqs_message = {"Body": body, "ReceiptHandle": "handle-1", "MessageId": "m-1"}
    payload = channel._message_to_python(sqs_message, QUEUE, queue_url)
    return Message(payload, channel=channel)


@pytest.fixture
def celery_app() -> Iterator[Celery]:
    app = Celery("unit", set_as_current=False)
    app.conf.task_ignore_result = True
    yield app
    app.close()


@pytest.fixture
def published_by_celery(aws_offline: None, celery_app: Celery) -> Iterator[dict[str, Any]]:
    """What ``send_task`` puts on a FIFO queue through kombu's SQS transport (moto's SQS)."""
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="unit-purchases.fifo",
                               Attributes={"FifoQueue": "true"})["QueueUrl"]  # fmt: skip
        celery_app.conf.broker_url = "sqs://"
        celery_app.conf.broker_transport_options = {
            "predefined_queues": {QUEUE: {"url": url}}, "region": "us-east-1",
        }  # fmt: skip
        celery_app.conf.task_default_queue = QUEUE  # as tasks.celeryconfig declares it
        celery_app.conf.task_create_missing_queues = False
        celery_app.send_task(TASK, kwargs=KWARGS, queue=QUEUE, MessageGroupId="gig",
                             MessageDeduplicationId="batch-1")  # fmt: skip
        message = sqs.receive_message(QueueUrl=url, MessageSystemAttributeNames=["All"],
                                      MaxNumberOfMessages=10)["Messages"]  # fmt: skip
        assert len(message) == 1
        yield message[0]


def test_task_message_body__has_the_shape_celery_publishes_on_sqs(
    published_by_celery: dict[str, Any],
) -> None:
    theirs = envelope_of(published_by_celery["Body"])
    ours = envelope_of(
        task_message_body(TASK, KWARGS, routing_key=QUEUE, group_id="gig", dedup_id="batch-1")
    )

    assert shape(ours) == shape(theirs)
    assert ours["properties"]["delivery_info"] == theirs["properties"]["delivery_info"]
    for key in ("body_encoding", "delivery_mode", "priority", "MessageGroupId",
                "MessageDeduplicationId"):  # fmt: skip
        assert ours["properties"][key] == theirs["properties"][key], key
    for key in ("content-type", "content-encoding"):
        assert ours[key] == theirs[key]
    assert task_body_of(ours) == task_body_of(theirs)


def test_task_message_body__is_what_celerys_protocol_2_builds(celery_app: Celery) -> None:
    task_id = str(uuid.uuid4())
    theirs = celery_app.amqp.as_task_v2(task_id, TASK, args=(), kwargs=KWARGS, ignore_result=True)

    ours = envelope_of(task_message_body(TASK, KWARGS, routing_key=QUEUE, task_id=task_id))

    assert set(ours["headers"]) == set(theirs.headers)
    differ = {"origin", "argsrepr", "kwargsrepr"}  # for logs only; ours keeps kwargs out of them
    assert {k: v for k, v in ours["headers"].items() if k not in differ} == {
        k: v for k, v in theirs.headers.items() if k not in differ
    }
    args, kwargs, embed = task_body_of(ours)
    assert (tuple(args), kwargs, embed) == theirs.body
    assert ours["properties"]["correlation_id"] == theirs.properties["correlation_id"]


def test_task_message_body__decodes_through_kombus_sqs_channel_into_a_celery_request(
    celery_app: Celery,
) -> None:
    @celery_app.task(name=TASK)
    def allocate(batch: dict[str, Any]) -> None:
        """Stands in for tasks.purchase.allocate: same name, same signature."""

    body = task_message_body(TASK, KWARGS, routing_key=QUEUE, task_id="task-1", group_id="gig",
                             dedup_id="batch-1")  # fmt: skip

    message = received_as_kombu_message(body)
    request = Request(message, app=celery_app, task=allocate)

    assert message.headers["task"] == TASK
    assert message.delivery_info["routing_key"] == QUEUE
    assert message.decode() == [[], KWARGS, {"callbacks": None, "errbacks": None,
                                             "chain": None, "chord": None}]  # fmt: skip
    assert (request.task_name, request.id, request.args, request.kwargs) == (
        TASK, "task-1", [], KWARGS,
    )  # fmt: skip


def test_task_message_body__uses_the_given_task_id_everywhere_and_a_new_one_otherwise() -> None:
    given = envelope_of(task_message_body(TASK, {}, routing_key=QUEUE, task_id="t-1"))
    first, second = (envelope_of(task_message_body(TASK, {}, routing_key=QUEUE)) for _ in "ab")

    assert (given["headers"]["id"], given["headers"]["root_id"]) == ("t-1", "t-1")
    assert given["properties"]["correlation_id"] == "t-1"
    assert first["headers"]["id"] != second["headers"]["id"]
    uuid.UUID(first["headers"]["id"])


def test_task_message_body__leaves_fifo_properties_out_without_a_group() -> None:
    properties = envelope_of(task_message_body(TASK, {}, routing_key="payments"))["properties"]

    assert "MessageGroupId" not in properties
    assert "MessageDeduplicationId" not in properties


def test_batch_entry__sets_fifo_fields_with_a_group() -> None:
    entry = batch_entry("7", TASK, KWARGS, routing_key=QUEUE, group_id="gig", dedup_id="b-1")

    assert (entry["Id"], entry["MessageGroupId"], entry["MessageDeduplicationId"]) == (
        "7", "gig", "b-1",
    )  # fmt: skip
    properties = envelope_of(entry["MessageBody"])["properties"]
    assert (properties["MessageGroupId"], properties["MessageDeduplicationId"]) == ("gig", "b-1")


def test_batch_entry__makes_up_a_dedup_id_for_a_group_without_one() -> None:
    first = batch_entry("0", TASK, {}, routing_key=QUEUE, group_id="gig")
    second = batch_entry("0", TASK, {}, routing_key=QUEUE, group_id="gig")

    assert first["MessageDeduplicationId"] != second["MessageDeduplicationId"]


def test_batch_entry__sets_no_fifo_field_without_a_group() -> None:
    entry = batch_entry("0", "tasks.notify", {"order": "o-1"}, routing_key="notifications")

    assert set(entry) == {"Id", "MessageBody"}
    assert envelope_of(entry["MessageBody"])["headers"]["task"] == "tasks.notify"
