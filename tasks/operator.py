"""What the operator commands (``tasks.dlq``, ``tasks.status``) share: their clients and
settings, error handling, and what they read off a queue — its depth by state, its ARN, the
age of its oldest message.

SQS's counts are approximate on AWS (exact on
LocalStack); the age of the oldest message exists only as a CloudWatch metric, so it is
``None`` where CloudWatch has no recent datapoint (LocalStack does not publish it).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, NoRegionError
from pydantic import ValidationError
from rich.console import Console
from rich.text import Text

from flashsale import aws
from flashsale.settings import Settings, get_settings

_DEPTH_ATTRIBUTES = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]
# The metric is published once a minute; look back far enough to find the latest point.
_AGE_LOOKBACK = timedelta(minutes=5)


@dataclass(frozen=True)
class QueueDepth:
    """Messages in a queue, by state."""

    visible: int
    in_flight: int
    delayed: int

    @property
    def total(self) -> int:
        """Everything the queue holds: what a redrive will move, what a DLQ alarm means."""
        return self.visible + self.in_flight + self.delayed


def queue_name(queue_url: str) -> str:
    """The SQS name at the end of a queue URL (AWS and LocalStack URLs alike)."""
    return queue_url.rstrip("/").rsplit("/", 1)[-1]


def queue_depth(sqs: Any, queue_url: str) -> QueueDepth:
    """The queue's depth by state; raises botocore's errors (no queue, no endpoint)."""
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=_DEPTH_ATTRIBUTES)[
        "Attributes"
    ]
    return QueueDepth(
        visible=int(attributes.get("ApproximateNumberOfMessages", 0)),
        in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        delayed=int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
    )


def queue_arn(sqs: Any, queue_url: str) -> str:
    return str(
        sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
    )


def oldest_message_age(cloudwatch: Any, queue_url: str) -> float | None:
    """Seconds the oldest message has waited, from CloudWatch; ``None`` if unknown.

    Optional information: a CloudWatch error (no permission, no endpoint) gives ``None`` rather
    than failing the operator's command.
    """
    now = datetime.now(UTC)
    try:
        points = cloudwatch.get_metric_statistics(
            Namespace="AWS/SQS",
            MetricName="ApproximateAgeOfOldestMessage",
            Dimensions=[{"Name": "QueueName", "Value": queue_name(queue_url)}],
            StartTime=now - _AGE_LOOKBACK,
            EndTime=now,
            Period=60,
            Statistics=["Maximum"],
        ).get("Datapoints", [])
    except (BotoCoreError, ClientError):
        return None
    if not points:
        return None
    latest = max(points, key=lambda point: point["Timestamp"])
    return float(latest["Maximum"])


def format_age(seconds: float | None) -> str:
    """``"-"``, ``"42 s"``, ``"12 min"``, ``"3.5 h"``: for a table cell."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class Operator:
    """What every command needs: built from the process's settings and clients, or given by a
    test (which runs the commands in-process against its own stack)."""

    settings: Settings
    sqs: Any
    cloudwatch: Any
    console: Console
    dynamodb: Any = None  # the outbox and saga rows of ``tasks.status``; None: not shown

    @classmethod
    def default(cls) -> Operator:
        return cls(
            get_settings(),
            aws.client("sqs"),
            aws.client("cloudwatch"),
            Console(),
            aws.client("dynamodb"),
        )


Command = Callable[[Operator, argparse.Namespace], int]


NO_STACK = (
    "No stack to talk to. For the local stack: make stack-up, then "
    'eval "$(.venv/bin/python -m infra.local env)". For AWS: export FLASHSALE_OUTPUTS_FILE '
    "(pulumi stack output --json > outputs.json) and your usual AWS credentials and region."
)


def run_command(
    parser: argparse.ArgumentParser, argv: list[str] | None, ops: Operator | None
) -> int:
    """Parse ``argv``, run the command the parser set as ``run``; an AWS error exits 2.

    Without a stack to talk to (no outputs file, no region) it says how to point at one.
    """
    args = parser.parse_args(argv)
    try:
        ops = ops or Operator.default()
    except (ValidationError, NoRegionError) as exc:
        Console(stderr=True).print(Text(f"{NO_STACK}\n({type(exc).__name__})", style="red"))
        return 2
    command: Command = args.run
    try:
        return command(ops, args)
    except (BotoCoreError, ClientError) as exc:
        ops.console.print(Text(f"AWS error: {exc}", style="red"))
        return 2
