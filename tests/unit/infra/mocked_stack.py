"""Plain mocks for the Pulumi program, and what one run of it declared."""

from __future__ import annotations

import contextvars
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pulumi

from infra.config import InfraConfig
from infra.program import load_stack_config

ACCOUNT = "123456789012"
REGION = "us-east-1"

QUEUE = "aws:sqs/queue:Queue"
QUEUE_POLICY = "aws:sqs/queuePolicy:QueuePolicy"
REDRIVE_ALLOW = "aws:sqs/redriveAllowPolicy:RedriveAllowPolicy"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
TABLE = "aws:dynamodb/table:Table"
TOPIC = "aws:sns/topic:Topic"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"


@dataclass(frozen=True)
class Declared:
    """One resource the program declared: its type, logical name, inputs and mocked state."""

    typ: str
    name: str
    inputs: dict[str, Any]
    state: dict[str, Any]

    def json(self, key: str) -> Any:
        return json.loads(self.inputs[key])


class PlainMocks(pulumi.runtime.Mocks):
    """Echo the inputs back, plus the name, ARN, URL and stream ARN AWS would compute."""

    def __init__(self) -> None:
        self.declared: list[Declared] = []
        self._lock = threading.Lock()

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        name = args.inputs.get("name") or args.inputs.get("email") or args.name
        service = args.typ.split(":")[1].split("/")[0]
        state = {**args.inputs, "name": name, "arn": f"arn:aws:{service}:{REGION}:{ACCOUNT}:{name}"}
        physical_id = name
        if args.typ == QUEUE:
            physical_id = state["url"] = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{name}"
        if args.typ == TABLE:
            state["arn"] = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"
            if args.inputs.get("streamEnabled"):
                state["streamArn"] = f"{state['arn']}/stream/2025-01-01T00:00:00.000"
        with self._lock:
            self.declared.append(Declared(args.typ, args.name, args.inputs, state))
        return physical_id, state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], None]:
        raise NotImplementedError(f"the program should make no provider calls: {args.token}")


@dataclass(frozen=True)
class ProgramRun:
    stack: str
    config: InfraConfig
    outputs: dict[str, Any]
    declared: list[Declared] = field(repr=False)

    def of_type(self, typ: str) -> list[Declared]:
        return [d for d in self.declared if d.typ == typ]

    def find(self, typ: str, match: Callable[[Declared], bool]) -> list[Declared]:
        return [d for d in self.of_type(typ) if match(d)]

    def named(self, typ: str, physical_name: str) -> Declared:
        (found,) = self.find(typ, lambda d: d.state["name"] == physical_name)
        return found

    def queue_by_arn(self, arn: str) -> Declared:
        (found,) = self.find(QUEUE, lambda d: d.state["arn"] == arn)
        return found


def read_config(stack: str) -> InfraConfig:
    """The config the program sees, read the same way, for the expected values."""

    def read() -> InfraConfig:
        pulumi.runtime.set_all_config(*load_stack_config(stack))
        return InfraConfig.load(stack)

    return contextvars.Context().run(read)
