"""The provisioner against the running emulators: attributes read back, and a second ``up``.

Needs the session fixture ``local_stack`` (tests/integration/conftest.py): the environment
dict of a running local stack, as ``infra.local.up`` returns it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from flashsale.names import TASK_TIME_LIMIT_SECONDS, Output, QueueRole, Table
from infra.local.provision import emulator_clients, provision
from infra.program import load_stack_config

pytestmark = pytest.mark.integration

STACK = "local"


@pytest.fixture(scope="module")
def outputs(local_stack: dict[str, str]) -> dict[str, Any]:
    return provision(STACK, local_stack)


@pytest.fixture(scope="module")
def clients(local_stack: dict[str, str], outputs: dict[str, Any]) -> dict[str, Any]:
    return emulator_clients(local_stack, outputs[Output.REGION])


def queue_attributes(clients: dict[str, Any], url: str) -> dict[str, str]:
    return clients["sqs"].get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]


@pytest.mark.parametrize("role", list(QueueRole))
def test_provisioned_queue__has_redrive_type_visibility_polling_and_tls_policy(
    clients: dict[str, Any], outputs: dict[str, Any], role: QueueRole
) -> None:
    queue = queue_attributes(clients, outputs[Output.queue_url(role)])
    dlq = queue_attributes(clients, outputs[Output.dlq_url(role)])
    max_receive = int(load_stack_config(STACK)[0]["flashsale:maxReceiveCount"])
    assert json.loads(queue["RedrivePolicy"]) == {
        "deadLetterTargetArn": outputs[Output.dlq_arn(role)],
        "maxReceiveCount": max_receive,
    }
    assert json.loads(dlq["RedriveAllowPolicy"]) == {
        "redrivePermission": "byQueue",
        "sourceQueueArns": [outputs[Output.queue_arn(role)]],
    }
    for attributes in (queue, dlq):
        assert (attributes.get("FifoQueue") == "true") is role.fifo
        assert int(attributes["VisibilityTimeout"]) > TASK_TIME_LIMIT_SECONDS[role]
        assert attributes["ReceiveMessageWaitTimeSeconds"] == "20"
        assert attributes["SqsManagedSseEnabled"] == "true"
        (statement,) = json.loads(attributes["Policy"])["Statement"]
        assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert dlq["MessageRetentionPeriod"] == "1209600"
    if role.fifo:
        assert queue["DeduplicationScope"] == "messageGroup"
        assert queue["FifoThroughputLimit"] == "perMessageGroupId"
        assert queue["ContentBasedDeduplication"] == "false"


def test_provisioned_tables__have_indexes_ttl_and_the_outbox_stream(
    clients: dict[str, Any], outputs: dict[str, Any]
) -> None:
    dynamodb = clients["dynamodb"]
    outbox = dynamodb.describe_table(TableName=outputs[Output.table_name(Table.OUTBOX)])["Table"]
    assert outbox["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
    assert outbox["LatestStreamArn"] == outputs[Output.OUTBOX_STREAM_ARN]
    for table in Table:
        name = outputs[Output.table_name(table)]
        described = dynamodb.describe_table(TableName=name)["Table"]
        assert described["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST", name
        assert described["SSEDescription"]["Status"] == "ENABLED", name
    ttl = dynamodb.describe_time_to_live(TableName=outputs[Output.table_name(Table.IDEMPOTENCY)])
    assert ttl["TimeToLiveDescription"]["TimeToLiveStatus"] == "ENABLED"


def test_provisioned_alarms__three_per_queue_two_for_the_relay_one_for_sagas_to_the_topic(
    clients: dict[str, Any], outputs: dict[str, Any]
) -> None:
    alarms = clients["cloudwatch"].describe_alarms(AlarmNamePrefix=f"flashsale-{STACK}-")
    topic = [outputs[Output.ALARM_TOPIC_ARN]]
    found = alarms["MetricAlarms"]
    # + outbox lag and parked (relay_alarms), quarantined sagas (saga_alarms)
    assert len(found) == 3 * len(QueueRole) + 3
    assert all(a["AlarmActions"] == a["OKActions"] == topic for a in found)


def test_provision__twice_is_idempotent(
    local_stack: dict[str, str], clients: dict[str, Any], outputs: dict[str, Any]
) -> None:
    def queues() -> list[str]:
        return clients["sqs"].list_queues(QueueNamePrefix=f"flashsale-{STACK}-")["QueueUrls"]

    before = sorted(queues())
    assert provision(STACK, local_stack) == outputs
    assert sorted(queues()) == before
