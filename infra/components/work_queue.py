"""A work queue declared together with its DLQ, policies and alarms.

One component per queue role, so no queue can exist without a dead-letter queue, a redrive
policy, TLS-only access and the three alarms an operator needs in a flash sale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from flashsale.names import QueueRole, alarm_name
from infra.components.alarms import AlarmRule, notifying_alarm

LONG_POLL_SECONDS = 20  # the SQS maximum: fewer empty receives, lower latency than polling
SQS_MAX_VISIBILITY_SECONDS = 43_200
# A standard queue's message keeps its first enqueue time when it is dead-lettered, so the
# work queue must retain messages for less time than its DLQ does.
QUEUE_RETENTION_SECONDS = 4 * 86_400
BACKLOG_EVALUATION_PERIODS = 5  # a spike is expected; a backlog that stays is the problem


@dataclass(frozen=True)
class WorkQueueArgs:
    """Plain values for one queue role; invalid timing is refused here, at definition."""

    role: QueueRole
    stack: str
    time_limit_seconds: int
    visibility_timeout_seconds: int
    max_receive_count: int
    dlq_retention_seconds: int
    backlog_alarm_threshold: int
    oldest_message_age_alarm_seconds: int
    alarm_topic_arn: pulumi.Input[str]

    def __post_init__(self) -> None:
        # A message that becomes visible while its task may still run is delivered twice.
        if self.visibility_timeout_seconds <= self.time_limit_seconds:
            raise ValueError(
                f"queue {self.role}: visibility timeout {self.visibility_timeout_seconds}s must "
                f"exceed the task's hard time limit {self.time_limit_seconds}s"
            )
        if self.visibility_timeout_seconds > SQS_MAX_VISIBILITY_SECONDS:
            raise ValueError(
                f"queue {self.role}: visibility timeout {self.visibility_timeout_seconds}s is "
                f"above the SQS maximum {SQS_MAX_VISIBILITY_SECONDS}s"
            )


def tls_only_policy(queue_arn: pulumi.Input[str]) -> pulumi.Output[str]:
    """A queue policy that denies every request not made over TLS."""
    return pulumi.Output.json_dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "DenyInsecureTransport",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "sqs:*",
                    "Resource": queue_arn,
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                }
            ],
        }
    )


class WorkQueue(pulumi.ComponentResource):
    """An SQS queue, its same-type DLQ, redrive in both directions, TLS-only policies, alarms."""

    queue: aws.sqs.Queue
    dlq: aws.sqs.Queue

    def __init__(
        self, name: str, args: WorkQueueArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("flashsale:messaging:WorkQueue", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.dlq = aws.sqs.Queue(
            f"{name}-dlq",
            message_retention_seconds=args.dlq_retention_seconds,
            **self._queue_args(args, dlq=True),
            opts=child,
        )
        self.queue = aws.sqs.Queue(
            name,
            message_retention_seconds=QUEUE_RETENTION_SECONDS,
            redrive_policy=pulumi.Output.json_dumps(
                {"deadLetterTargetArn": self.dlq.arn, "maxReceiveCount": args.max_receive_count}
            ),
            **self._queue_args(args, dlq=False),
            opts=child,
        )
        # Only this queue may dead-letter into the DLQ (and be redriven back from it).
        aws.sqs.RedriveAllowPolicy(
            f"{name}-dlq-redrive-allow",
            queue_url=self.dlq.url,
            redrive_allow_policy=pulumi.Output.json_dumps(
                {"redrivePermission": "byQueue", "sourceQueueArns": [self.queue.arn]}
            ),
            opts=child,
        )
        for suffix, queue in (("", self.queue), ("-dlq", self.dlq)):
            aws.sqs.QueuePolicy(
                f"{name}{suffix}-tls-only",
                queue_url=queue.url,
                policy=tls_only_policy(queue.arn),
                opts=child,
            )
        visible = "ApproximateNumberOfMessagesVisible"
        alarms = (
            ("dlq-depth", self.dlq, visible, 0, 1, "messages were dead-lettered: inspect, redrive"),
            (
                "oldest-message-age",
                self.queue,
                "ApproximateAgeOfOldestMessage",
                args.oldest_message_age_alarm_seconds,
                1,
                "the oldest message has waited too long: consumers stuck or too few",
            ),
            (
                "backlog",
                self.queue,
                visible,
                args.backlog_alarm_threshold,
                BACKLOG_EVALUATION_PERIODS,
                "the backlog stays high: scale consumers on queue depth",
            ),
        )
        for kind, queue, metric, threshold, periods, meaning in alarms:
            rule = AlarmRule(
                name=alarm_name(args.role.physical_name(args.stack), kind),
                namespace="AWS/SQS",
                metric=metric,
                statistic="Maximum",
                threshold=threshold,
                meaning=meaning,
                periods=periods,
                dimensions={"QueueName": queue.name},
            )
            notifying_alarm(f"{name}-{kind}", rule, args.alarm_topic_arn, self)
        self.register_outputs(
            {
                "queue_url": self.queue.url,
                "queue_arn": self.queue.arn,
                "dlq_url": self.dlq.url,
                "dlq_arn": self.dlq.arn,
            }
        )

    @staticmethod
    def _queue_args(args: WorkQueueArgs, *, dlq: bool) -> dict[str, Any]:
        """What the queue and its DLQ share: type, polling, encryption, visibility."""
        shared: dict[str, Any] = {
            "name": args.role.physical_name(args.stack, dlq=dlq),
            "receive_wait_time_seconds": LONG_POLL_SECONDS,
            "sqs_managed_sse_enabled": True,
            "visibility_timeout_seconds": args.visibility_timeout_seconds,
        }
        if args.role.fifo:
            # High-throughput FIFO: dedup and throughput per message group (one event each);
            # producers set deterministic dedup ids (a batch's order ids), never the body's hash.
            shared |= {
                "fifo_queue": True,
                "content_based_deduplication": False,
                "deduplication_scope": "messageGroup",
                "fifo_throughput_limit": "perMessageGroupId",
            }
        return shared
