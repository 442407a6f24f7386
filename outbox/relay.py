"""The outbox relay: ``python -m outbox.relay``.

Each round: keep this relay's shard leases (``outbox.leases``), then for each owned shard read
the oldest pending records from the sparse index (one Query, never a scan), pick what may go
out without breaking per-aggregate order (``outbox.ordering``), send it as Celery task
messages (``outbox.sender``) and mark it dispatched behind the lease's fence
(``outbox.pending``). Delivery is at least once: a crash between send and mark sends again, and
consumers are idempotent on the event id (also the Celery task id).

SIGTERM or SIGINT: the current round finishes, leases are released, exit code 0.
Configuration: flags, else ``FLASHSALE_RELAY_*`` variables, else defaults; queue URLs, the
outbox table and the shard count come from ``flashsale.settings``.

Fault drill (off by default, never for production): ``--crash-at after_read|after_send|
before_mark`` with ``--crash-probability P`` (``FLASHSALE_RELAY_CRASH_AT``,
``FLASHSALE_RELAY_CRASH_PROBABILITY``) makes the relay SIGKILL itself at that point of a round
with probability P each time it gets there, so tests can prove recovery from a crash at each
point, not only somewhere.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from flashsale import aws
from flashsale.logs import configure_logging
from flashsale.names import (
    METRICS_NAMESPACE,
    OUTBOX_LAG_METRIC,
    OUTBOX_PARKED_METRIC,
    QueueRole,
)
from flashsale.settings import Settings, get_settings
from outbox.exceptions import LeaseLost, StoreError
from outbox.leases import Leases
from outbox.ordering import Key, Pending, batches, heads, predecessor, ready
from outbox.pending import MARKS_PER_TRANSACTION, PendingStore
from outbox.records import SQS_MESSAGE_LIMIT
from outbox.sender import Sender

log = structlog.get_logger("outbox.relay")

DONE_CACHE_SIZE = 100_000  # keys remembered as no longer pending (bounded memory)


def _default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class CrashPoint(StrEnum):
    """Where the fault drill kills the relay; each is a window a real crash can hit."""

    AFTER_READ = "after_read"  # records read and chosen to go, nothing sent
    AFTER_SEND = "after_send"  # a SendMessageBatch succeeded, its records not marked
    BEFORE_MARK = "before_mark"  # the shard's sends done, its mark transaction not begun


def _sigkill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class RelayConfig(BaseSettings):
    """The relay's own tunables (``FLASHSALE_RELAY_<NAME>``)."""

    model_config = SettingsConfigDict(env_prefix="FLASHSALE_RELAY_", extra="ignore", frozen=True)

    owner: str = Field(default_factory=_default_owner)
    page_size: int = Field(default=100, ge=1, le=1000)  # records read per shard per round
    poll_interval: float = Field(default=0.5, gt=0, le=60)  # idle wait between empty rounds
    lease_seconds: float = Field(default=10.0, ge=1, le=600)
    max_attempts: int = Field(default=5, ge=1, le=100)  # failed send rounds before parking
    retry_base_seconds: float = Field(default=1.0, ge=0, le=3600)
    retry_max_seconds: float = Field(default=300.0, ge=0, le=86400)
    send_attempts: int = Field(default=3, ge=1, le=10)  # tries within a round
    metrics_interval: float = Field(default=10.0, ge=1, le=3600)
    metrics: bool = True
    # The fault drill: off unless ``crash_at`` is set. Not 1.0 by default: a relay that always
    # dies after its first send would never mark anything.
    crash_at: CrashPoint | None = None
    crash_probability: float = Field(default=0.1, ge=0, le=1)


@dataclass
class Counters:
    """Since the process started; the lag is the latest round's."""

    rounds: int = 0
    dispatched: int = 0
    duplicates: int = 0
    send_failures: int = 0
    parked: int = 0
    lag_seconds: float = 0.0
    sqs_calls: int = 0


