"""``bench.stats``: splitting the emulators' exact counts between the purchase path, the
driver and the sagas."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.awsrequest import AWSResponse

from bench.stats import ClientCalls, operation_name, per_unit, subtract


def test_operation_name__strips_the_json_protocol_prefixes() -> None:
    assert operation_name("AmazonSQS.SendMessageBatch") == "SendMessageBatch"
    assert operation_name("DynamoDB_20120810.TransactWriteItems") == "TransactWriteItems"
    assert operation_name("ReceiveMessage") == "ReceiveMessage"


def test_subtract__takes_each_part_out_per_operation_and_drops_zeros() -> None:
    total = {"dynamodb.Query": 10, "dynamodb.GetItem": 5, "sqs.ReceiveMessage": 3}

    rest = subtract(total, {"dynamodb.Query": 4}, {"dynamodb.GetItem": 5})

    assert rest == {"dynamodb.Query": 6, "sqs.ReceiveMessage": 3}


def test_per_unit__per_service_or_all() -> None:
    calls = {"sqs.SendMessageBatch": 10, "dynamodb.Query": 30}

    assert per_unit(calls, 100, "sqs") == 0.1
    assert per_unit(calls, 100) == 0.4
    assert per_unit(calls, 0) == 40.0


def test_client_calls__counts_every_http_attempt_by_operation() -> None:
    client = boto3.client(
        "sqs",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    calls = ClientCalls()
    calls.watch(client, "sqs")

    def answer(**_: Any) -> AWSResponse:  # registered after the counter: it runs second
        return AWSResponse("http://127.0.0.1:9", 200, {}, _Raw(b'{"QueueUrls": []}'))

    client.meta.events.register("before-send", answer)
    client.list_queues()
    client.list_queues()

    assert calls.read() == {"sqs.ListQueues": 2}
    calls.reset()
    assert calls.read() == {}


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Any:
        yield self._body
