"""Exact AWS call counts, read from the local emulators' own request counters.

Counting at the server sees every process — intake, every worker and its pool children,
kombu's own pycurl client — which client-side hooks would not.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections import Counter
from dataclasses import dataclass

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

    def read(self) -> dict[str, int]:
        """Calls since the last reset, as ``service.Operation``: count."""
        calls: Counter[str] = Counter()
        for service, base in self.endpoints.items():
            for operation, n in self._fetch(base + STATS_PATH, "GET").items():
                calls[f"{service}.{operation}"] += n
        return dict(calls)