class Metrics:
    """Publishes lag (gauge) and counter deltas to CloudWatch every ``interval`` seconds."""

    def __init__(self, cloudwatch: Any, interval: float, clock: Callable[[], float]) -> None:
        self._cw = cloudwatch
        self._interval = interval
        self._clock = clock
        self._last = Counters()
        self._due = 0.0

    def publish(self, counters: Counters, *, force: bool = False) -> None:
        now = self._clock()
        if not force and now < self._due:
            return
        self._due = now + self._interval
        deltas = {
            "OutboxDispatched": counters.dispatched - self._last.dispatched,
            "OutboxDuplicates": counters.duplicates - self._last.duplicates,
            "OutboxSendFailures": counters.send_failures - self._last.send_failures,
            OUTBOX_PARKED_METRIC: counters.parked - self._last.parked,
        }
        data = [{"MetricName": n, "Value": float(v), "Unit": "Count"} for n, v in deltas.items()]
        data.append(
            {"MetricName": OUTBOX_LAG_METRIC, "Value": counters.lag_seconds, "Unit": "Seconds"}
        )
        try:
            self._cw.put_metric_data(Namespace=METRICS_NAMESPACE, MetricData=data)
        except (ClientError, BotoCoreError) as exc:
            log.warning("relay.metrics_failed", error=str(exc))
            return
        self._last = Counters(**asdict(counters))


