"""A contested flash sale on the local stack: the demo, and the benchmark against a baseline.

``python -m bench.flash_sale demo``  — 20,000 buyers (some clicking twice, a few sending
garbage) for 5,000 seats, several worker processes, a progress bar and a closing table.

``python -m bench.flash_sale bench`` — the same sale as a benchmark, then a baseline with
Celery's default settings and one request per message, in the same invocation; figures and
ratios go to ``bench/results/flash_sale.json``.

Both start the local stack if needed, start real ``celery -A tasks worker`` processes and stop
what they started.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import structlog
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench.ceiling import measure_ceiling, measure_purchase_ceiling
from bench.chart import draw
from bench.ledger import Ledger, read_ledger
from bench.pipeline import (
    PipelineSpec,
)
from bench.poison import count_dead_letters, poison_bodies, send_poison
from bench.relay import measure_relay, relay_table, stack_environment
from bench.report import bench_table, saga_table, sale_table, targets_table
from bench.sampler import Sampler, cpu_between
from bench.spike import SpikeSpec, drain_stack, run_spike, run_timeline, sale_rows
from bench.stats import CallCounter, ClientCalls
from bench.targets import bench_ratios, targets
from flashsale import aws
from flashsale.messages import PurchaseBatch
from flashsale.names import QueueRole
from flashsale.settings import get_settings
from infra.local import down, up
from infra.local.fleet import Fleet
from infra.local.ports import free_port
from tasks.intake import Accepted, Intake, parse_request
from tasks.inventory import create_event, event_orders, get_inventory
from tasks.loadgen import Burst, fire, requests

RESULTS = Path("bench/results/flash_sale.json")
BENCH_STACK = Path(".stack/bench")
SHARED_LOCALSTACK_VENV = Path(".stack/localstack-venv").resolve()
CHART = RESULTS.with_suffix(".png")
BASELINE_CONFIG = "bench.celery_defaults"
# Calls the sale driver itself makes to follow progress; excluded from the per-request figures.
DRIVER_CALLS = {"sqs.GetQueueAttributes", "dynamodb.Query", "dynamodb.GetItem"}


@dataclass(frozen=True)
class SaleSpec:
    requests: int = 20_000
    seats: int = 5_000
    duplicates: int = 1_000
    malformed: int = 20
    poison: int = 5
    workers: int = 4
    seed: int = 7
    baseline: bool = False  # Celery defaults, task.apply_async, one request per message
    # The purchase saga behind the seat decisions (payment, ticket, notification), with
    # this share of cards declined; None: seat decisions only.
    pipeline: PipelineSpec | None = None
    timeout_s: float = 900.0


@dataclass
class SaleResult:
    spec: SaleSpec
    event_id: str
    sent: int
    accepted: int
    duplicates: int
    invalid: int
    sqs_messages: int
    dead_lettered: int
    ledger: Ledger
    duration_s: float
    aws_calls: dict[str, int] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # per process, until decided
    peak_rss: dict[str, int] = field(default_factory=dict)  # bytes, per process tree

    @property
    def lost(self) -> int:
        """Accepted requests with no decision: must be 0."""
        return self.accepted - self.ledger.decided

    def figures(self) -> dict[str, Any]:
        # The driver's own progress polling is measurement, not the purchase path.
        path = {op: n for op, n in self.aws_calls.items() if op not in DRIVER_CALLS}
        per_request = {
            service: round(
                sum(n for op, n in path.items() if op.startswith(service + "."))
                / max(self.accepted, 1),
                4,
            )
            for service in ("sqs", "dynamodb")
        }
        return {
            "requests": self.sent,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "invalid": self.invalid,
            "seats": self.spec.seats,
            "sold": self.ledger.sold_counter,
            "confirmed": self.ledger.confirmed,
            "sold_out": self.ledger.sold_out,
            "rejected": self.ledger.rejected,
            "dead_lettered": self.dead_lettered,
            "lost": self.lost,
            "oversold": self.ledger.oversold,
            "fcfs_inversions": self.ledger.fcfs_inversions,
            "duration_s": round(self.duration_s, 3),
            "throughput_rps": round(self.accepted / self.duration_s, 1) if self.duration_s else 0,
            "p50_latency_ms": self.ledger.p50_latency_ms,
            "p99_latency_ms": self.ledger.p99_latency_ms,
            "sqs_messages": self.sqs_messages,
            "aws_calls": self.aws_calls,
            "aws_calls_per_request": round(sum(per_request.values()), 4),
            "sqs_calls_per_request": per_request["sqs"],
            "dynamodb_calls_per_request": per_request["dynamodb"],
            "workers": self.spec.workers,
            "cpu_seconds_by_process": self.cpu_seconds,
            "cpu_ms_per_request": round(
                1000 * sum(self.cpu_seconds.values()) / max(self.sent, 1), 3
            ),
            "peak_rss_mib": {n: round(v / 2**20, 1) for n, v in sorted(self.peak_rss.items())},
        }


def _enqueue_baseline(burst_requests: list[dict[str, Any]], burst: Burst) -> int:
    """The textbook way: validate, then one ``apply_async`` (one SendMessage) per request."""
    from tasks.purchase import allocate  # the Celery app is only needed for this path

    sent = 0
    for seq, raw in enumerate(burst_requests):
        burst.sent += 1
        try:
            request = parse_request(raw)
        except ValueError:
            burst.invalid += 1
            continue
        if request.order_id in burst.accepted:
            burst.duplicates += 1
        batch = PurchaseBatch.model_validate(
            {
                "event_id": request.event_id,
                "requests": [
                    {
                        "order_id": request.order_id,
                        "buyer_id": request.buyer_id,
                        "request_id": request.request_id,
                        "quantity": request.quantity,
                        "accepted_seq": seq,
                        "accepted_at_ms": int(time.time() * 1000),
                    }
                ],
            }
        )
        allocate.apply_async(
            kwargs={"batch": batch.model_dump(mode="json")},
            queue=QueueRole.PURCHASES.celery_queue,
            MessageGroupId=request.event_id,
            MessageDeduplicationId=f"{request.order_id}-{seq}",
        )
        accepted = Accepted(request.order_id, request.event_id, seq)
        burst.accepted.setdefault(request.order_id, accepted)
        sent += 1
    return sent


def _wait_for_decisions(
    spec: SaleSpec, event_id: str, expected: int, messages: int, progress: Progress
) -> Ledger:
    """Poll until every accepted request is decided (exact count from the orders table).

    While messages wait, progress is estimated from the queue depth (cheap); the orders
    table, which the emulator answers slowly for big sales, is read once the queue is empty.
    """
    settings, ddb, sqs = get_settings(), aws.client("dynamodb"), aws.client("sqs")
    task = progress.add_task("seats decided", total=expected)
    deadline = time.monotonic() + spec.timeout_s
    orders: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        depth = sqs.get_queue_attributes(
            QueueUrl=settings.purchases_queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        waiting = sum(int(v) for v in depth.values())
        progress.update(task, completed=int(expected * (1 - waiting / max(messages, waiting, 1))))
        if waiting == 0:
            orders = event_orders(ddb, settings.orders_table, event_id)
            progress.update(task, completed=len(orders))
            if len(orders) >= expected:
                break
        time.sleep(0.5)
    else:  # timed out: report what was decided, the figures will show what is missing
        orders = event_orders(ddb, settings.orders_table, event_id)
    inventory = get_inventory(ddb, settings.inventory_table, event_id) or {}
    return read_ledger(inventory, orders)


def _wait_for_dead_letters(spec: SaleSpec, run_id: str) -> int:
    """Count this run's dead letters exactly, waiting until the poison messages arrive."""
    settings, sqs = get_settings(), aws.client("sqs")
    deadline = time.monotonic() + 120
    dead = count_dead_letters(sqs, settings.purchases_dlq_url, run_id)
    while dead < spec.poison and time.monotonic() < deadline:
        time.sleep(1)
        dead = count_dead_letters(sqs, settings.purchases_dlq_url, run_id)
    return dead


