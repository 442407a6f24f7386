"""A ``pulumi.runtime.Mocks`` that creates each declared resource in the local emulators.

The program's own declarations are the only list of resources: every ``new_resource`` call
becomes the boto3 calls ``pulumi up`` would make, idempotently (create, or update what exists),
and returns the emulator's real URL/ARN/name so the outputs are the emulators' own. A resource
type, or an input of a known type, that this module does not implement raises: nothing is
silently left out. IAM has no emulator here; roles and policies are recorded with the ARNs AWS
would give them and are enforced only on AWS.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

import pulumi
from botocore.exceptions import ClientError
from pulumi.runtime import rpc

from infra.local.environment import ACCOUNT_ID

State = tuple[str, dict[str, Any]]

# Queue input -> SQS attribute.
QUEUE_ATTRIBUTES = {
    "visibilityTimeoutSeconds": "VisibilityTimeout",
    "messageRetentionSeconds": "MessageRetentionPeriod",
    "receiveWaitTimeSeconds": "ReceiveMessageWaitTimeSeconds",
    "delaySeconds": "DelaySeconds",
    "maxMessageSize": "MaximumMessageSize",
    "sqsManagedSseEnabled": "SqsManagedSseEnabled",
    "redrivePolicy": "RedrivePolicy",
    "redriveAllowPolicy": "RedriveAllowPolicy",
    "policy": "Policy",
    "fifoQueue": "FifoQueue",
    "contentBasedDeduplication": "ContentBasedDeduplication",
    "deduplicationScope": "DeduplicationScope",
    "fifoThroughputLimit": "FifoThroughputLimit",
}
TABLE_INPUTS = {
    "name", "billingMode", "hashKey", "rangeKey", "attributes", "globalSecondaryIndexes",
    "serverSideEncryption", "pointInTimeRecovery", "deletionProtectionEnabled", "ttl",
    "streamEnabled", "streamViewType",
}  # fmt: skip
ALARM_INPUTS = {
    "name", "alarmDescription", "namespace", "metricName", "dimensions", "statistic", "period",
    "evaluationPeriods", "threshold", "comparisonOperator", "treatMissingData", "alarmActions",
    "okActions",
}  # fmt: skip


class UnsupportedResourceError(Exception):
    """The program declared something the local provisioner cannot create faithfully."""


def _require_only(typ: str, inputs: Mapping[str, Any], known: set[str]) -> None:
    unknown = set(inputs) - known
    if unknown:
        raise UnsupportedResourceError(
            f"{typ}: inputs {sorted(unknown)} are not implemented by infra/local/emulator_mocks.py"
        )


def _reveal(value: Any) -> Any:
    """Inputs with secrets unwrapped: the emulators need the value, e.g. a webhook URL."""
    value = rpc.unwrap_rpc_secret(value)
    if isinstance(value, dict):
        return {k: _reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_reveal(v) for v in value]
    return value


def _attribute(value: Any) -> str:
    """An SQS attribute value: booleans lower-case, whole numbers without the float's '.0'."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _unless_missing(exc: ClientError, *codes: str) -> None:
    """Re-raise ``exc`` unless its error code says the resource does not exist. By code, not by
    ``client.exceptions`` class: resources register on several threads, and a fresh client's
    exception classes can be built twice, once per thread, so a class check can miss."""
    if exc.response.get("Error", {}).get("Code") not in codes:
        raise exc