class Relay:
    """Plain rounds over injected collaborators; ``run`` loops until told to stop."""

    def __init__(
        self,
        *,
        store: PendingStore,
        leases: Leases,
        sender: Sender,
        config: RelayConfig,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        kill: Callable[[], None] = _sigkill_self,
    ) -> None:
        self.store = store
        self.leases = leases
        self.sender = sender
        self.config = config
        self.metrics = metrics
        self.counters = Counters()
        self._clock = clock
        self._kill = kill
        self._drill_rng = random.Random()
        # Keys known not pending any more (marked or parked by this relay), oldest first.
        self._done: dict[Key, None] = {}

    def run(self, stop: threading.Event, *, max_rounds: int | None = None) -> None:
        """Rounds until ``stop`` is set (a round in progress finishes), then release leases."""
        try:
            while not stop.is_set():
                handled = self.run_round()
                if max_rounds is not None and self.counters.rounds >= max_rounds:
                    break
                if handled == 0:
                    stop.wait(self.config.poll_interval)
        finally:
            self.leases.release_all()
            if self.metrics is not None:
                self.metrics.publish(self.counters, force=True)
            log.info("relay.stopped", owner=self.leases.owner, **asdict(self.counters))

    def run_round(self) -> int:
        """One pass over the owned shards; returns how many records were sent or failed."""
        self.counters.rounds += 1
        handled = 0
        lag = 0.0
        try:
            owned = self.leases.maintain()
        except StoreError as exc:
            log.warning("relay.lease_error", error=str(exc))
            owned = [s for s in sorted(self.leases.held) if self.leases.valid(s)]
        for shard in owned:
            try:
                shard_handled, shard_lag = self.process_shard(shard)
            except LeaseLost:
                self.leases.lost(shard)
                continue
            except StoreError as exc:
                log.warning("relay.shard_error", shard=shard, error=str(exc))
                continue
            handled += shard_handled
            lag = max(lag, shard_lag)
        self.counters.lag_seconds = lag
        if self.metrics is not None:
            self.metrics.publish(self.counters)
        return handled

    def process_shard(self, shard: int) -> tuple[int, float]:
        """Send what may go out of ``shard`` now; returns (records handled, lag in seconds).

        Sent records are marked together, up to 99 per transaction behind one fence, once the
        shard's sends are done (or a transaction's worth has piled up): never before their send.
        """
        if not self.leases.valid(shard) and not self.leases.renew(shard):
            return 0, 0.0
        now = self._clock()
        pending = self.store.oldest(shard, self.config.page_size)
        if not pending:
            return 0, 0.0
        lag = max(0.0, now - min(p.record.created_at.timestamp() for p in pending))
        # A record this relay marked (or parked) is pending no more, for good: no need to read
        # it or, as a predecessor, to read it again (the pending index may still list it).
        candidates = [c for c in heads(pending, now) if c.key not in self._done]
        keys = [c.key for c in candidates]
        keys += [k for k in map(predecessor, keys) if k is not None and k not in self._done]
        state = self.store.states(keys) if keys else {}
        go = ready(candidates, state, now) if candidates else []
        if go:
            self._drill(CrashPoint.AFTER_READ, shard, go)
        handled = 0
        sent: list[Pending] = []
        try:
            for destination, batch in batches(go, byte_limit=SQS_MESSAGE_LIMIT):
                if not self.leases.valid(shard) and not self.leases.renew(shard):
                    break  # the lease is gone: what is left is the new owner's
                if len(sent) + len(batch) > MARKS_PER_TRANSACTION:
                    self._mark(shard, sent)
                    sent = []
                handled += self._send(shard, destination, batch, sent)
        except Exception:
            # On the way out of an error too, what was sent gets its (fenced) mark attempt.
            # Not on a BaseException: the unit tests' stand-in for SIGKILL must mark nothing.
            if sent:
                self._mark(shard, sent)
            raise
        if sent:
            self._mark(shard, sent)
        return handled, lag

    def _send(
        self, shard: int, destination: QueueRole, batch: list[Pending], sent: list[Pending]
    ) -> int:
        result = self.sender.send(destination, batch)
        self.counters.sqs_calls += result.calls
        sent.extend(result.sent)
        if result.sent:  # the drill names everything sent and not marked: the redeliveries
            self._drill(CrashPoint.AFTER_SEND, shard, sent)
        now = self._clock()
        for pending, error, transient in result.failed:
            self._failed(shard, pending, error, now, transient=transient)
        return len(batch)

    def _mark(self, shard: int, sent: list[Pending]) -> None:
        self._drill(CrashPoint.BEFORE_MARK, shard, sent)
        marks = self.store.mark_dispatched(self.leases.fence(shard), sent, self._clock())
        self.counters.dispatched += len(marks.marked)
        self.counters.duplicates += len(marks.duplicates)
        # A delayed record is read again while its message is invisible: it holds its
        # successor back until then (``ordering.ready``).
        self._remember(
            p.key for p in [*marks.marked, *marks.duplicates] if not p.record.delay_seconds
        )
        for destination in dict.fromkeys(p.record.destination for p in marks.marked):
            log.info(
                "relay.dispatched",
                shard=shard,
                destination=destination.value,
                count=sum(p.record.destination == destination for p in marks.marked),
                event_ids=[
                    p.record.event_id for p in marks.marked if p.record.destination == destination
                ],
            )
        if marks.duplicates:
            log.info(
                "relay.duplicates",
                shard=shard,
                event_ids=[p.record.event_id for p in marks.duplicates],
            )

    def _drill(self, point: CrashPoint, shard: int, records: list[Pending]) -> None:
        """The fault drill: maybe die right here, as ``kill -9`` would, with no cleanup."""
        if self.config.crash_at is not point:
            return
        if self._drill_rng.random() >= self.config.crash_probability:
            return
        log.warning(
            "relay.crash_drill",
            point=point.value,
            shard=shard,
            owner=self.leases.owner,
            event_ids=[p.record.event_id for p in records],
        )
        self._kill()

    def _remember(self, keys: Iterable[Key]) -> None:
        for key in keys:
            self._done[key] = None
        while len(self._done) > DONE_CACHE_SIZE:
            del self._done[next(iter(self._done))]

    def _failed(self, shard: int, pending: Any, error: str, now: float, *, transient: bool) -> None:
        """Back off from a failed send; park the record after ``max_attempts`` failures that
        were not transient. A transient one (throttling, 5xx, no connection: an SQS outage)
        is not counted, so an outage is waited out, never turned into parked records."""
        attempts = pending.attempts + (0 if transient else 1)
        park = not transient and attempts >= self.config.max_attempts
        delay = min(
            self.config.retry_base_seconds * 2 ** max(attempts - 1, 0),
            self.config.retry_max_seconds,
        )
        self.counters.send_failures += 1
        ids = {
            "event_id": pending.record.event_id,
            "aggregate_id": pending.record.aggregate_id,
            "sequence": pending.record.sequence,
            "attempts": attempts,
        }
        if not self.store.record_failure(
            self.leases.fence(shard),
            pending,
            error,
            retry_after=now + delay,
            park=park,
            counted=not transient,
        ):
            self._remember([pending.key])
            return  # no longer pending: another send got it out
        if park:
            # Not remembered as done: an operator may requeue it (``python -m outbox.parked``),
            # and until then the consistent state check keeps it from being sent.
            self.counters.parked += 1
            log.error("relay.parked", shard=shard, reason=error, **ids)
        else:
            log.warning("relay.send_failed", shard=shard, error=error, retry_in=delay, **ids)


