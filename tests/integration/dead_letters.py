"""Dead-lettering without a worker, as a crashing consumer would, for the DLQ and alarm tests.

Receiving a message ``maxReceiveCount`` times with a zero visibility timeout uses up its
receives; the next receive moves it to the DLQ (SQS moves it on receive, not on a timer).
"""

from __future__ import annotations

from typing import Any

from polling import wait_until

from tasks.operator import queue_depth, queue_name


def dead_letter(sqs: Any, queue_url: str, dlq_url: str, count: int) -> None:
    """Receive ``queue_url``'s messages until ``count`` more are in its DLQ."""
    before = queue_depth(sqs, dlq_url).total

    def moved() -> bool:
        sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0)
        return queue_depth(sqs, dlq_url).total >= before + count

    wait_until(moved, 60, f"{count} messages dead-lettered into {queue_name(dlq_url)}")
    assert queue_depth(sqs, dlq_url).total == before + count
