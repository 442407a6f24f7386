"""Every work queue: a same-type DLQ, redrive both ways, polling, SSE, TLS-only, three alarms."""

from __future__ import annotations

import pytest
from mocked_stack import ALARM, QUEUE, QUEUE_POLICY, REDRIVE_ALLOW, TOPIC, Declared, ProgramRun

from flashsale.names import TASK_TIME_LIMIT_SECONDS, QueueRole

DLQ_RETENTION_SECONDS = 14 * 86_400


def work_queue(run: ProgramRun, role: QueueRole) -> tuple[Declared, Declared]:
    """The role's queue and the DLQ its redrive policy names."""
    queue = run.named(QUEUE, role.physical_name(run.stack))
    assert "redrivePolicy" in queue.inputs, f"queue {queue.name} has no redrive policy"
    dlq = run.queue_by_arn(queue.json("redrivePolicy")["deadLetterTargetArn"])
    return queue, dlq


@pytest.mark.parametrize("role", list(QueueRole))
def test_queue__has_a_dlq_of_the_same_type_and_redrive_from_config(
    run: ProgramRun, role: QueueRole
) -> None:
    queue, dlq = work_queue(run, role)
    assert dlq.state["name"] == role.physical_name(run.stack, dlq=True)
    assert bool(queue.inputs.get("fifoQueue")) == bool(dlq.inputs.get("fifoQueue")) == role.fifo, (
        f"queue {queue.name} and its DLQ {dlq.name} differ in type"
    )
    count = queue.json("redrivePolicy")["maxReceiveCount"]
    assert count == run.config.max_receive_count, f"queue {queue.name}: maxReceiveCount {count}"


@pytest.mark.parametrize("role", list(QueueRole))
def test_dlq__accepts_redrive_only_from_its_queue_and_keeps_14_days(
    run: ProgramRun, role: QueueRole
) -> None:
    queue, dlq = work_queue(run, role)
    allows = run.find(REDRIVE_ALLOW, lambda d: d.inputs["queueUrl"] == dlq.state["url"])
    assert len(allows) == 1, f"DLQ {dlq.name} has {len(allows)} redrive-allow policies"
    assert allows[0].json("redriveAllowPolicy") == {
        "redrivePermission": "byQueue",
        "sourceQueueArns": [queue.state["arn"]],
    }, f"DLQ {dlq.name} accepts other sources"
    assert dlq.inputs["messageRetentionSeconds"] == DLQ_RETENTION_SECONDS, f"DLQ {dlq.name}"
    assert queue.inputs["messageRetentionSeconds"] < DLQ_RETENTION_SECONDS, f"queue {queue.name}"


def test_every_queue__long_polls_is_encrypted_and_outlives_its_task(run: ProgramRun) -> None:
    assert len(run.of_type(QUEUE)) == 2 * len(QueueRole)
    for role in QueueRole:
        for queue in work_queue(run, role):
            assert queue.inputs["receiveWaitTimeSeconds"] == 20, f"queue {queue.name}"
            assert queue.inputs["sqsManagedSseEnabled"] is True, f"queue {queue.name} has no SSE"
            visibility = queue.inputs["visibilityTimeoutSeconds"]
            assert visibility > TASK_TIME_LIMIT_SECONDS[role], (
                f"queue {queue.name}: visibility {visibility}s <= time limit of its task"
            )


def test_fifo_queues__are_high_throughput_without_content_dedup(run: ProgramRun) -> None:
    fifo = run.find(QUEUE, lambda d: bool(d.inputs.get("fifoQueue")))
    assert fifo, f"stack {run.stack} declares no FIFO queue"
    for queue in fifo:
        assert queue.state["name"].endswith(".fifo"), f"queue {queue.name}"
        assert queue.inputs["contentBasedDeduplication"] is False, f"queue {queue.name}"
        assert queue.inputs["deduplicationScope"] == "messageGroup", f"queue {queue.name}"
        assert queue.inputs["fifoThroughputLimit"] == "perMessageGroupId", f"queue {queue.name}"


def test_every_queue__denies_requests_without_tls(run: ProgramRun) -> None:
    for queue in run.of_type(QUEUE):
        policies = [
            p for p in run.of_type(QUEUE_POLICY) if p.inputs["queueUrl"] == queue.state["url"]
        ]
        assert len(policies) == 1, f"queue {queue.name} has {len(policies)} queue policies"
        statements = policies[0].json("policy")["Statement"]
        assert {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "sqs:*",
            "Resource": queue.state["arn"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        } in statements, f"queue {queue.name} allows plain HTTP"


@pytest.mark.parametrize("role", list(QueueRole))
def test_queue__has_dlq_depth_age_and_backlog_alarms_to_the_topic(
    run: ProgramRun, role: QueueRole
) -> None:
    queue, dlq = work_queue(run, role)
    (topic,) = run.of_type(TOPIC)
    expected = {
        (dlq.state["name"], "ApproximateNumberOfMessagesVisible", 0),
        (
            queue.state["name"],
            "ApproximateAgeOfOldestMessage",
            run.config.oldest_message_age_alarm_seconds,
        ),
        (
            queue.state["name"],
            "ApproximateNumberOfMessagesVisible",
            run.config.backlog_alarm_threshold,
        ),
    }
    for queue_name, metric, threshold in expected:
        alarms = [
            a
            for a in run.of_type(ALARM)
            if a.inputs.get("dimensions") == {"QueueName": queue_name}
            and a.inputs["metricName"] == metric
        ]
        assert len(alarms) == 1, f"queue {queue_name}: {len(alarms)} alarms on {metric}"
        alarm = alarms[0].inputs
        assert (alarm["namespace"], alarm["comparisonOperator"], alarm["threshold"]) == (
            "AWS/SQS",
            "GreaterThanThreshold",
            threshold,
        ), f"alarm {alarms[0].name}"
        actions = [topic.state["arn"]]
        assert alarm["alarmActions"] == alarm["okActions"] == actions, f"alarm {alarms[0].name}"
