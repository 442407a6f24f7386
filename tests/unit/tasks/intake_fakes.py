"""Stand-ins for the intake's collaborators: an SQS client that records, a clock that waits."""

from __future__ import annotations

import base64
import copy
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# What a scripted call answers, given the entries it was sent: a SendMessageBatch response.
Answer = Callable[[list[dict[str, Any]]], dict[str, Any]]


def all_succeed(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"Successful": [{"Id": e["Id"], "MessageId": f"m-{e['Id']}"} for e in entries],
            "Failed": []}  # fmt: skip


def fail(*ids: str, sender_fault: bool = False) -> Answer:
    """An answer in which the entries with these ids failed and the others arrived."""

    def answer(entries: list[dict[str, Any]]) -> dict[str, Any]:
        failed = [
            {"Id": e["Id"], "SenderFault": sender_fault, "Code": "InternalError"}
            for e in entries if e["Id"] in ids
        ]  # fmt: skip
        ok = all_succeed([e for e in entries if e["Id"] not in ids])["Successful"]
        return {"Successful": ok, "Failed": failed}

    return answer


@dataclass
class Call:
    queue_url: str
    entries: list[dict[str, Any]]


@dataclass
class FakeSqs:
    """Records every ``send_message_batch``; answers from a script, then with success.

    A sender that keeps resending would hang the test, so more than ``max_calls`` calls fail it.
    """

    script: list[Answer] = field(default_factory=list)
    max_calls: int = 1000
    calls: list[Call] = field(default_factory=list)
    sent: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def send_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, Any]]) -> Any:
        with self._lock:
            if len(self.calls) >= self.max_calls:
                raise AssertionError(f"more than {self.max_calls} SendMessageBatch calls")
            if len(Entries) > 10:
                raise AssertionError(f"SendMessageBatch takes at most 10 entries: {len(Entries)}")
            self.calls.append(Call(QueueUrl, copy.deepcopy(Entries)))
            answer = self.script.pop(0) if self.script else all_succeed
        self.sent.set()
        return answer(Entries)

    @property
    def entries(self) -> list[dict[str, Any]]:
        return [e for call in self.calls for e in call.entries]


class FakeClock:
    """``time`` as the intake sees it: frozen until advanced, so lingering is under test control."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    def time_ns(self) -> int:
        return int(self.now * 1_000_000_000)

    def advance(self, seconds: float) -> None:
        self.now += seconds


def task_of(entry: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Celery headers and kwargs an entry's body carries (kombu's SQS envelope, base64)."""
    envelope = json.loads(base64.b64decode(entry["MessageBody"]))
    _args, kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
    return envelope["headers"], kwargs


def batch_of(entry: dict[str, Any]) -> dict[str, Any]:
    """The purchase batch (as JSON) an entry carries."""
    return task_of(entry)[1]["batch"]
