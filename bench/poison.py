"""Poison messages: what a broken producer puts on a queue, and how many reached the DLQ.

Each carries a run id so the dead-letter count is exact for one run, however many other
messages the DLQ holds. Each gets its own FIFO group, so it never holds up an event's buyers.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from flashsale.task_messages import task_message_body

PURCHASE_TASK = "tasks.purchase.allocate"


def poison_bodies(run_id: str, count: int, routing_key: str) -> list[str]:
    """``count`` undeliverable bodies of every kind: not Celery, unknown task, bad schema..."""
    kinds = [
        lambda n: f"not a celery message {run_id}/{n} \u00e9",
        lambda n: json.dumps({"run": run_id, "n": n}),
        lambda n: task_message_body(
            "tasks.no_such_task", {"run": run_id, "n": n}, routing_key=routing_key
        ),
        lambda n: task_message_body(
            PURCHASE_TASK,
            {"batch": {"event_id": run_id, "requests": [], "n": n}},
            routing_key=routing_key,
        ),
        lambda n: task_message_body(
            PURCHASE_TASK, {"unexpected": f"{run_id}/{n}"}, routing_key=routing_key
        ),
    ]
    return [kinds[n % len(kinds)](n) for n in range(count)]


def send_poison(sqs: Any, queue_url: str, bodies: list[str], *, fifo: bool) -> None:
    for n, body in enumerate(bodies):
        extra = (
            {
                "MessageGroupId": f"poison-{n}",
                "MessageDeduplicationId": f"poison-{n}-{time.time_ns()}",
            }
            if fifo
            else {}
        )
        sqs.send_message(QueueUrl=queue_url, MessageBody=body, **extra)


def _mentions(body: str, run_id: str) -> bool:
    if run_id in body:
        return True
    try:  # Celery bodies are base64 JSON, their kwargs base64 again
        envelope = json.loads(base64.b64decode(body))
        return run_id in base64.b64decode(envelope["body"]).decode()
    except (ValueError, KeyError, TypeError):
        return False


def count_dead_letters(sqs: Any, dlq_url: str, run_id: str) -> int:
    """Exactly how many of this run's messages are in the DLQ (they stay there, for redrive).

    Messages are counted by id, so one seen twice counts once; the count ends when a receive
    brings nothing new. Each is hidden only briefly, so the count can be taken again.
    """
    seen: set[str] = set()
    mine: set[str] = set()
    while True:
        response = sqs.receive_message(
            QueueUrl=dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=10, WaitTimeSeconds=1
        )
        messages = [m for m in response.get("Messages", []) if m["MessageId"] not in seen]
        if not messages:
            return len(mine)
        seen.update(m["MessageId"] for m in messages)
        mine.update(m["MessageId"] for m in messages if _mentions(m["Body"], run_id))
