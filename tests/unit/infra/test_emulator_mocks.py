"""The provisioner refuses what it cannot create, and never runs without emulator endpoints."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest
from pulumi.runtime import rpc

from infra.local.emulator_mocks import EmulatorMocks, UnsupportedResourceError
from infra.local.provision import ProvisionError, emulator_clients


class FakeSns:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def subscribe(self, **kwargs: Any) -> dict[str, str]:
        self.calls.append(kwargs)
        return {"SubscriptionArn": "arn:aws:sns:us-east-1:000000000000:alarms:1"}


class FakeCloudWatch:
    def __init__(self) -> None:
        self.alarms: list[dict[str, Any]] = []

    def put_metric_alarm(self, **kwargs: Any) -> None:
        self.alarms.append(kwargs)

    def describe_alarms(self, AlarmNames: list[str]) -> dict[str, Any]:
        return {"MetricAlarms": [{"AlarmArn": f"arn:aws:cloudwatch:alarm:{AlarmNames[0]}"}]}


def mocks(sns: object | None = None, cloudwatch: object | None = None) -> EmulatorMocks:
    clients = dict.fromkeys(("sqs", "ses", "dynamodb"), object())
    return EmulatorMocks(
        {**clients, "sns": sns or object(), "cloudwatch": cloudwatch or object()}, "us-east-1"
    )


def test_unknown_resource_type__raises_with_its_type() -> None:
    args = pulumi.runtime.MockResourceArgs("aws:s3/bucket:Bucket", "b", {}, custom=True)
    with pytest.raises(UnsupportedResourceError, match=r"aws:s3/bucket:Bucket \(b\)"):
        mocks().new_resource(args)


def test_unimplemented_input_of_a_known_type__raises_instead_of_being_dropped() -> None:
    inputs = {"name": "q", "kmsMasterKeyId": "alias/x"}
    args = pulumi.runtime.MockResourceArgs("aws:sqs/queue:Queue", "q", inputs, custom=True)
    with pytest.raises(UnsupportedResourceError, match="kmsMasterKeyId"):
        mocks().new_resource(args)


def test_component_resources__create_nothing() -> None:
    args = pulumi.runtime.MockResourceArgs("flashsale:x:Y", "c", {}, custom=False)
    assert mocks().new_resource(args) == ("c", {})


def test_iam__is_recorded_with_the_arn_aws_would_give() -> None:
    recording = mocks()
    role = {"name": "r", "assumeRolePolicy": "{}", "description": "d"}
    _, state = recording.new_resource(
        pulumi.runtime.MockResourceArgs("aws:iam/role:Role", "r", role, custom=True)
    )
    assert state["arn"] == "arn:aws:iam::000000000000:role/r"
    assert recording.recorded == {"r": {"arn": state["arn"], "assume_role_policy": {}}}


def test_clients__need_an_emulator_endpoint_for_every_service() -> None:
    with pytest.raises(ProvisionError, match="AWS_ENDPOINT_URL_SNS"):
        emulator_clients({"AWS_ENDPOINT_URL_SQS": "http://127.0.0.1:1"}, "us-east-1")


def test_secret_inputs__reach_the_emulator_unwrapped() -> None:
    sns = FakeSns()
    url = "https://hooks.example.com/T0/secret-token"
    inputs = {"topic": "arn:t", "protocol": "https", "endpoint": rpc.wrap_rpc_secret(url)}
    typ = "aws:sns/topicSubscription:TopicSubscription"
    mocks(sns).new_resource(pulumi.runtime.MockResourceArgs(typ, "s", inputs, custom=True))
    assert sns.calls[0]["Endpoint"] == url


def test_alarm_without_dimensions__is_created_with_none() -> None:
    cloudwatch = FakeCloudWatch()
    inputs = {
        "name": "a", "namespace": "Flashsale", "metricName": "OutboxParked", "statistic": "Sum",
        "period": 60, "evaluationPeriods": 1, "threshold": 0,
        "comparisonOperator": "GreaterThanThreshold", "treatMissingData": "notBreaching",
    }  # fmt: skip
    typ = "aws:cloudwatch/metricAlarm:MetricAlarm"
    mocks(cloudwatch=cloudwatch).new_resource(
        pulumi.runtime.MockResourceArgs(typ, "a", inputs, custom=True)
    )
    assert cloudwatch.alarms[0]["Dimensions"] == []