class EmulatorMocks(pulumi.runtime.Mocks):
    """Creates resources with boto3 clients pointed at the emulators; records IAM."""

    def __init__(self, clients: Mapping[str, Any], region: str) -> None:
        self._sqs = clients["sqs"]
        self._sns = clients["sns"]
        self._cloudwatch = clients["cloudwatch"]
        self._ses = clients["ses"]
        self._dynamodb = clients["dynamodb"]
        self._region = region
        self._lock = threading.Lock()
        self.recorded: dict[str, dict[str, Any]] = {}
        self._handlers: dict[str, Callable[[Mapping[str, Any]], State]] = {
            "aws:sqs/queue:Queue": self._queue,
            "aws:sqs/queuePolicy:QueuePolicy": self._queue_policy,
            "aws:sqs/redriveAllowPolicy:RedriveAllowPolicy": self._redrive_allow_policy,
            "aws:dynamodb/table:Table": self._table,
            "aws:sns/topic:Topic": self._topic,
            "aws:sns/topicSubscription:TopicSubscription": self._subscription,
            "aws:cloudwatch/metricAlarm:MetricAlarm": self._alarm,
            "aws:ses/emailIdentity:EmailIdentity": self._email_identity,
            "aws:iam/role:Role": self._role,
            "aws:iam/rolePolicy:RolePolicy": self._role_policy,
        }

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> State:
        if not args.custom:  # a ComponentResource: nothing to create
            return args.name, {}
        handler = self._handlers.get(args.typ)
        if handler is None:
            raise UnsupportedResourceError(
                f"resource type {args.typ} ({args.name}) is not implemented by the local "
                "provisioner: add a handler in infra/local/emulator_mocks.py"
            )
        physical_id, state = handler(_reveal(args.inputs))
        return physical_id, {**args.inputs, **state}

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], None]:
        raise UnsupportedResourceError(f"provider function {args.token} is not implemented")

    # SQS

    def _queue(self, inputs: Mapping[str, Any]) -> State:
        _require_only("aws:sqs/queue:Queue", inputs, {"name", *QUEUE_ATTRIBUTES})
        name = inputs["name"]
        attributes = {QUEUE_ATTRIBUTES[k]: _attribute(v) for k, v in inputs.items() if k != "name"}
        try:
            url = self._sqs.get_queue_url(QueueName=name)["QueueUrl"]
        except ClientError as exc:
            _unless_missing(exc, "AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")
            url = self._sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        else:  # an update: FifoQueue is fixed at creation, everything else can be set again
            attributes.pop("FifoQueue", None)
            self._sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
        arn = self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return url, {"name": name, "url": url, "arn": arn["Attributes"]["QueueArn"]}

    def _set_queue_attribute(self, typ: str, inputs: Mapping[str, Any], key: str) -> State:
        _require_only(typ, inputs, {"queueUrl", key})
        url = inputs["queueUrl"]
        self._sqs.set_queue_attributes(
            QueueUrl=url, Attributes={QUEUE_ATTRIBUTES[key]: inputs[key]}
        )
        return url, {}

    def _queue_policy(self, inputs: Mapping[str, Any]) -> State:
        return self._set_queue_attribute("aws:sqs/queuePolicy:QueuePolicy", inputs, "policy")

    def _redrive_allow_policy(self, inputs: Mapping[str, Any]) -> State:
        typ = "aws:sqs/redriveAllowPolicy:RedriveAllowPolicy"
        return self._set_queue_attribute(typ, inputs, "redriveAllowPolicy")

    # DynamoDB

    def _table(self, inputs: Mapping[str, Any]) -> State:
        _require_only("aws:dynamodb/table:Table", inputs, TABLE_INPUTS)
        name = inputs["name"]
        wanted = _table_request(inputs)
        try:
            table = self._dynamodb.describe_table(TableName=name)["Table"]
        except ClientError as exc:
            _unless_missing(exc, "ResourceNotFoundException")
            table = self._dynamodb.create_table(TableName=name, **wanted)["TableDescription"]
        else:
            _check_same_schema(name, table, wanted)
            protect = wanted["DeletionProtectionEnabled"]
            if table.get("DeletionProtectionEnabled", False) != protect:
                self._dynamodb.update_table(TableName=name, DeletionProtectionEnabled=protect)
        self._dynamodb.get_waiter("table_exists").wait(TableName=name)
        ttl = inputs.get("ttl")
        if ttl and ttl["enabled"]:
            current = self._dynamodb.describe_time_to_live(TableName=name)
            if current["TimeToLiveDescription"].get("TimeToLiveStatus") != "ENABLED":
                self._dynamodb.update_time_to_live(
                    TableName=name,
                    TimeToLiveSpecification={
                        "AttributeName": ttl["attributeName"],
                        "Enabled": True,
                    },
                )
        pitr = bool(inputs.get("pointInTimeRecovery", {}).get("enabled"))
        self._dynamodb.update_continuous_backups(
            TableName=name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": pitr}
        )
        state = {"name": name, "arn": table["TableArn"]}
        if table.get("LatestStreamArn"):
            state |= {
                "streamArn": table["LatestStreamArn"],
                "streamLabel": table["LatestStreamLabel"],
            }
        return name, state

    # SNS, CloudWatch, SES

    def _topic(self, inputs: Mapping[str, Any]) -> State:
        _require_only("aws:sns/topic:Topic", inputs, {"name", "kmsMasterKeyId"})
        arn = self._sns.create_topic(Name=inputs["name"])["TopicArn"]
        if "kmsMasterKeyId" in inputs:
            self._sns.set_topic_attributes(
                TopicArn=arn,
                AttributeName="KmsMasterKeyId",
                AttributeValue=inputs["kmsMasterKeyId"],
            )
        return arn, {"name": inputs["name"], "arn": arn}

    def _subscription(self, inputs: Mapping[str, Any]) -> State:
        typ = "aws:sns/topicSubscription:TopicSubscription"
        _require_only(typ, inputs, {"topic", "protocol", "endpoint"})
        arn = self._sns.subscribe(
            TopicArn=inputs["topic"],
            Protocol=inputs["protocol"],
            Endpoint=inputs["endpoint"],
            ReturnSubscriptionArn=True,
        )["SubscriptionArn"]
        return arn, {"arn": arn}

    def _alarm(self, inputs: Mapping[str, Any]) -> State:
        _require_only("aws:cloudwatch/metricAlarm:MetricAlarm", inputs, ALARM_INPUTS)
        name = inputs["name"]
        self._cloudwatch.put_metric_alarm(
            AlarmName=name,
            AlarmDescription=inputs.get("alarmDescription", ""),
            Namespace=inputs["namespace"],
            MetricName=inputs["metricName"],
            Dimensions=[{"Name": k, "Value": v} for k, v in inputs.get("dimensions", {}).items()],
            Statistic=inputs["statistic"],
            Period=int(inputs["period"]),
            EvaluationPeriods=int(inputs["evaluationPeriods"]),
            Threshold=float(inputs["threshold"]),
            ComparisonOperator=inputs["comparisonOperator"],
            TreatMissingData=inputs["treatMissingData"],
            AlarmActions=inputs.get("alarmActions", []),
            OKActions=inputs.get("okActions", []),
        )
        (alarm,) = self._cloudwatch.describe_alarms(AlarmNames=[name])["MetricAlarms"]
        return name, {"arn": alarm["AlarmArn"]}

    def _email_identity(self, inputs: Mapping[str, Any]) -> State:
        _require_only("aws:ses/emailIdentity:EmailIdentity", inputs, {"email"})
        email = inputs["email"]
        self._ses.verify_email_identity(EmailAddress=email)
        # SES returns no ARN; this is the one AWS assigns to the identity.
        return email, {"arn": f"arn:aws:ses:{self._region}:{ACCOUNT_ID}:identity/{email}"}

    # IAM: recorded only

    def _role(self, inputs: Mapping[str, Any]) -> State:
        _require_only("aws:iam/role:Role", inputs, {"name", "description", "assumeRolePolicy"})
        name = inputs["name"]
        arn = f"arn:aws:iam::{ACCOUNT_ID}:role/{name}"
        self._record(name, arn=arn, assume_role_policy=json.loads(inputs["assumeRolePolicy"]))
        return name, {"name": name, "arn": arn}

    def _role_policy(self, inputs: Mapping[str, Any]) -> State:
        _require_only("aws:iam/rolePolicy:RolePolicy", inputs, {"name", "role", "policy"})
        self._record(inputs["role"], policy=json.loads(inputs["policy"]))
        return f"{inputs['role']}:{inputs['name']}", {}

    def _record(self, role: str, **document: Any) -> None:
        with self._lock:
            self.recorded.setdefault(role, {}).update(document)


