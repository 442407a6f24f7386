"""Stand-ins for the HTTP intake's collaborators: a purchases queue, the inventory, a clock."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from intake.events import Inventory

T = TypeVar("T")


@dataclass
class FakeQueue:
    """The purchases queue as the intake's SQS client sees it.

    ``hold()`` makes sends block until ``release()`` (a slow queue); ``fail()`` makes them raise
    until ``heal()`` (a failing queue). ``depth`` is what GetQueueAttributes reports.
    """

    depth: int = 0
    calls: int = 0
    attribute_calls: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    _open: threading.Event = field(default_factory=threading.Event)
    _failing: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._open.set()

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def fail(self) -> None:
        self._failing = True

    def heal(self) -> None:
        self._failing = False

    def send_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, Any]]) -> Any:
        assert self._open.wait(30), "a held queue was never released"
        with self._lock:
            self.calls += 1
            if self._failing:
                raise ConnectionError("the queue is unreachable (fake)")
            assert len(Entries) <= 10, f"SendMessageBatch takes at most 10 entries: {len(Entries)}"
            self.bodies.extend(batch_of(e) for e in Entries)
        return {"Successful": [{"Id": e["Id"], "MessageId": f"m-{e['Id']}"} for e in Entries]}

    def get_queue_attributes(self, *, QueueUrl: str, AttributeNames: list[str]) -> Any:
        self.attribute_calls += 1
        return {"Attributes": {"ApproximateNumberOfMessages": str(self.depth)}}

    @property
    def order_ids(self) -> list[str]:
        """Every order id sent, in queue order (repeats included)."""
        with self._lock:
            return [r["order_id"] for body in self.bodies for r in body["requests"]]


def batch_of(entry: dict[str, Any]) -> dict[str, Any]:
    """The purchase batch a SendMessageBatch entry carries (kombu's SQS envelope, base64)."""
    envelope = json.loads(base64.b64decode(entry["MessageBody"]))
    _args, kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
    return dict(kwargs["batch"])


@dataclass
class FakeInventory:
    """Events on sale: ``{event_id: Inventory}``; counts reads, can be made to fail."""

    events: dict[str, Inventory] = field(default_factory=dict)
    reads: list[list[str]] = field(default_factory=list)
    failing: bool = False

    def read(self, event_ids: Sequence[str]) -> dict[str, Inventory]:
        self.reads.append(list(event_ids))
        if self.failing:
            raise ConnectionError("the inventory table is unreachable (fake)")
        return {e: self.events[e] for e in event_ids if e in self.events}


class FakeClock:
    """``time.monotonic`` under the test's control."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def eventually(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait for a condition that another thread makes true (never for a fixed time)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` without its side effect on the main thread: ``asyncio.run`` leaves "no
    current event loop" set, which breaks later tests that call ``get_event_loop()`` (Pulumi's
    mocks do)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()
