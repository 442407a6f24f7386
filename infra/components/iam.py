"""Least-privilege roles for the Celery worker, the outbox relay, the sweeper and the intake.

Both run as ECS tasks, so the roles trust ``ecs-tasks.amazonaws.com`` (give the task definition
this role as its *task* role). Each inline policy names only the resources its process uses and
only the calls it makes. Two statements cannot name a resource, because AWS offers none:

- ``cloudwatch:PutMetricData`` (relay): ``Resource "*"``, limited by a ``cloudwatch:namespace``
  condition to ``flashsale.names.METRICS_NAMESPACE``;
- ``sns:Publish`` of an SMS straight to a phone number (worker): the "resource" is the phone
  number, so the Allow is ``"*"`` and a Deny on every SNS ARN keeps it from any topic.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from flashsale.names import METRICS_NAMESPACE, PROJECT, Table
from infra.components.sender import SenderIdentity
from infra.components.tables import DataTables
from infra.components.work_queue import WorkQueue

ASSUME_ROLE_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
)
ANY_SNS_ARN = "arn:aws:sns:*:*:*"

Statement = dict[str, Any]


def _allow(sid: str, actions: list[str], resources: list[Any], **extra: Any) -> Statement:
    return {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources, **extra}


def worker_statements(
    queues: Iterable[WorkQueue], tables: DataTables, sender: SenderIdentity
) -> list[Statement]:
    """Consume and publish work, write the tables, send e-mail and SMS."""
    queues = list(queues)
    table_resources = [
        arn for table in Table for arn in (tables.tables[table].arn, *tables.index_arns(table))
    ]
    return [
        _allow(
            "WorkQueues",
            [
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:ChangeMessageVisibility",
                "sqs:GetQueueAttributes",
                "sqs:GetQueueUrl",
                "sqs:SendMessage",
            ],
            [q.queue.arn for q in queues],
        ),
        _allow("DeadLetter", ["sqs:SendMessage"], [q.dlq.arn for q in queues]),
        _allow(
            "Tables",
            [
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
                "dynamodb:Query",
                "dynamodb:BatchGetItem",
                "dynamodb:TransactWriteItems",
                "dynamodb:ConditionCheckItem",
            ],
            table_resources,
        ),
        _allow("SendEmail", ["ses:SendEmail"], [sender.identity.arn]),
        _allow("SendSms", ["sns:Publish"], ["*"]),
        {
            "Sid": "NoTopicPublish",
            "Effect": "Deny",
            "Action": ["sns:Publish"],
            "Resource": [ANY_SNS_ARN],
        },
    ]


def relay_statements(queues: Iterable[WorkQueue], tables: DataTables) -> list[Statement]:
    """Read pending outbox records (index or stream), mark them, publish, report metrics."""
    outbox = tables.tables[Table.OUTBOX]
    return [
        _allow(
            "Outbox",
            ["dynamodb:Query", "dynamodb:GetItem", "dynamodb:UpdateItem"],
            [outbox.arn, *tables.index_arns(Table.OUTBOX)],
        ),
        _allow(
            "OutboxStream",
            [
                "dynamodb:DescribeStream",
                "dynamodb:GetRecords",
                "dynamodb:GetShardIterator",
                "dynamodb:ListStreams",
            ],
            [outbox.stream_arn],
        ),
        _allow(
            "PublishWork",
            ["sqs:SendMessage", "sqs:GetQueueAttributes"],
            [q.queue.arn for q in queues],
        ),
        _allow(
            "RelayMetrics",
            ["cloudwatch:PutMetricData"],
            ["*"],
            Condition={"StringEquals": {"cloudwatch:namespace": METRICS_NAMESPACE}},
        ),
    ]


def sweeper_statements(tables: DataTables) -> list[Statement]:
    """Find due sagas, move them (saga state and outbox records in one transaction), report
    the quarantined count."""
    sagas, outbox = tables.tables[Table.SAGAS], tables.tables[Table.OUTBOX]
    return [
        _allow(
            "Sagas",
            ["dynamodb:Query", "dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:PutItem"],
            [sagas.arn, *tables.index_arns(Table.SAGAS)],
        ),
        _allow("SagaCommands", ["dynamodb:PutItem"], [outbox.arn]),
        _allow(
            "SweeperMetrics",
            ["cloudwatch:PutMetricData"],
            ["*"],
            Condition={"StringEquals": {"cloudwatch:namespace": METRICS_NAMESPACE}},
        ),
    ]


def intake_statements(purchases: WorkQueue, tables: DataTables) -> list[Statement]:
    """The HTTP intake: send purchase batches, read the backlog (backpressure), read events,
    orders and sagas (sold-out cache, order status). No index, no write, no other queue."""
    readable = [tables.tables[t].arn for t in (Table.INVENTORY, Table.ORDERS, Table.SAGAS)]
    return [
        _allow(
            "EnqueuePurchases",
            ["sqs:SendMessage", "sqs:GetQueueAttributes"],
            [purchases.queue.arn],
        ),
        _allow("ReadStatus", ["dynamodb:GetItem", "dynamodb:BatchGetItem"], readable),
    ]


@dataclass(frozen=True)
class ServiceRoleArgs:
    stack: str
    role: str  # flashsale.names.WORKER_ROLE, RELAY_ROLE, SWEEPER_ROLE or INTAKE_ROLE
    description: str
    statements: list[Statement]


class ServiceRole(pulumi.ComponentResource):
    """An ECS task role with one inline policy."""

    role: aws.iam.Role

    def __init__(
        self, name: str, args: ServiceRoleArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("flashsale:iam:ServiceRole", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.role = aws.iam.Role(
            name,
            name=f"{PROJECT}-{args.stack}-{args.role}",
            description=args.description,
            assume_role_policy=ASSUME_ROLE_POLICY,
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-policy",
            name=f"{PROJECT}-{args.stack}-{args.role}",
            role=self.role.id,
            policy=pulumi.Output.json_dumps(
                {"Version": "2012-10-17", "Statement": args.statements}
            ),
            opts=child,
        )
        self.register_outputs({"arn": self.role.arn})
