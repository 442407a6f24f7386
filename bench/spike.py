"""A sale through the HTTP intake with the whole pipeline running: ``make bench`` and ``make demo``.

Processes (all real, as an operator runs them): the intake (``python -m intake``), purchase
workers, the saga's provider, saga and notification workers, relay and sweeper
(``bench.pipeline``), and the load (``python -m bench.http_load``, many concurrent clients on
loopback). The driver here starts them, fires the load, waits for every seat decision and then
for every saga, and counts — exactly:

- seat decisions, orders and sagas from DynamoDB; charges from the provider's ledger; e-mails
  and SMS from LocalStack's records; HTTP answers and their latency from the load's own file;
- AWS calls per role: the intake and the purchase workers reach the emulators through counting
  proxies (``bench.stats.CountingProxy``), the driver counts its own calls, and the sagas' side
  is the emulators' total minus both;
- CPU seconds and peak memory per process tree, and queue depths, sampled about once a second
  (``bench.sampler``).

Nothing is waited for by sleeping: every wait polls the condition it waits for, under a hard
time bound, and a bound that is reached is reported as such, never hidden.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench.http_load import LoadResult, Outcome
from bench.ledger import fcfs_inversions, percentile, read_ledger
from bench.pipeline import SAGA_QUEUES, PipelineSpec, saga_figures, saga_store, start_pipeline
from bench.poison import count_dead_letters, poison_bodies, send_poison
from bench.profiles import PROFILES, Profiles
from bench.sampler import Sampler, cpu_between
from bench.stats import CallCounter, ClientCalls, CountingProxy, per_unit, subtract
from flashsale import aws
from flashsale.messages import OrderStatus
from flashsale.names import QueueRole
from flashsale.settings import get_settings
from infra.local.fleet import Fleet
from infra.local.ports import free_port
from infra.local.stack import status as stack_status
from payments.control import ProviderControl
from saga import SagaState
from tasks.inventory import create_event, event_orders, get_inventory

SAMPLED_QUEUES = (
    QueueRole.PURCHASES,
    QueueRole.PAYMENTS,
    QueueRole.TICKETS,
    QueueRole.NOTIFICATIONS,
    QueueRole.NOTIFICATIONS_LOW,
)
DYNAMODB_WRITES = (
    "dynamodb.TransactWriteItems",
    "dynamodb.PutItem",
    "dynamodb.UpdateItem",
    "dynamodb.DeleteItem",
    "dynamodb.BatchWriteItem",
)
# A saga worker's console log line for a saga's move (structlog's console renderer).
_TRANSITION = re.compile(r"saga\.transition\s.*?saga_id=(\S+) status=(\S+)")
_FINAL = {"completed", "compensated", "quarantined"}


@dataclass(frozen=True)
class SpikeSpec:
    """One sale through the HTTP intake, and every bound on it."""

    requests: int = 50_000
    seats: int = 10_000
    duplicates: int = 2_500  # repeated request ids: double clicks, client retries
    malformed: int = 50
    connections: int = 128  # concurrent HTTP clients, one keep-alive connection each
    purchase_workers: int = 4
    intake_ack: str = "queued"  # or "buffered" (flashsale.settings)
    decline_rate: float = 0.0
    saga_concurrency: int = 4
    # Seat decisions first: the saga side shares the serialized DynamoDB emulator (and the
    # machine's CPU) with the purchase path, so it may run lean during the spike and get this
    # much more concurrency (a second saga worker) once every accepted request is decided.
    saga_scale_out: int = 0
    resale_waves: int = 0  # late buyers offered the seats that declined payments released
    seed: int = 7
    load_cap_s: float = 420.0  # the load process stops sending after this long
    decide_cap_s: float = 240.0  # after the load: every accepted request decided by then
    settle_cap_s: float = 900.0  # every saga final by then
    # Purchase messages waiting (visible + in flight) past which the intake answers 503 with
    # Retry-After: what keeps every accepted request's decision within reach (flashsale's
    # default, 2,000 messages, is about 64,000 buyers: more than this whole sale).
    backlog_limit: int = 100
    retries: int = 300  # per request, after a 503 with Retry-After (1 s): about 5 minutes
    # Saga settings for the run (None: the application's defaults). A burst of thousands of
    # sagas waits in the payments queue for minutes on the emulator, longer than the sweeper's
    # step timeout (120 s: it then resends every queued command, and the duplicates slow the
    # queue further) and than the hold (600 s: unpaid seats would be released).
    saga_step_timeout_s: float | None = None
    hold_s: int | None = None
    poison: int = 0  # broken messages put straight on the purchases queue: they must dead-letter
    profile_s: float = 0.0  # py-spy the emulators, intake and workers for the load's first s


@dataclass
class Phase:
    """Wall-clock instants of the run (epoch seconds) and whether a bound was reached."""

    load_started: float = 0.0
    load_ended: float = 0.0
    decided: float = 0.0
    settled: float = 0.0
    load_timed_out: bool = False
    decide_timed_out: bool = False
    settle_timed_out: bool = False


@dataclass
class SpikeRun:
    """Everything a sale through the intake measured; ``figures()`` is its JSON."""

    spec: SpikeSpec
    event_id: str
    loads: list[LoadResult]
    orders: list[dict[str, Any]]
    inventory: dict[str, Any]
    states: dict[str, SagaState]
    sagas: dict[str, Any]
    charges: list[dict[str, Any]]
    phase: Phase
    path_calls: dict[str, int]  # intake + purchase workers, until every seat was decided
    path_calls_total: dict[str, int]  # the same until the sagas settled (idle polling too)
    saga_calls: dict[str, int]  # everyone else but the driver, until the sagas settled
    driver_calls: dict[str, int]
    emulator_calls: dict[str, int]
    cpu_path: dict[str, float]
    cpu_settle: dict[str, float]
    peak_rss: dict[str, int]
    peak_processes: dict[str, int]
    samples: list[dict[str, Any]]
    intake_stats: dict[str, Any]
    dead_lettered: int
    profiles: dict[str, Any]
    emulator_others: dict[str, dict[str, int]]
    roles: dict[str, str]  # process name -> path | saga | emulator | load | proxy
    notes: list[str] = field(default_factory=list)
    outbox_table: str = ""  # to tell the relay's own writes apart (``outbox_only_writes``)

    # -- the requests -----------------------------------------------------------------------

    def outcomes(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for load in self.loads:
            total.update(load.outcomes())
        return total

    def accepted(self) -> dict[str, float]:
        """Accepted order ids, each with the first time a request for it was sent."""
        first: dict[str, float] = {}
        for load in self.loads:
            for order_id, sent in load.accepted_orders().items():
                first[order_id] = min(sent, first.get(order_id, sent))
        return first

    def repeated(self) -> int:
        """Requests answered with an order id an earlier answer already carried."""
        seen: set[str] = set()
        repeats = 0
        for load in self.loads:
            for outcome, order_id in zip(load.outcome, load.order_id, strict=True):
                if outcome in (Outcome.ACCEPTED, Outcome.SOLD_OUT) and order_id:
                    repeats += order_id in seen
                    seen.add(order_id)
        return repeats

    def edge_sold_out(self) -> list[dict[str, Any]]:
        """Requests answered ``sold_out`` by the intake, as the ledger's orders look, so the
        first-come-first-served check covers them too (their place: when they were answered)."""
        found: list[dict[str, Any]] = []
        for load in self.loads:
            for outcome, quantity, answered in zip(
                load.outcome, load.quantity, load.answered_at, strict=True
            ):
                if outcome == Outcome.SOLD_OUT:
                    ms = int(answered * 1000)
                    found.append(
                        {
                            "accepted_seq": int(answered * 1_000_000),
                            "status": OrderStatus.SOLD_OUT,
                            "quantity": quantity,
                            "decided_at_ms": ms,
                            "accepted_at_ms": ms,
                        }
                    )
        return found

    def decision_seconds(self) -> list[float]:
        """For every request that got a seat decision: seconds from its first send to the
        decision (the order's ``decided_at_ms``; for a sold-out answer at the edge, the
        answer). A repeat of an order decided before the repeat was sent counts 0."""
        decided = {o["order_id"]: int(o["decided_at_ms"]) / 1000 for o in self.orders}
        seconds: list[float] = []
        for load in self.loads:
            for outcome, order_id, sent, answered in zip(
                load.outcome, load.order_id, load.first_sent_at, load.answered_at, strict=True
            ):
                if outcome == Outcome.SOLD_OUT:
                    seconds.append(answered - sent)
                elif outcome == Outcome.ACCEPTED and order_id in decided:
                    seconds.append(max(0.0, decided[order_id] - sent))
        return seconds

    # -- the figures ------------------------------------------------------------------------

    def figures(self) -> dict[str, Any]:
        spec, phase = self.spec, self.phase
        outcomes = self.outcomes()
        accepted = self.accepted()
        ledger = read_ledger(self.inventory, self.orders)
        decided_ids = {o["order_id"] for o in self.orders}
        lost = sum(1 for order_id in accepted if order_id not in decided_ids)
        inversions = fcfs_inversions([*self.orders, *self.edge_sold_out()])
        to_decision = self.decision_seconds()
        spike = self.loads[0]
        latency = spike.latency_percentiles()
        first_sent = min((t for t in spike.first_sent_at if t), default=phase.load_started)
        last_decision = max(
            [ledger.last_decided_ms / 1000, *(t for t in spike.answered_at if t)],
            default=first_sent,
        )
        decisions = ledger.decided + outcomes[Outcome.SOLD_OUT]
        window = max(last_decision - first_sent, 1e-3)
        requests_answered = sum(
            outcomes[o] for o in (Outcome.ACCEPTED, Outcome.SOLD_OUT, Outcome.INVALID)
        )
        confirmed = ledger.confirmed
        path_cpu = sum(v for n, v in self.cpu_path.items() if self.roles.get(n) == "path")
        saga_cpu = sum(v for n, v in self.cpu_settle.items() if self.roles.get(n) == "saga")
        duplicate_charges = self._duplicate_charges()
        completion = self._completion()
        sqs_messages = int(self.intake_stats.get("messages_sent", 0))
        sent_requests = int(self.intake_stats.get("requests_sent", 0))
        return {
            "requests": sum(len(load.outcome) for load in self.loads),
            "outcomes": dict(outcomes),
            "accepted": len(accepted),
            "repeated_request_ids": self.repeated(),
            "invalid": outcomes[Outcome.INVALID],
            "sold_out_at_intake": outcomes[Outcome.SOLD_OUT],
            "rejected_by_backpressure": outcomes[Outcome.REJECTED],
            "http_503_answers": sum(load.refusals().total() for load in self.loads),
            "http_503_by_reason": dict(sum((ld.refusals() for ld in self.loads), Counter())),
            "retries_after_503": sum(load.retried() for load in self.loads),
            "no_answer": outcomes[Outcome.ERROR] + outcomes[Outcome.CUT_OFF],
            "seats": spec.seats,
            "sold": ledger.sold_counter,
            "confirmed": confirmed,
            "sold_out": ledger.sold_out,
            "rejected": ledger.rejected,
            "dead_lettered": self.dead_lettered,
            "poison": spec.poison,
            "lost": lost,
            "oversold": ledger.oversold,
            "fcfs_inversions": inversions,
            "duplicate_charges": duplicate_charges,
            "decisions": decisions,
            "spike_seconds": round(window, 3),
            "decisions_per_s": round(decisions / window, 1),
            "throughput_rps": round(decisions / window, 1),
            "decided_within_s": {
                "p50": round(percentile(to_decision, 50), 2),
                "p99": round(percentile(to_decision, 99), 2),
                "max": round(max(to_decision, default=0.0), 2),
                "all_within_90s": bool(to_decision)
                and max(to_decision) <= 90
                and lost == 0
                and outcomes[Outcome.REJECTED] + outcomes[Outcome.ERROR] == 0
                and outcomes[Outcome.CUT_OFF] == 0,
                "first_request_to_last_decision_s": round(window, 2),
            },
            "intake_latency_ms": latency,
            "intake_latency_ms_by_status": {
                "202": spike.latency_percentiles(statuses=[202]),
                "200": spike.latency_percentiles(statuses=[200]),
                "503": spike.latency_percentiles(statuses=[503]),
            },
            "intake_answers_per_s": round(
                latency["answers"] / max(spike.ended_at - spike.started_at, 1e-3), 1
            ),
            "load_seconds": round(spike.ended_at - spike.started_at, 2),
            "queue_wait_p50_p99_ms": [ledger.p50_latency_ms, ledger.p99_latency_ms],
            "sqs_messages": sqs_messages,
            "buyers_per_message": round(sent_requests / max(sqs_messages, 1), 1),
            "peak_queue_depth": self._peak_depths(),
            "aws_calls_path": self.path_calls,
            "sqs_calls_per_request": per_unit(self.path_calls, len(accepted), "sqs"),
            "dynamodb_calls_per_request": per_unit(self.path_calls, len(accepted), "dynamodb"),
            "aws_calls_per_request": per_unit(self.path_calls, len(accepted)),
            "calls_per_request_note": "purchase path (intake + purchase workers) until every "
            "seat was decided, per accepted request; per answered request (sold-out answers "
            "at the intake cost nothing): "
            f"{per_unit(self.path_calls, requests_answered)}",
            "cpu_seconds_path": round(path_cpu, 2),
            "cpu_ms_per_request": round(1000 * path_cpu / max(requests_answered, 1), 3),
            "cpu_seconds_by_process": {
                "until_decided": self.cpu_path,
                "until_settled": self.cpu_settle,
            },
            "peak_rss_mib": {n: round(v / 2**20, 1) for n, v in sorted(self.peak_rss.items())},
            "peak_processes": self.peak_processes,
            "saga": {
                **self.sagas,
                **completion,
                "aws_calls": self.saga_calls,
                "dynamodb_writes_per_order": round(
                    sum(self.saga_calls.get(op, 0) for op in DYNAMODB_WRITES) / max(confirmed, 1), 3
                ),
                "dynamodb_writes_outbox_only_per_order": round(
                    outbox_only_writes(
                        self.emulator_others.get("dynamodb.writes", {}), self.outbox_table
                    )
                    / max(confirmed, 1),
                    3,
                ),
                "dynamodb_calls_per_order": per_unit(self.saga_calls, confirmed, "dynamodb"),
                "sqs_calls_per_order": per_unit(self.saga_calls, confirmed, "sqs"),
                "cpu_seconds": round(saga_cpu, 2),
                "cpu_ms_per_order": round(1000 * saga_cpu / max(confirmed, 1), 2),
            },
            "driver_calls": self.driver_calls,
            "emulator_calls": self.emulator_calls,
            "emulator_other_calls": self.emulator_others,
            "intake_stats": self.intake_stats,
            "bounds_reached": {
                "load": phase.load_timed_out,
                "decisions": phase.decide_timed_out,
                "sagas": phase.settle_timed_out,
            },
            "notes": self.notes,
        } | ({"profiles": self.profiles} if self.profiles else {})

    def _duplicate_charges(self) -> int:
        """Succeeded charges beyond one per confirmed order of this sale (the provider keys a
        charge by order id; a charge for an order that is not ours counts too)."""
        confirmed = {o["order_id"] for o in self.orders if o["status"] == OrderStatus.CONFIRMED}
        succeeded = [c for c in self.charges if c.get("status") == "succeeded"]
        keys = Counter(str(c.get("key")) for c in succeeded)
        return sum(n - 1 for n in keys.values()) + sum(1 for k in keys if k not in confirmed)

    def completion_times(self) -> list[float]:
        """When each saga of this sale reached its final state (epoch seconds)."""
        return sorted(
            datetime.fromisoformat(s.history[-1].at).timestamp()
            for s in self.states.values()
            if s.status.final and s.history
        )

    def _completion(self) -> dict[str, Any]:
        """Sagas final per second, from the first seat held to the last saga settled."""
        times = self.completion_times()
        held = [int(o["decided_at_ms"]) / 1000 for o in self.orders if o["status"] == "confirmed"]
        if not times or not held:
            return {"orders_per_s": 0.0, "saga_seconds": 0.0}
        seconds = max(times[-1] - min(held), 1e-3)
        after_spike = [t for t in times if t > self.phase.decided]
        tail = max(times[-1] - self.phase.decided, 1e-3)
        return {
            "orders_per_s": round(len(times) / seconds, 1),
            "saga_seconds": round(seconds, 1),
            "orders_per_s_after_decisions": round(len(after_spike) / tail, 1)
            if after_spike
            else 0.0,
        }

    def _peak_depths(self) -> dict[str, int]:
        peaks: dict[str, int] = {}
        for sample in self.samples:
            for queue, depth in sample["depths"].items():
                peaks[queue] = max(peaks.get(queue, 0), depth)
        backlog = self.intake_stats.get("peak_backlog")
        if backlog is not None:
            peaks["purchases (intake's poll)"] = int(backlog)
        return peaks


class LogTail:
    """New lines of some log files, read incrementally: how the driver follows the sagas
    without adding a single call to the serialized DynamoDB emulator."""

    def __init__(self, paths: Iterable[Path]) -> None:
        self._offsets = {path: 0 for path in paths}
        self.final: dict[str, str] = {}  # saga id -> final status

    def add(self, path: Path) -> None:
        self._offsets.setdefault(path, 0)

    def poll(self) -> int:
        for path, offset in self._offsets.items():
            try:
                with path.open("rb") as handle:
                    handle.seek(offset)
                    chunk = handle.read()
            except OSError:
                continue
            complete = chunk.rfind(b"\n") + 1  # a half-written line waits for the next poll
            self._offsets[path] = offset + complete
            for match in _TRANSITION.finditer(chunk[:complete].decode(errors="replace")):
                saga_id, status = match.groups()
                if status in _FINAL:
                    self.final[saga_id] = status
        return len(self.final)


def _columns() -> tuple[Any, ...]:
    return (
        TextColumn("{task.description:<26}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )


def _intake_stats(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url + "/stats", timeout=5) as response:
            return dict(json.load(response))
    except (OSError, ValueError):
        return {}


def _answered(stats: Mapping[str, Any]) -> int:
    overloaded = stats.get("overloaded") or {}
    return int(
        sum(int(stats.get(k, 0)) for k in ("accepted", "sold_out_at_edge", "invalid"))
        + int(stats.get("unknown_event", 0))
        + sum(int(v) for v in overloaded.values())
    )


def outbox_only_writes(writes: dict[str, int], outbox_table: str) -> int:
    """Writes (``"Operation table+table"``: count, the emulator's) that touched the outbox table
    alone: the relay's and the sweeper's leases and heartbeats, and the relay's marks of what
    it delivered. Not a purchase's or a saga step's writes: they grow with time and batches."""
    return sum(n for key, n in writes.items() if key.partition(" ")[2] == outbox_table)


class SpikeDriver:
    """Starts the processes of one sale, fires its load, follows it and counts it."""

    def __init__(self, spec: SpikeSpec, fleet: Fleet, console: Console, driver: ClientCalls):
        self.spec = spec
        self.fleet = fleet
        self.console = console
        self.driver = driver
        self.settings = get_settings()
        self.ddb = aws.client("dynamodb")
        self.sqs = aws.client("sqs")
        driver.watch(self.ddb, "dynamodb")
        driver.watch(self.sqs, "sqs")
        self.run_id = uuid.uuid4().hex[:10]
        self.event_id = f"spike-{self.run_id}"
        self.proxies: list[CountingProxy] = []
        self.roles: dict[str, str] = {}
        self.extra_pids: dict[str, int] = {}
        self.intake_url = ""
        self.notes: list[str] = []
        self.load_cpu_s = 0.0
        self.profiles: dict[str, Any] = {}
        self.emulator_others: dict[str, dict[str, int]] = {}

    # -- processes --------------------------------------------------------------------------

    def start(self) -> ProviderControl:
        """Counting proxies, the saga side, the purchase workers and the intake."""
        path_env: dict[str, str] = {}
        for service, variable in (
            ("sqs", "AWS_ENDPOINT_URL_SQS"),
            ("dynamodb", "AWS_ENDPOINT_URL_DYNAMODB"),
        ):
            proxy = CountingProxy(
                service,
                os.environ[variable],
                self.fleet.log_dir / f"proxy-{service}-{self.run_id}.log",
            ).start()
            self.proxies.append(proxy)
            path_env[variable] = proxy.url
            self.extra_pids[f"proxy-{service}"] = proxy.pid or 0
            self.roles[f"proxy-{service}"] = "proxy"
        if self.spec.saga_step_timeout_s is not None:
            timeout = str(self.spec.saga_step_timeout_s)
            self.fleet.environment["FLASHSALE_SAGA_STEP_TIMEOUT_SECONDS"] = timeout
        if self.spec.hold_s is not None:
            self.fleet.environment["FLASHSALE_HOLD_SECONDS"] = str(self.spec.hold_s)
        pipeline = PipelineSpec(
            decline_rate=self.spec.decline_rate,
            saga_concurrency=self.spec.saga_concurrency,
            resale_waves=self.spec.resale_waves,
        )
        with self.console.status("starting the provider, saga workers, relay and sweeper"):
            provider = start_pipeline(self.fleet, pipeline, self.run_id)
        for name in self.fleet.processes:
            self.roles[name] = "saga"
        with self.console.status("starting the purchase workers and the intake"):
            for n in range(self.spec.purchase_workers):
                name = f"purchase-{self.run_id}-{n}"
                self.fleet.start_worker(
                    name, [QueueRole.PURCHASES.celery_queue], concurrency=1, extra_env=path_env
                )
                self.roles[name] = "path"
            port = free_port()
            name = f"intake-{self.run_id}"
            self.fleet.start_intake(
                name,
                port=port,
                extra_env=path_env
                | {
                    "FLASHSALE_INTAKE_ACK": self.spec.intake_ack,
                    "FLASHSALE_INTAKE_BACKLOG_LIMIT": str(self.spec.backlog_limit),
                },
            )
            self.roles[name] = "path"
            self.intake_url = f"http://127.0.0.1:{port}"
        for row in stack_status(self.fleet.log_dir.parent):
            if row.pid is not None:
                self.extra_pids[row.name] = row.pid
                self.roles[row.name] = "emulator"
        return provider

    def stop(self) -> None:
        for proxy in self.proxies:
            proxy.stop()

    def processes(self) -> dict[str, int]:
        alive = {n: p.pid for n, p in self.fleet.processes.items() if p.alive()}
        return alive | self.extra_pids

    # -- the sale ---------------------------------------------------------------------------

    def run(self) -> SpikeRun:
        spec, settings = self.spec, self.settings
        provider = self.start()
        create_event(self.ddb, settings.inventory_table, self.event_id, spec.seats)
        sampler = Sampler(
            self.sqs,
            {role.value: settings.queue_url(role) for role in SAMPLED_QUEUES},
            self.processes,
        )
        emulators = CallCounter.from_environment()
        emulators.reset()
        for proxy in self.proxies:
            proxy.reset()
        self.driver.reset()
        before = sampler.usage()
        sampler.start()
        phase = Phase()
        loads: list[LoadResult] = []
        tail = LogTail(
            p.log for n, p in self.fleet.processes.items() if n.startswith(("saga-", "notify-"))
        )
        try:
            with Progress(*_columns(), console=self.console) as progress:
                load = self.fire(
                    progress,
                    spec.requests,
                    duplicates=spec.duplicates,
                    malformed=spec.malformed,
                    first=0,
                    phase=phase,
                )
                loads.append(load)
                if spec.poison:
                    queue = QueueRole.PURCHASES.celery_queue
                    bodies = poison_bodies(self.run_id, spec.poison, queue)
                    send_poison(self.sqs, settings.purchases_queue_url, bodies, fifo=True)
                orders = self.wait_for_decisions(progress, loads, phase)
                path_calls = self._path_calls()
                decided_usage = sampler.usage()
                self.settle(progress, loads, orders, phase, tail)
            settled_usage = sampler.usage()
            total = emulators.read()
            self.emulator_others = emulators.others()
            path_total = self._path_calls()
            driver_calls = self.driver.read()
        finally:
            sampler.stop()
        saga_calls = subtract(total, path_total, driver_calls)
        dead_lettered = self.wait_for_dead_letters()
        intake_stats = _intake_stats(self.intake_url)
        # Read again: the sagas moved the orders on (ticketed, released) since the decisions.
        orders = event_orders(self.ddb, settings.orders_table, self.event_id)
        inventory = get_inventory(self.ddb, settings.inventory_table, self.event_id) or {}
        confirmed = [o["order_id"] for o in orders if o["status"] == OrderStatus.CONFIRMED]
        states = saga_store().get_many(confirmed)
        sagas = saga_figures(self.event_id, orders, states, provider)
        return SpikeRun(
            spec=spec,
            event_id=self.event_id,
            loads=loads,
            orders=orders,
            inventory=inventory,
            states=states,
            sagas=sagas,
            charges=provider.charges(),
            phase=phase,
            path_calls=path_calls,
            path_calls_total=path_total,
            saga_calls=saga_calls,
            driver_calls=driver_calls,
            emulator_calls=total,
            cpu_path=cpu_between(before, decided_usage) | {"load": round(self.load_cpu_s, 2)},
            cpu_settle=cpu_between(before, settled_usage),
            peak_rss=dict(sampler.peak_rss),
            peak_processes=dict(sampler.peak_processes),
            samples=[asdict(s) for s in sampler.samples],
            intake_stats=intake_stats,
            dead_lettered=dead_lettered,
            profiles=self.profiles,
            emulator_others=self.emulator_others,
            outbox_table=self.settings.outbox_table,
            roles=dict(self.roles),
            notes=self.notes,
        )

    def fire(
        self,
        progress: Progress,
        requests: int,
        *,
        duplicates: int,
        malformed: int,
        first: int,
        phase: Phase,
    ) -> LoadResult:
        """Run ``python -m bench.http_load`` against the intake until it exits (or its bound)."""
        spec = self.spec
        out = self.fleet.log_dir / f"load-{self.run_id}-{first}.json"
        command = [
            sys.executable,
            "-m",
            "bench.http_load",
            "--url",
            self.intake_url,
            "--event",
            self.event_id,
            "--requests",
            str(requests),
            "--duplicates",
            str(duplicates),
            "--malformed",
            str(malformed),
            "--seed",
            str(spec.seed + first),
            "--first",
            str(first),
            "--connections",
            str(spec.connections),
            "--max-seconds",
            str(spec.load_cap_s),
            "--retries",
            str(spec.retries),
            "--out",
            str(out),
        ]
        log = self.fleet.log_dir / f"load-{self.run_id}-{first}.log"
        task = progress.add_task("buyers answered (HTTP)", total=requests)
        baseline = _answered(_intake_stats(self.intake_url))
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with log.open("wb") as handle:
            popen = subprocess.Popen(
                command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.extra_pids["load"] = popen.pid
        self.roles["load"] = "load"
        profiles = None
        if spec.profile_s and first == 0:
            targets = {
                name: pid
                for name, pid in self.processes().items()
                if name in ("dynamodb", "localstack", "load")
                or name.startswith(("intake-", "saga-", "relay-"))
                or name == f"purchase-{self.run_id}-0"
            }
            profiles = Profiles.start(targets, spec.profile_s, PROFILES)
        started = time.time()
        phase.load_started = phase.load_started or started
        deadline = time.monotonic() + spec.load_cap_s + 60  # its own bound, plus writing out
        try:
            while True:
                try:
                    popen.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    answered = _answered(_intake_stats(self.intake_url)) - baseline
                    progress.update(task, completed=min(answered, requests))
                if time.monotonic() > deadline:
                    popen.kill()
                    popen.wait()
                    phase.load_timed_out = True
                    raise RuntimeError(f"the load process overran its bound; see {log}")
        finally:
            self.extra_pids.pop("load", None)
        if popen.returncode != 0:
            raise RuntimeError(f"the load process failed ({popen.returncode}); see {log}")
        children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the load, now reaped
        self.load_cpu_s += (children.ru_utime + children.ru_stime) - (
            children_before.ru_utime + children_before.ru_stime
        )
        if profiles is not None:
            profiles.wait(spec.profile_s + 30)
            self.profiles = profiles.summaries()
        result = LoadResult.load(out)
        phase.load_ended = time.time()
        phase.load_timed_out = phase.load_timed_out or result.timed_out
        progress.update(task, completed=requests)
        return result

    def wait_for_decisions(
        self, progress: Progress, loads: list[LoadResult], phase: Phase
    ) -> list[dict[str, Any]]:
        """Until every accepted order is decided (the orders table, read once the purchases
        queue is empty: the serialized emulator is not polled while it is busy)."""
        accepted: set[str] = set()
        for load in loads:
            accepted.update(load.accepted_orders())
        task = progress.add_task("seats decided", total=len(accepted))
        deadline = time.monotonic() + self.spec.decide_cap_s
        url = self.settings.purchases_queue_url
        orders: list[dict[str, Any]] = []
        while True:
            attributes = self.sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )["Attributes"]
            waiting = sum(int(v) for v in attributes.values())
            stats = _intake_stats(self.intake_url)
            per_message = int(stats.get("requests_sent", 0)) / max(
                int(stats.get("messages_sent", 0)), 1
            )
            estimate = int(stats.get("requests_sent", 0)) - waiting * per_message
            progress.update(task, completed=max(0, min(int(estimate), len(accepted))))
            if waiting == 0:
                orders = event_orders(self.ddb, self.settings.orders_table, self.event_id)
                decided = sum(1 for o in orders if o["order_id"] in accepted)
                progress.update(task, completed=decided)
                if decided >= len(accepted):
                    break
            if time.monotonic() > deadline:
                phase.decide_timed_out = True
                orders = event_orders(self.ddb, self.settings.orders_table, self.event_id)
                self.notes.append(f"decisions: bound of {self.spec.decide_cap_s:g} s reached")
                break
            time.sleep(0.5)  # the next poll of the queue's depth (cheap: LocalStack)
        phase.decided = max((int(o["decided_at_ms"]) / 1000 for o in orders), default=time.time())
        return orders

    def settle(
        self,
        progress: Progress,
        loads: list[LoadResult],
        orders: list[dict[str, Any]],
        phase: Phase,
        tail: LogTail,
    ) -> list[dict[str, Any]]:
        """Until every held seat's saga is final; with resale waves, offer the seats that
        compensated sagas released to late buyers, wave after wave."""
        deadline = time.monotonic() + self.spec.settle_cap_s
        if self.spec.saga_scale_out:
            name = f"saga-more-{self.run_id}"
            self.fleet.start_worker(name, SAGA_QUEUES, concurrency=self.spec.saga_scale_out)
            self.roles[name] = "saga"
            tail.add(self.fleet.processes[name].log)
        task = progress.add_task("purchases settled (sagas)", total=0)
        wave = 0
        while True:
            confirmed = [o["order_id"] for o in orders if o["status"] == OrderStatus.CONFIRMED]
            progress.update(task, total=len(confirmed))
            if not self._wait_final(progress, task, confirmed, tail, deadline):
                phase.settle_timed_out = True
                self.notes.append(f"sagas: bound of {self.spec.settle_cap_s:g} s reached")
                break
            inventory = get_inventory(self.ddb, self.settings.inventory_table, self.event_id)
            free = int((inventory or {})["capacity"]) - int((inventory or {})["sold"])
            if free <= 0 or wave >= self.spec.resale_waves:
                break
            wave += 1
            first = sum(len(load.outcome) for load in loads) + wave * 1_000_000
            loads.append(
                self.fire(progress, free * 3, duplicates=0, malformed=0, first=first, phase=phase)
            )
            orders = self.wait_for_decisions(progress, loads, phase)
        phase.settled = time.time()
        return orders

    def _wait_final(
        self,
        progress: Progress,
        task: Any,
        saga_ids: list[str],
        tail: LogTail,
        deadline: float,
    ) -> bool:
        """Follow the saga workers' logs until every one of ``saga_ids`` is final there, then
        confirm from DynamoDB (only the ones the logs call final; a few reads)."""
        wanted = set(saga_ids)
        store = saga_store()
        while time.monotonic() < deadline:
            tail.poll()
            done = wanted & tail.final.keys()
            progress.update(task, completed=len(done))
            if len(done) == len(wanted):
                states = store.get_many(wanted)
                if all(s.status.final for s in states.values()) and len(states) == len(wanted):
                    return True
                # the logs ran ahead of a commit that failed: believe DynamoDB, keep waiting
                for saga_id, state in states.items():
                    if not state.status.final:
                        tail.final.pop(saga_id, None)
            time.sleep(0.5)  # the next read of the logs (no AWS call)
        return False

    def wait_for_dead_letters(self, timeout: float = 120.0) -> int:
        """This run's poison messages on the purchases DLQ, counted exactly once all arrive
        (each is received three times, with backoff, before SQS moves it)."""
        if not self.spec.poison:
            return 0
        dlq = self.settings.purchases_dlq_url
        deadline = time.monotonic() + timeout
        dead = count_dead_letters(self.sqs, dlq, self.run_id)
        while dead < self.spec.poison and time.monotonic() < deadline:
            time.sleep(1)  # the next look at the DLQ
            dead = count_dead_letters(self.sqs, dlq, self.run_id)
        return dead

    def _path_calls(self) -> dict[str, int]:
        calls: dict[str, int] = {}
        for proxy in self.proxies:
            calls.update(proxy.read())
        return calls


def run_spike(spec: SpikeSpec, fleet: Fleet, console: Console, driver: ClientCalls) -> SpikeRun:
    """Run one sale through the intake; stops every process it started."""
    spike = SpikeDriver(spec, fleet, console, driver)
    try:
        return spike.run()
    finally:
        fleet.stop_all()
        spike.stop()


def sale_rows(figures: Mapping[str, Any]) -> dict[str, Any]:
    """The figures the demo's sale table shows, under the keys ``bench.report`` reads."""
    return {
        "requests": figures["requests"],
        "accepted": figures["accepted"],
        "duplicates": figures["repeated_request_ids"],
        "invalid": figures["invalid"],
        "confirmed": figures["confirmed"],
        "sold_out": figures["sold_out"],
        "sold_out_at_intake": figures["sold_out_at_intake"],
        "rejected": figures["rejected"],
        "rejected_by_backpressure": figures["rejected_by_backpressure"],
        "dead_lettered": figures["dead_lettered"],
        "lost": figures["lost"],
        "sold": figures["sold"],
        "seats": figures["seats"],
        "oversold": figures["oversold"],
        "fcfs_inversions": figures["fcfs_inversions"],
        "duration_s": figures["spike_seconds"],
        "throughput_rps": figures["decisions_per_s"],
        "p50_latency_ms": figures["intake_latency_ms"]["p50_ms"],
        "p99_latency_ms": figures["intake_latency_ms"]["p99_ms"],
        "aws_calls_per_request": figures["aws_calls_per_request"],
    }


def run_timeline(run: SpikeRun) -> dict[str, Any]:
    """The chart's series for ``run`` (``bench.chart.timeline``)."""
    from bench.chart import timeline

    sent = [t for load in run.loads for t in load.attempt_sent_at]
    latency = [ms for load in run.loads for ms in load.attempt_latency_ms]
    statuses = [s for load in run.loads for s in load.attempt_status]
    answered = [t + ms / 1000 for t, ms, s in zip(sent, latency, statuses, strict=True) if s]
    decisions = [int(o["decided_at_ms"]) / 1000 for o in run.orders]
    decisions += [o["decided_at_ms"] / 1000 for o in run.edge_sold_out()]
    start = min(sent, default=run.phase.load_started)
    completions = run.completion_times()
    end = max([run.phase.settled, *completions, *decisions], default=start + 1)
    answered_ok = [(t, ms) for t, ms, s in zip(sent, latency, statuses, strict=True) if s]
    return timeline(
        start=start,
        end=end,
        decisions=decisions,
        answers=answered,
        completions=completions,
        attempt_sent_at=[t for t, _ in answered_ok],
        attempt_latency_ms=[ms for _, ms in answered_ok],
        samples=run.samples,
    )


def stack_backlog() -> dict[str, int]:
    """What the stack still had to do before a run: messages on every queue, outbox records
    pending. Anything here would be worked on during the run and counted with it."""
    from flashsale.names import OUTBOX_PENDING_INDEX, OUTBOX_PENDING_SHARD

    settings, sqs, ddb = get_settings(), aws.client("sqs"), aws.client("dynamodb")
    found: dict[str, int] = {}
    for role in SAMPLED_QUEUES:
        attributes = sqs.get_queue_attributes(
            QueueUrl=settings.queue_url(role),
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        found[role.value] = sum(int(v) for v in attributes.values())
    pending = 0
    for shard in range(settings.outbox_shards):
        pending += int(
            ddb.query(
                TableName=settings.outbox_table,
                IndexName=OUTBOX_PENDING_INDEX,
                KeyConditionExpression="#s = :s",
                ExpressionAttributeNames={"#s": OUTBOX_PENDING_SHARD},
                ExpressionAttributeValues={":s": {"N": str(shard)}},
                Select="COUNT",
            )["Count"]
        )
    found["outbox_pending"] = pending
    return found


def drain_stack(fleet: Fleet, console: Console, *, bound_s: float = 600.0) -> dict[str, Any]:
    """Work off what earlier runs left on the stack (messages, pending outbox records) before
    a measured run, so none of it is counted with it: a purchase worker and the whole saga
    side run until ``stack_backlog`` is empty, or the bound. Not measured; reported."""
    backlog = stack_backlog()
    if not any(backlog.values()):
        return {"before": backlog, "after": backlog, "seconds": 0.0, "bound_reached": False}
    started = time.monotonic()
    run_id = f"drain-{uuid.uuid4().hex[:6]}"
    after = backlog
    try:
        with console.status(f"working off what earlier runs left: {backlog}") as status:
            start_pipeline(fleet, PipelineSpec(decline_rate=0.0), run_id)
            fleet.start_worker(f"purchase-{run_id}", [QueueRole.PURCHASES.celery_queue])
            for n in range(3):  # cancellation notices are rate-limited per process
                queue = QueueRole.NOTIFICATIONS_LOW.celery_queue
                fleet.start_worker(f"notify-low-{run_id}-{n}", [queue])
            while any(after.values()) and time.monotonic() - started < bound_s:
                time.sleep(2)  # the next look at the backlog
                after = stack_backlog()
                status.update(f"working off what earlier runs left: {after}")
    finally:
        fleet.stop_all()
    seconds = round(time.monotonic() - started, 1)
    console.print(f"worked off earlier runs' backlog {backlog} in {seconds:.0f} s: {after}")
    return {
        "before": backlog,
        "after": after,
        "seconds": seconds,
        "bound_reached": any(after.values()),
    }