def _table_request(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """CreateTable's parameters for the table's inputs."""
    keys = [{"AttributeName": inputs["hashKey"], "KeyType": "HASH"}]
    if "rangeKey" in inputs:
        keys.append({"AttributeName": inputs["rangeKey"], "KeyType": "RANGE"})
    request: dict[str, Any] = {
        "AttributeDefinitions": [
            {"AttributeName": a["name"], "AttributeType": a["type"]} for a in inputs["attributes"]
        ],
        "KeySchema": keys,
        "BillingMode": inputs["billingMode"],
        "SSESpecification": {"Enabled": bool(inputs["serverSideEncryption"]["enabled"])},
        "DeletionProtectionEnabled": bool(inputs.get("deletionProtectionEnabled")),
    }
    indexes = [
        {
            "IndexName": index["name"],
            "KeySchema": [
                {"AttributeName": k["attributeName"], "KeyType": k["keyType"]}
                for k in index["keySchemas"]
            ],
            "Projection": {"ProjectionType": index["projectionType"]},
        }
        for index in inputs.get("globalSecondaryIndexes", [])
    ]
    if indexes:
        request["GlobalSecondaryIndexes"] = indexes
    if inputs.get("streamEnabled"):
        request["StreamSpecification"] = {
            "StreamEnabled": True,
            "StreamViewType": inputs["streamViewType"],
        }
    return request


def _check_same_schema(name: str, table: Mapping[str, Any], wanted: Mapping[str, Any]) -> None:
    """Keys, indexes and streams of an existing table cannot be changed in place here."""

    def shape(t: Mapping[str, Any]) -> tuple[Any, ...]:
        return (
            t["KeySchema"],
            sorted(
                (i["IndexName"], str(i["KeySchema"])) for i in t.get("GlobalSecondaryIndexes", [])
            ),
            t.get("StreamSpecification", {}).get("StreamViewType"),
        )

    if shape(table) != shape(wanted):
        raise UnsupportedResourceError(
            f"table {name} exists with other keys, indexes or stream than declared; "
            "recreate the local stack (python -m infra.local down, then up)"
        )
