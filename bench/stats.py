"""Exact AWS call counts, read from the local emulators' own request counters.

Counting at the server sees every process — intake, every worker and its pool children,
kombu's own pycurl client — which client-side hooks would not.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATS_PATH = "/_flashsale/stats"

# The endpoints whose servers keep counters, by the AWS service they count.
_COUNTED = {"dynamodb": "AWS_ENDPOINT_URL_DYNAMODB", "sqs": "AWS_ENDPOINT_URL_SQS"}


@dataclass
class CallCounter:
    endpoints: dict[str, str]

    @classmethod
    def from_environment(cls) -> CallCounter:
        return cls({svc: os.environ[var] for svc, var in _COUNTED.items() if var in os.environ})

    def _fetch(self, url: str, method: str) -> dict[str, int]:
        request = urllib.request.Request(url, method=method)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return dict(json.load(response).get("calls", {}))
        except (OSError, ValueError):
            return {}  # this emulator keeps no counters: its calls are not counted

    def reset(self) -> None:
        for base in self.endpoints.values():
            self._fetch(base + STATS_PATH + "/reset", "POST")

    def others(self) -> dict[str, dict[str, int]]:
        """What the emulators count besides their own service's calls: LocalStack's other
        services (SES, SNS, CloudWatch) and its calls to itself (``internal``), and DynamoDB's
        writes by the tables they touch (``writes``)."""
        found: dict[str, dict[str, int]] = {}
        for service, base in self.endpoints.items():
            try:
                with urllib.request.urlopen(base + STATS_PATH, timeout=5) as response:
                    document = json.load(response)
            except (OSError, ValueError):
                continue
            for part in ("other", "internal", "streams", "writes"):
                if document.get(part):
                    found[f"{service}.{part}"] = dict(document[part])
        return found

    def read(self) -> dict[str, int]:
        """Calls since the last reset, as ``service.Operation``: count."""
        calls: Counter[str] = Counter()
        for service, base in self.endpoints.items():
            for operation, n in self._fetch(base + STATS_PATH, "GET").items():
                calls[f"{service}.{operation}"] += n
        return dict(calls)


def operation_name(target: str) -> str:
    """``AmazonSQS.SendMessageBatch`` / ``DynamoDB_20120810.Query`` / ``SendMessage`` (query
    protocol) as the emulators' counters name them: the bare operation."""
    return target.rsplit(".", 1)[-1]


class ClientCalls:
    """HTTP requests sent by this process's boto3 clients, per ``service.Operation``.

    The driver's own calls (sampling queue depths, reading the tables) are counted here and
    taken out of the emulators' totals, so they never inflate the figures of the pipeline.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: Counter[str] = Counter()

    def watch(self, client: Any, service: str) -> None:
        def count(event_name: str = "", **_: Any) -> None:
            name = event_name.rsplit(".", 1)[-1]  # before-send.<service>.<Operation>
            with self._lock:
                self._calls[f"{service}.{name}"] += 1

        # before-send fires once per HTTP attempt, retries included, as the server counts.
        client.meta.events.register("before-send", count)

    def reset(self) -> None:
        with self._lock:
            self._calls.clear()

    def read(self) -> dict[str, int]:
        with self._lock:
            return dict(self._calls)


class CountingProxy:
    """``python -m infra.local.faults`` with no rules, as a process of its own: a transparent
    proxy in front of one emulator that counts every request through it per operation.

    Processes pointed at it (``AWS_ENDPOINT_URL_SQS`` / ``_DYNAMODB``) have their calls counted
    apart from everyone else's: the purchase path's calls, exactly, while the sagas share the
    same emulators. Its own process keeps its CPU off the driver's and off theirs.
    """

    def __init__(self, service: str, target: str, log: Path) -> None:
        self.service = service
        self.target = target
        self.log = log
        self.url = ""
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    def start(self, timeout: float = 30.0) -> CountingProxy:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "infra.local.faults", "--target", self.target]
        with self.log.open("wb") as out:
            self._popen = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._popen.poll() is None:
            found = re.search(r"fault proxy (http://\S+) ->", self.log.read_text(errors="replace"))
            if found:
                self.url = found.group(1)
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the counting proxy for {self.target} did not start; see {self.log}")

    def _request(self, method: str) -> dict[str, Any]:
        request = urllib.request.Request(self.url + "/_faults/stats", method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return dict(json.loads(body)) if body else {}

    def reset(self) -> None:
        self._request("DELETE")

    def read(self) -> dict[str, int]:
        """Requests through the proxy since the last reset, as ``service.Operation``: count."""
        calls: Counter[str] = Counter()
        for target, n in self._request("GET").get("requests", {}).items():
            calls[f"{self.service}.{operation_name(target)}"] += int(n)
        return dict(calls)

    def stop(self) -> None:
        popen, self._popen = self._popen, None
        if popen is None or popen.poll() is not None:
            return
        popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(10)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()


def subtract(total: dict[str, int], *parts: dict[str, int]) -> dict[str, int]:
    """``total`` minus each of ``parts``, per operation (zeros dropped)."""
    rest: Counter[str] = Counter(total)
    for part in parts:
        rest.subtract(part)
    return {op: n for op, n in sorted(rest.items()) if n}


def per_unit(calls: dict[str, int], units: int, service: str | None = None) -> float:
    """Calls (of one service, or all) per unit of work, 4 decimals."""
    n = sum(v for op, v in calls.items() if service is None or op.startswith(service + "."))
    return round(n / max(units, 1), 4)