def run_sale(spec: SaleSpec, fleet: Fleet, console: Console) -> SaleResult:
    """The purchase path alone, with real workers and the in-process publisher (the
    baseline's textbook ``apply_async``, or ``tasks.intake.Intake``); exact counts from the
    tables and the emulators. The sagas of the held seats are left to ``drain_stack``."""
    settings, ddb, sqs = get_settings(), aws.client("dynamodb"), aws.client("sqs")
    run_id = uuid.uuid4().hex[:10]
    event_id = f"sale-{run_id}"
    create_event(ddb, settings.inventory_table, event_id, spec.seats)
    for n in range(spec.workers):
        fleet.start_worker(
            f"purchase-{run_id}-{n}",
            [QueueRole.PURCHASES.celery_queue],
            concurrency=2 if spec.baseline else 1,
            config_module=BASELINE_CONFIG if spec.baseline else None,
        )
    burst_requests = list(
        requests(
            event_id,
            spec.requests,
            duplicates=spec.duplicates,
            malformed=spec.malformed,
            seed=spec.seed,
        )
    )
    counter = CallCounter.from_environment()
    counter.reset()
    columns = (
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    intake = Intake(
        sqs,
        settings.purchases_queue_url,
        batch_size=settings.purchase_batch_size,
        linger_ms=settings.intake_linger_ms,
        max_per_request=settings.max_tickets_per_request,
    )
    me = os.getpid()
    sampler = Sampler(
        sqs, {}, lambda: {n: p.pid for n, p in fleet.processes.items()} | {"publisher": me}
    )
    before = sampler.usage()
    sampler.start()
    try:
        with Progress(*columns, console=console) as progress:
            started = time.time()
            if spec.baseline:
                burst = Burst()
                messages = _enqueue_baseline(burst_requests, burst)
            else:
                burst = fire(intake, burst_requests, progress)
                messages = intake.messages_sent
            send_poison(
                sqs,
                settings.purchases_queue_url,
                poison_bodies(run_id, spec.poison, QueueRole.PURCHASES.celery_queue),
                fifo=True,
            )
            ledger = _wait_for_decisions(spec, event_id, len(burst.accepted), messages, progress)
            calls = counter.read()  # before the DLQ is counted: its receives are not the path's
            after = sampler.usage()
            duration = max(ledger.last_decided_ms / 1000 - started, 1e-3)
    finally:
        sampler.stop()
    intake.close()
    dead = _wait_for_dead_letters(spec, run_id)
    fleet.stop_all()
    cpu = cpu_between(before, after)
    return SaleResult(
        spec,
        event_id,
        burst.sent,
        len(burst.accepted),
        burst.duplicates,
        burst.invalid,
        intake.messages_sent if not spec.baseline else messages,
        dead,
        ledger,
        duration,
        calls,
        cpu_seconds=cpu,
        peak_rss={n: v for n, v in sampler.peak_rss.items() if n != "publisher"},
    )


def _fleet(stack_env: dict[str, str], stack_dir: Path | None = None) -> Fleet:
    base = stack_dir or Path(os.environ.get("FLASHSALE_STACK_DIR", ".stack"))
    return Fleet(stack_env, base / "logs")


@contextlib.contextmanager
def _bench_stack(console: Console, which: str) -> Iterator[tuple[dict[str, str], Path | None]]:
    """The stack ``make bench`` measures on: by default a new one of its own (``.stack/bench``,
    free ports, LocalStack's virtualenv shared with the default stack), stopped at the end.

    Why not the default stack: the DynamoDB emulator keeps every item of every earlier run in
    memory and answers an index query by scanning the whole table, so the relay's and the
    sweeper's polling cost grows with the stack's history (0.9 s per outbox pending-index
    query after a day of runs, against milliseconds on a new stack), and another session's
    run on the shared stack would enter the emulators' exact counts. ``--stack default`` runs
    on the default stack anyway (or on ``FLASHSALE_OUTPUTS_FILE``'s).
    """
    if which == "default":
        yield _stack(console), None
        return
    down(BENCH_STACK)  # what a crashed earlier run left running (only what its pid files name)
    ports: list[int] = []
    while len(ports) < 2:
        port = free_port()
        if port not in ports:
            ports.append(port)
    with console.status(f"starting a new local stack for the benchmark in {BENCH_STACK}"):
        environment = up(
            BENCH_STACK,
            localstack_port=ports[0],
            dynamodb_port=ports[1],
            localstack_venv=SHARED_LOCALSTACK_VENV,
            timeout=240,
        )
    os.environ.update(environment)
    get_settings.cache_clear()
    try:
        yield environment, BENCH_STACK
    finally:
        with console.status("stopping the benchmark's stack"):
            down(BENCH_STACK)


def demo(args: argparse.Namespace, console: Console) -> int:
    """A contested sale through the HTTP intake, end to end: seats, payments, tickets,
    e-mails; declined cards' seats resold to waves of late buyers; two tables at the end."""
    spec = SpikeSpec(
        requests=args.requests,
        seats=args.seats,
        duplicates=args.requests // 20,
        malformed=args.requests // 1000,
        connections=args.connections,
        purchase_workers=args.workers,
        intake_ack=args.intake_ack,
        decline_rate=args.decline_rate,
        resale_waves=3,
        poison=5,
    )
    fleet = _fleet(_stack(console))
    run = run_spike(spec, fleet, console, ClientCalls())
    figures = run.figures()
    console.print(sale_table(sale_rows(figures), title=f"Flash sale {run.event_id} (HTTP intake)"))
    console.print(saga_table(run.sagas, seats=spec.seats))
    healthy = (
        figures["oversold"] == 0
        and figures["fcfs_inversions"] == 0
        and figures["lost"] == 0
        and figures["duplicate_charges"] == 0
        and figures["dead_lettered"] == spec.poison
    )
    return 0 if healthy else 1


def _baseline_spec(requests: int) -> SaleSpec:
    """Celery defaults, ``apply_async``, one request per message; the main run's mix."""
    return SaleSpec(
        requests=requests,
        seats=requests // 4,
        workers=1,
        duplicates=requests // 20,
        malformed=requests // 1000,
        poison=0,
        baseline=True,
    )


def bench(args: argparse.Namespace, console: Console) -> int:
    """The sale through the HTTP intake with the whole pipeline, a baseline, the relay
    against a naive relay and the emulator's ceiling, in one invocation: JSON and a chart."""
    begun = time.monotonic()
    with _bench_stack(console, args.stack) as (environment, stack_dir):
        fleet = _fleet(environment, stack_dir)
        return _bench(args, console, environment, fleet, begun, stack_is_ours=stack_dir is not None)


def _bench(
    args: argparse.Namespace,
    console: Console,
    environment: dict[str, str],
    fleet: Fleet,
    begun: float,
    *,
    stack_is_ours: bool,
) -> int:
    spike_spec = SpikeSpec(
        requests=args.requests,
        seats=args.seats,
        duplicates=args.requests // 20,
        malformed=args.requests // 1000,
        connections=args.connections,
        purchase_workers=args.workers,
        intake_ack=args.intake_ack,
        decline_rate=0.0,
        saga_concurrency=args.saga_concurrency,
        saga_scale_out=args.saga_scale_out,
        saga_step_timeout_s=900.0,
        hold_s=1800,
        backlog_limit=args.backlog_limit,
        profile_s=args.profile,
    )
    base_spec = _baseline_spec(args.baseline_requests)
    load_average = {"start": [round(v, 2) for v in os.getloadavg()]}
    shards = _one_relay_one_shard(fleet) if stack_is_ours else {}
    try:
        drained = {"before_baseline": drain_stack(fleet, console)}
        console.rule("baseline: Celery defaults, apply_async, one request per message")
        base = run_sale(base_spec, fleet, console)
        drained["before_main_run"] = drain_stack(fleet, console)
        console.rule(
            f"flashsale: {spike_spec.requests:,} HTTP requests, {spike_spec.seats:,} seats, "
            "the whole pipeline"
        )
        load_average["main_run_start"] = [round(v, 2) for v in os.getloadavg()]
        run = run_spike(spike_spec, fleet, console, ClientCalls())
        load_average["main_run_end"] = [round(v, 2) for v in os.getloadavg()]
    finally:
        fleet.stop_all()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    relay: dict[str, Any] = {"skipped": True, "ok": True}
    if args.relay_events:
        console.rule("outbox relay vs a naive one-at-a-time relay")
        relay = measure_relay(environment, args.relay_events)
        console.print(relay_table(relay))
    tuned_fig, base_fig = run.figures(), base.figures()
    console.rule("the DynamoDB emulator's ceiling for the saga's call mix, measured alone")
    ceiling = measure_ceiling(
        run.saga_calls, max(tuned_fig["confirmed"], 1), console, saga_ids=list(run.states)
    )
    tuned_fig["saga"]["emulator_ceiling"] = ceiling
    if stack_is_ours:
        tuned_fig["purchase_path_ceiling"] = measure_purchase_ceiling(console)
    ratios = bench_ratios(tuned_fig, base_fig)
    series = run_timeline(run)
    verdicts = targets(tuned_fig, ratios)
    document = {
        "flashsale": tuned_fig,
        "baseline": base_fig,
        "ratio": ratios,
        "targets": verdicts,
        "relay": relay,
        "drained": drained,
        "settings": shards
        | {"intake_ack": spike_spec.intake_ack, "backlog_limit": spike_spec.backlog_limit},
        "machine": {"cpus": os.cpu_count(), "load_average_1_5_15m": load_average},
        "spec": {"flashsale": asdict(spike_spec), "baseline": asdict(base_spec)},
        "timeline": series,
        "wall_seconds": round(time.monotonic() - begun, 1),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(document, indent=1) + "\n")
    draw(
        series,
        CHART,
        title=f"make bench: {tuned_fig['requests']:,} HTTP requests, "
        f"{spike_spec.seats:,} seats, whole pipeline ({document['measured_at']})",
    )
    print_bench(document, console)
    console.print(f"written to {RESULTS} and {CHART} ({document['wall_seconds']:.0f} s in all)")
    healthy = (
        tuned_fig["oversold"] == 0
        and tuned_fig["lost"] == 0
        and tuned_fig["duplicate_charges"] == 0
        and relay["ok"]
    )
    return 0 if healthy else 1


def print_bench(document: dict[str, Any], console: Console) -> None:
    """The benchmark's tables; ``report`` reprints them from the JSON of the last run."""
    console.print(bench_table(document["flashsale"], document["baseline"], document["ratio"]))
    console.print(targets_table(document["targets"]))
    if not document["relay"].get("skipped"):
        console.print(relay_table(document["relay"]))


def report(console: Console) -> int:
    if not RESULTS.exists():
        console.print(f"no {RESULTS}: run `make bench` first")
        return 1
    document = json.loads(RESULTS.read_text())
    console.print(f"make bench of {document['measured_at']} ({document['wall_seconds']:.0f} s)")
    print_bench(document, console)
    return 0


def _one_relay_one_shard(fleet: Fleet) -> dict[str, str]:
    """One relay and one sweeper run here, so one shard each for the outbox's pending index
    and the sagas' active index (flashsale's default, 8, lets 8 relays share the work).

    On the emulator every shard's query scans the whole table (about 25 us an item here), and
    the relay queries every shard each round: at 8 shards its polling took more of the
    serialized emulator than the purchase path did. Writers and relays must agree, so every
    process of this run, the driver included, gets the same value — on the benchmark's own
    stack only.
    """
    shards = {"FLASHSALE_OUTBOX_SHARDS": "1", "FLASHSALE_SAGA_SHARDS": "1"}
    os.environ.update(shards)
    fleet.environment.update(shards)
    get_settings.cache_clear()
    return shards


def _stack(console: Console) -> dict[str, str]:
    """Start (or reuse) the local stack and point this process's AWS clients at it.

    With ``FLASHSALE_OUTPUTS_FILE`` already set, the sale runs against that stack instead
    (another local stack, or AWS with ``pulumi stack output --json`` written to a file).
    """
    environment = stack_environment(console)
    os.environ.update(environment)
    get_settings.cache_clear()
    return environment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a contested flash sale on the local stack.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("demo", "bench"):
        command = sub.add_parser(name)
        command.add_argument("--requests", type=int, default=10_000 if name == "demo" else 50_000)
        command.add_argument("--seats", type=int, default=1_000 if name == "demo" else 10_000)
        # One hot event is one FIFO message group, decided one message at a time: a second
        # worker takes over at once if the first stops; more would only poll.
        command.add_argument("--workers", type=int, default=2, help="purchase worker processes")
        command.add_argument("--connections", type=int, default=64, help="HTTP clients")
        command.add_argument("--intake-ack", choices=["queued", "buffered"], default="queued")
        if name == "demo":
            command.add_argument(
                "--decline-rate", type=float, default=0.1, help="share of cards declined"
            )
        if name == "bench":
            command.add_argument("--baseline-requests", type=int, default=2_000)
            command.add_argument(
                "--stack",
                choices=["fresh", "default"],
                default="fresh",
                help="a new stack of the benchmark's own (default), or the default stack",
            )
            command.add_argument(
                "--saga-concurrency",
                type=int,
                default=1,
                help="saga worker, during the spike",
            )
            command.add_argument(
                "--saga-scale-out", type=int, default=3, help="more, once the seats are decided"
            )
            command.add_argument(
                "--backlog-limit", type=int, default=100, help="the intake's, in messages"
            )
            command.add_argument(
                "--profile", type=float, default=0.0, help="py-spy the first N s of the load"
            )
            command.add_argument(
                "--relay-events", type=int, default=2_000, help="0: skip the relay comparison"
            )
    sub.add_parser("report", help=f"print the tables of the last bench from {RESULTS}")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the processes this run started are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    console = Console()
    if args.command == "report":
        return report(console)
    return demo(args, console) if args.command == "demo" else bench(args, console)


if __name__ == "__main__":
    raise SystemExit(main())
