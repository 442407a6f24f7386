"""The sweeper: resumes sagas stuck after a crash and undoes the ones that expired.

Every saga that is not final carries a deadline in the sparse ``active`` index. A command
lost with a crashed worker, a step that hangs, or a hold that expires all show up the same
way: the deadline passes. The sweeper queries each shard for ``deadline <= now`` (never a scan)
and lets the saga's orchestrator decide (retry, compensate or quarantine). Several sweepers
may run: the version check lets one of them move each saga. It also publishes the number of
quarantined sagas, the metric the stack's alarm watches.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from flashsale.names import METRICS_NAMESPACE, SAGAS_QUARANTINED_METRIC
from saga.orchestrator import Orchestrator
from saga.store import SagaStore

log = structlog.get_logger("saga.sweeper")


@dataclass
class SweepReport:
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def due(self) -> int:
        return sum(self.outcomes.values())


class Sweeper:
    def __init__(
        self,
        orchestrators: Mapping[str, Orchestrator],
        store: SagaStore,
        *,
        cloudwatch: Any | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.orchestrators = orchestrators
        self.store = store
        self.cloudwatch = cloudwatch
        self.clock = clock

    def sweep_once(self, limit_per_shard: int = 100) -> SweepReport:
        """One pass over every shard: each due saga gets its orchestrator's move."""
        report = SweepReport()
        now = self.clock()
        for shard in range(self.store.shards):
            for saga_id in self.store.due(shard, now, limit_per_shard):
                state = self.store.get(saga_id)
                if state is None:
                    continue  # deleted between the index read and now
                outcome = self.orchestrators[state.saga].on_deadline(saga_id)
                report.outcomes[outcome] += 1
                log.info("sweeper.moved", saga_id=saga_id, outcome=outcome)
        return report

    def quarantined(self) -> int:
        return sum(len(self.store.quarantined(shard)) for shard in range(self.store.shards))

    def publish(self) -> int:
        """Put the quarantined count as a CloudWatch metric (the alarm's input)."""
        count = self.quarantined()
        if self.cloudwatch is not None:
            self.cloudwatch.put_metric_data(
                Namespace=METRICS_NAMESPACE,
                MetricData=[{"MetricName": SAGAS_QUARANTINED_METRIC, "Value": count}],
            )
        return count

    def run(self, stop: threading.Event, *, interval: float, metrics_every: float = 60.0) -> None:
        """Sweep every ``interval`` seconds until ``stop`` is set (SIGTERM)."""
        published = float("-inf")
        while not stop.is_set():
            report = self.sweep_once()
            if report.due:
                log.info("sweeper.round", **dict(report.outcomes))
            if self.clock() - published >= metrics_every:
                quarantined = self.publish()
                published = self.clock()
                log.info("sweeper.quarantined", count=quarantined)
            stop.wait(interval)