def build_relay(settings: Settings, config: RelayConfig) -> Relay:
    """A relay over this process's boto3 clients (standard AWS SDK configuration)."""
    table = settings.outbox_table
    return Relay(
        store=PendingStore(aws.client("dynamodb"), table),
        leases=Leases(
            aws.client("dynamodb"),
            table,
            owner=config.owner,
            shards=settings.outbox_shards,
            duration=config.lease_seconds,
        ),
        sender=Sender(
            aws.client("sqs"),
            {role: settings.queue_url(role) for role in QueueRole},
            attempts=config.send_attempts,
        ),
        config=config,
        metrics=Metrics(aws.client("cloudwatch"), config.metrics_interval, time.time)
        if config.metrics
        else None,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m outbox.relay", description=__doc__ and __doc__.splitlines()[0]
    )
    parser.add_argument("--owner", help="this relay's name in leases (default host:pid:random)")
    parser.add_argument("--page-size", type=int, help="records read per shard per round")
    parser.add_argument("--poll-interval", type=float, help="seconds idle between empty rounds")
    parser.add_argument("--lease-seconds", type=float, help="lease duration")
    parser.add_argument("--max-attempts", type=int, help="failed send rounds before parking")
    parser.add_argument("--retry-base-seconds", type=float, help="first backoff after a failure")
    parser.add_argument("--metrics-interval", type=float, help="seconds between PutMetricData")
    parser.add_argument("--no-metrics", action="store_true", help="do not publish metrics")
    parser.add_argument(
        "--crash-at",
        choices=[p.value for p in CrashPoint],
        help="fault drill: SIGKILL this relay at this point of a round (off by default)",
    )
    parser.add_argument(
        "--crash-probability",
        type=float,
        help="fault drill: chance of the SIGKILL each time the point is reached (default 0.1)",
    )
    parser.add_argument("--rounds", type=int, help="stop after this many rounds")
    parser.add_argument("--log-level", default=os.environ.get("FLASHSALE_RELAY_LOG_LEVEL", "INFO"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level.upper())
    overrides: dict[str, Any] = {
        name: getattr(args, name)
        for name in (
            "owner",
            "page_size",
            "poll_interval",
            "lease_seconds",
            "max_attempts",
            "retry_base_seconds",
            "metrics_interval",
            "crash_at",
            "crash_probability",
        )
        if getattr(args, name) is not None
    }
    if args.no_metrics:
        overrides["metrics"] = False
    config = RelayConfig(**overrides)
    settings = get_settings()
    relay = build_relay(settings, config)
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("relay.stopping", signal=signal.Signals(signum).name, owner=config.owner)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    owned = relay.leases.maintain()
    log.info(
        "relay.ready",
        owner=config.owner,
        shards=settings.outbox_shards,
        owned=owned,
        table=settings.outbox_table,
    )
    if config.crash_at is not None:
        log.warning(
            "relay.crash_drill_armed",
            owner=config.owner,
            point=config.crash_at.value,
            probability=config.crash_probability,
        )
    relay.run(stop, max_rounds=args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
