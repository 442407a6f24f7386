"""The visibility heartbeat (``tasks.heartbeat``) against a real worker and a real queue.

A throwaway queue with a 4 s visibility timeout (DLQ after 2 receives) and a task that works
9 s. With the heartbeat the message stays invisible and the task runs exactly once; without it
SQS hands the message out again mid-run and the task runs twice, at the same time — which
proves the test can fail. The worker runs with concurrency 2, so a second copy starts as soon
as it is received, and every run writes a line when it starts.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from polling import wait_until
from scenarios import Scenario

from flashsale.task_messages import task_message_body
from infra.local.fleet import AppProcess, Fleet

pytestmark = pytest.mark.integration

QUEUE = "it-heartbeat"  # tests/integration/heartbeat_celeryconfig.py
VISIBILITY_SECONDS = 4
WORK_SECONDS = 9  # more than twice the visibility timeout
MAX_RECEIVES = 2  # a third receive moves the message to the DLQ: at most 2 runs, ever


@pytest.fixture(scope="module")
def queue(clients: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """A new queue and its DLQ; their URLs. Deleted after the module."""
    sqs = clients["sqs"]
    suffix = uuid.uuid4().hex[:10]
    dlq_url = sqs.create_queue(QueueName=f"it-heartbeat-dlq-{suffix}")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVES)}
    url = sqs.create_queue(
        QueueName=f"it-heartbeat-{suffix}",
        Attributes={
            "VisibilityTimeout": str(VISIBILITY_SECONDS),
            "RedrivePolicy": json.dumps(redrive),
        },
    )["QueueUrl"]
    yield url, dlq_url
    sqs.delete_queue(QueueUrl=url)
    sqs.delete_queue(QueueUrl=dlq_url)


@pytest.fixture(scope="module")
def worker(
    environ: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
    queue: tuple[str, str],
) -> Iterator[AppProcess]:
    fleet = Fleet(environ, tmp_path_factory.mktemp("heartbeat-worker-logs"))
    process = fleet.start_worker(
        "heartbeat-0",
        [QUEUE],
        concurrency=2,
        config_module="tests.integration.heartbeat_celeryconfig",
        extra_env={"IT_HEARTBEAT_QUEUE_URL": queue[0]},
    )
    yield process
    fleet.stop_all()


def run(
    clients: dict[str, Any], queue_url: str, record: Path, task: str, **kwargs: Any
) -> tuple[str, str]:
    """Send one task message straight to the queue; its run id and SQS message id."""
    run_id = uuid.uuid4().hex
    body = task_message_body(
        task,
        {"record": str(record), "run_id": run_id, "seconds": WORK_SECONDS, **kwargs},
        routing_key=QUEUE,
    )
    message_id = clients["sqs"].send_message(QueueUrl=queue_url, MessageBody=body)["MessageId"]
    return run_id, message_id


def lines(record: Path, run_id: str, phase: str) -> list[dict[str, Any]]:
    if not record.exists():
        return []
    found = [json.loads(line) for line in record.read_text().splitlines()]
    return [line for line in found if line["run_id"] == run_id and line["phase"] == phase]


def depth(clients: dict[str, Any], queue_url: str) -> int:
    attributes = clients["sqs"].get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


def finished(clients: dict[str, Any], queue_url: str, record: Path, run_id: str, runs: int) -> bool:
    """``runs`` runs ended and the message left the queue (deleted, or dead-lettered)."""
    return len(lines(record, run_id, "end")) >= runs and depth(clients, queue_url) == 0


@pytest.mark.scenario(
    "visibility heartbeat ({task})",
    injected=f"a {WORK_SECONDS} s task on a {VISIBILITY_SECONDS} s visibility queue",
    unit="tasks",
)
@pytest.mark.parametrize(
    ("task", "kwargs"),
    [("it.heartbeat.slow", {"heartbeat": True}), ("it.heartbeat.slow_base", {})],
    ids=["context-manager", "base-class"],
)
def test_heartbeat__a_task_longer_than_the_visibility_timeout_runs_exactly_once(
    worker: AppProcess,
    queue: tuple[str, str],
    clients: dict[str, Any],
    tmp_path: Path,
    task: str,
    kwargs: dict[str, Any],
    scenario: Scenario,
) -> None:
    queue_url, dlq_url = queue
    record = tmp_path / "runs.jsonl"
    run_id, message_id = run(clients, queue_url, record, task, **kwargs)

    wait_until(
        lambda: finished(clients, queue_url, record, run_id, 1),
        WORK_SECONDS + 30,
        "the task to end and its message to be deleted",
    )
    starts, ends = lines(record, run_id, "start"), lines(record, run_id, "end")
    print(f"\n{task}: {len(starts)} run(s); heartbeat beats: {ends[0]['beats']}")
    scenario.record(
        sent=1,
        processed=len({line["run_id"] for line in ends}),
        dead_lettered=depth(clients, dlq_url),
        duplicated=len(starts) - 1,
        **({"beats": ends[0]["beats"]} if ends[0]["beats"] is not None else {}),
    )

    # A redelivery would have started at once on the idle second process, before the end.
    assert len(starts) == len(ends) == 1
    assert ends[0]["message_id"] == message_id
    assert ends[0]["at"] - starts[0]["at"] >= WORK_SECONDS > 2 * VISIBILITY_SECONDS
    if kwargs.get("heartbeat"):
        assert ends[0]["beats"] >= WORK_SECONDS - 2  # one per second
    assert depth(clients, dlq_url) == 0
    assert worker.alive()


@pytest.mark.scenario(
    "no heartbeat (control): the same task runs twice",
    injected=f"a {WORK_SECONDS} s task on a {VISIBILITY_SECONDS} s visibility queue",
    unit="tasks",
)
def test_without_heartbeat__the_same_task_is_redelivered_and_runs_twice_at_once(
    worker: AppProcess,
    queue: tuple[str, str],
    clients: dict[str, Any],
    tmp_path: Path,
    scenario: Scenario,
) -> None:
    queue_url, _ = queue
    record = tmp_path / "runs.jsonl"
    run_id, message_id = run(clients, queue_url, record, "it.heartbeat.slow", heartbeat=False)

    wait_until(
        lambda: finished(clients, queue_url, record, run_id, MAX_RECEIVES),
        2 * WORK_SECONDS + 30,
        "both runs to end and the message to leave the queue",
    )
    starts, ends = lines(record, run_id, "start"), lines(record, run_id, "end")
    first_end = min(line["at"] for line in ends)
    print(f"\nwithout heartbeat: {len(starts)} runs of message {message_id}")
    scenario.record(sent=1, processed=1, duplicated=len(starts) - 1)

    # The redelivered copy started while the first run was still working.
    assert len(starts) == len(ends) == MAX_RECEIVES
    assert {line["message_id"] for line in ends} == {message_id}
    assert max(line["at"] for line in starts) < first_end
    assert worker.alive()
