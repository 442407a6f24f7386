"""IAM: ECS task roles, only the calls each process makes, only on its own resources."""

from __future__ import annotations

import json

from mocked_stack import QUEUE, ROLE, ROLE_POLICY, TABLE, ProgramRun

from flashsale.names import (
    INTAKE_ROLE,
    METRICS_NAMESPACE,
    PROJECT,
    RELAY_ROLE,
    SWEEPER_ROLE,
    WORKER_ROLE,
    Output,
    QueueRole,
    Table,
)

WORKER_ACTIONS = {
    "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SendMessage",
    "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query",
    "dynamodb:BatchGetItem", "dynamodb:TransactWriteItems", "dynamodb:ConditionCheckItem",
    "ses:SendEmail", "sns:Publish",
}  # fmt: skip
RELAY_ACTIONS = {
    "dynamodb:Query", "dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:DescribeStream",
    "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams",
    "sqs:SendMessage", "sqs:GetQueueAttributes", "cloudwatch:PutMetricData",
}  # fmt: skip
SWEEPER_ACTIONS = {
    "dynamodb:Query", "dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:PutItem",
    "cloudwatch:PutMetricData",
}  # fmt: skip
INTAKE_ACTIONS = {
    "sqs:SendMessage", "sqs:GetQueueAttributes", "dynamodb:GetItem", "dynamodb:BatchGetItem",
}  # fmt: skip
ROLES = {
    WORKER_ROLE: WORKER_ACTIONS,
    RELAY_ROLE: RELAY_ACTIONS,
    SWEEPER_ROLE: SWEEPER_ACTIONS,
    INTAKE_ROLE: INTAKE_ACTIONS,
}


def statements(run: ProgramRun, role: str) -> list[dict]:
    name = f"{PROJECT}-{run.stack}-{role}"
    (policy,) = run.find(ROLE_POLICY, lambda d: d.inputs["role"] == name)
    return json.loads(policy.inputs["policy"])["Statement"]


def allowed(run: ProgramRun, role: str) -> list[dict]:
    return [s for s in statements(run, role) if s["Effect"] == "Allow"]


def own_resources(run: ProgramRun, role: str) -> set[str]:
    """The ARNs each role may name: the worker all queues and tables, the relay, the sweeper
    and the intake far fewer."""
    queues = {q.state["arn"] for q in run.of_type(QUEUE) if "redrivePolicy" in q.inputs}
    outbox = run.named(TABLE, Table.OUTBOX.physical_name(run.stack))
    outbox_index = f"{outbox.state['arn']}/index/pending"
    if role == RELAY_ROLE:
        return queues | {outbox.state["arn"], outbox_index, outbox.state["streamArn"]}
    if role == INTAKE_ROLE:  # the purchases queue (not its DLQ) and three tables, no index
        purchases = run.named(QUEUE, QueueRole.PURCHASES.physical_name(run.stack))
        tables = (Table.INVENTORY, Table.ORDERS, Table.SAGAS)
        return {purchases.state["arn"]} | {
            run.named(TABLE, t.physical_name(run.stack)).state["arn"] for t in tables
        }
    if role == SWEEPER_ROLE:
        sagas = run.named(TABLE, Table.SAGAS.physical_name(run.stack)).state["arn"]
        return {sagas, f"{sagas}/index/active", outbox.state["arn"]}
    tables = {t.state["arn"] for t in run.of_type(TABLE)}
    indexes = {
        f"{t.state['arn']}/index/{i['name']}"
        for t in run.of_type(TABLE)
        for i in t.inputs.get("globalSecondaryIndexes", [])
    }
    dlqs = {q.state["arn"] for q in run.of_type(QUEUE)} - queues
    sender = f"arn:aws:ses:us-east-1:123456789012:{run.outputs[Output.SENDER_EMAIL]}"
    return queues | dlqs | tables | indexes | {sender}


def test_roles__are_assumed_only_by_ecs_tasks(run: ProgramRun) -> None:
    for role in run.of_type(ROLE):
        (statement,) = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
        assert statement["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}, role.name
        assert statement["Action"] == "sts:AssumeRole", role.name


def test_roles__allow_only_the_calls_their_process_makes(run: ProgramRun) -> None:
    for role, expected in ROLES.items():
        actions = {a for s in allowed(run, role) for a in s["Action"]}
        assert actions == expected, f"role {role}: extra {actions - expected}"


def test_roles__name_no_wildcard_resource_but_the_two_aws_forces(run: ProgramRun) -> None:
    for role in ROLES:
        for statement in allowed(run, role):
            wildcards = [r for r in statement["Resource"] if "*" in r]
            if not wildcards:
                continue
            sid = statement["Sid"]
            if statement["Action"] == ["cloudwatch:PutMetricData"]:
                namespace = statement["Condition"]["StringEquals"]["cloudwatch:namespace"]
                assert namespace == METRICS_NAMESPACE, f"role {role}: {sid}"
            elif statement["Action"] == ["sns:Publish"]:  # SMS to a phone number: no ARN exists
                deny = {
                    "Effect": "Deny",
                    "Action": ["sns:Publish"],
                    "Resource": ["arn:aws:sns:*:*:*"],
                }
                assert any(deny.items() <= s.items() for s in statements(run, role)), sid
            else:
                raise AssertionError(f"role {role}: statement {sid} allows {wildcards}")


def test_roles__touch_only_their_own_resources(run: ProgramRun) -> None:
    for role in ROLES:
        named = {r for s in allowed(run, role) for r in s["Resource"] if r != "*"}
        foreign = named - own_resources(run, role)
        assert not foreign, f"role {role} reaches resources not its own: {sorted(foreign)}"
