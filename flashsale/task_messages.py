"""Celery task messages as SQS ``SendMessageBatch`` entries.

``task.apply_async`` sends one ``SendMessage`` per task (~135 msgs/s from one thread here), so
the intake and the outbox relay build the messages themselves and send ten per call. The
format is Celery's documented message protocol v2 inside kombu's SQS envelope (base64 JSON),
exactly what ``apply_async`` would have sent; a round-trip test decodes it with kombu.
"""

from __future__ import annotations

import base64
import json
import socket
import uuid
from collections.abc import Mapping
from typing import Any

_ORIGIN = f"flashsale@{socket.gethostname()}"


def _b64_json(value: object) -> str:
    return base64.b64encode(json.dumps(value, separators=(",", ":")).encode()).decode()


def task_message_body(
    task_name: str,
    kwargs: Mapping[str, Any],
    *,
    routing_key: str,
    task_id: str | None = None,
    group_id: str | None = None,
    dedup_id: str | None = None,
) -> str:
    """The SQS message body that makes a Celery worker run ``task_name(**kwargs)``."""
    task_id = task_id or str(uuid.uuid4())
    headers: dict[str, Any] = {
        "lang": "py",
        "task": task_name,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": "()",
        "kwargsrepr": "{...}",  # the payload can be large; logs need not repeat it
        "origin": _ORIGIN,
        "ignore_result": True,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    body = [[], dict(kwargs), {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    properties: dict[str, Any] = {
        "correlation_id": task_id,
        "reply_to": "",
        "delivery_mode": 2,
        "delivery_info": {"exchange": "", "routing_key": routing_key},
        "priority": 0,
        "body_encoding": "base64",
        "delivery_tag": str(uuid.uuid4()),
    }
    if group_id is not None:
        properties["MessageGroupId"] = group_id
    if dedup_id is not None:
        properties["MessageDeduplicationId"] = dedup_id
    envelope = {
        "body": _b64_json(body),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": properties,
    }
    return _b64_json(envelope)


def batch_entry(
    entry_id: str,
    task_name: str,
    kwargs: Mapping[str, Any],
    *,
    routing_key: str,
    group_id: str | None = None,
    dedup_id: str | None = None,
    task_id: str | None = None,
) -> dict[str, Any]:
    """One ``SendMessageBatch`` entry; FIFO fields are set when a group is given.

    ``task_id`` (default: a new uuid) lets a producer make the Celery task id its own event id.
    """
    entry: dict[str, Any] = {
        "Id": entry_id,
        "MessageBody": task_message_body(
            task_name,
            kwargs,
            routing_key=routing_key,
            task_id=task_id,
            group_id=group_id,
            dedup_id=dedup_id,
        ),
    }
    if group_id is not None:
        entry["MessageGroupId"] = group_id
        entry["MessageDeduplicationId"] = dedup_id or str(uuid.uuid4())
    return entry
