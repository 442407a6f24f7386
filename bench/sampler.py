"""What a benchmark run looks like from outside, about once a second: queue depths, and the CPU
time and memory of every process it started (and of the emulators).

A thread of the driver polls ``GetQueueAttributes`` (LocalStack, not the serialized DynamoDB
emulator: sampling must not slow the pipeline it samples) and psutil. CPU seconds are read over
a process's whole tree, so a Celery prefork worker counts with its pool children; memory is
the tree's resident set (RSS), summed, and its peak kept.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psutil

# Waiting, received but not deleted, and delayed (saga retries): all are work not done yet.
DEPTH_ATTRIBUTES = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]


@dataclass(frozen=True)
class TreeUsage:
    cpu_seconds: float
    rss_bytes: int
    processes: int


def tree_usage(pid: int) -> TreeUsage | None:
    """CPU seconds (user + system) and RSS of ``pid`` and its descendants; None if gone."""
    try:
        root = psutil.Process(pid)
        members = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    cpu, rss, alive = 0.0, 0, 0
    for member in members:
        try:
            with member.oneshot():
                times = member.cpu_times()
                rss += member.memory_info().rss
        except psutil.Error:
            continue  # exited between the listing and the read
        cpu += times.user + times.system
        alive += 1
    return TreeUsage(cpu, rss, alive)


@dataclass
class Sample:
    at: float  # epoch seconds
    depths: dict[str, int]  # queue name -> messages not done
    cpu: dict[str, float]  # process name -> CPU seconds of its tree so far
    rss: dict[str, int]  # process name -> RSS bytes of its tree


@dataclass
class Sampler:
    """Samples ``queues`` (name -> URL) and ``processes()`` (name -> pid) every ``interval``."""

    sqs: Any
    queues: Mapping[str, str]
    processes: Callable[[], Mapping[str, int]]
    interval: float = 1.0
    samples: list[Sample] = field(default_factory=list)
    peak_rss: dict[str, int] = field(default_factory=dict)
    peak_processes: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def usage(self) -> dict[str, TreeUsage]:
        """Every watched process's usage now (also folded into the peaks)."""
        found: dict[str, TreeUsage] = {}
        for name, pid in self.processes().items():
            usage = tree_usage(pid)
            if usage is None:
                continue
            found[name] = usage
            with self._lock:
                self.peak_rss[name] = max(self.peak_rss.get(name, 0), usage.rss_bytes)
                self.peak_processes[name] = max(self.peak_processes.get(name, 0), usage.processes)
        return found

    def depths(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for name, url in self.queues.items():
            attributes = self.sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=DEPTH_ATTRIBUTES
            )["Attributes"]
            found[name] = sum(int(attributes.get(a, 0)) for a in DEPTH_ATTRIBUTES)
        return found

    def sample(self) -> Sample:
        usage = self.usage()
        try:
            depths = self.depths()
        except Exception:  # a failed poll leaves a gap in the chart, not a failed run
            depths = {}
        sample = Sample(
            time.time(),
            depths,
            {n: u.cpu_seconds for n, u in usage.items()},
            {n: u.rss_bytes for n, u in usage.items()},
        )
        with self._lock:
            self.samples.append(sample)
        return sample

    def peak_depth(self, queue: str) -> int:
        with self._lock:
            return max((s.depths.get(queue, 0) for s in self.samples), default=0)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.sample()
            # A timer, not a wait for a condition: the next sample is due one interval later.
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))


def cpu_between(
    before: Mapping[str, TreeUsage], after: Mapping[str, TreeUsage]
) -> dict[str, float]:
    """CPU seconds each process used between two ``Sampler.usage()`` readings."""
    return {
        name: round(after[name].cpu_seconds - before[name].cpu_seconds, 3)
        for name in after
        if name in before
    }
