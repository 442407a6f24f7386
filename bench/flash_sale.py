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
import json
import logging
import os
import signal
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import structlog
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench.ledger import Ledger, read_ledger
from bench.pipeline import (
    PipelineSpec,
    confirmed_ids,
    saga_figures,
    saga_store,
    start_pipeline,
    wait_for_sagas,
)
from bench.poison import count_dead_letters, poison_bodies, send_poison
from bench.relay import measure_relay, relay_table, stack_environment
from bench.report import comparison_table, saga_table, sale_table
from bench.stats import CallCounter
from flashsale import aws
from flashsale.messages import PurchaseBatch
from flashsale.names import QueueRole
from flashsale.settings import get_settings
from infra.local.fleet import Fleet
from saga import SagaState
from tasks.intake import Accepted, Intake, parse_request
from tasks.inventory import create_event, event_orders, get_inventory
from tasks.loadgen import Burst, fire, requests

RESULTS = Path("bench/results/flash_sale.json")
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
    sagas: dict[str, Any] | None = None

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
        } | ({"sagas": self.sagas} if self.sagas is not None else {})


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
    """Run one sale end to end with real workers; returns exact counts from the tables.

    With a pipeline, every held seat's saga runs to its end, and seats released by declined
    payments are offered to waves of late buyers until sold or the waves run out.
    """
    settings, ddb, sqs = get_settings(), aws.client("dynamodb"), aws.client("sqs")
    run_id = uuid.uuid4().hex[:10]
    event_id = f"sale-{run_id}"
    create_event(ddb, settings.inventory_table, event_id, spec.seats)
    provider = start_pipeline(fleet, spec.pipeline, run_id) if spec.pipeline else None
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
    sagas = None
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
        # The spike's duration: resale waves come later and would dilute the throughput.
        duration = max(ledger.last_decided_ms / 1000 - started, 1e-3)
        if spec.pipeline and provider:
            ledger = _settle_sagas(spec, spec.pipeline, event_id, intake, burst, progress)
            sagas = saga_figures(event_id, *_orders_and_states(event_id), provider)
    intake.close()
    dead = _wait_for_dead_letters(spec, run_id)
    fleet.stop_all()
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
        sagas,
    )


def _orders_and_states(event_id: str) -> tuple[list[dict[str, Any]], dict[str, SagaState]]:
    settings = get_settings()
    orders = event_orders(aws.client("dynamodb"), settings.orders_table, event_id)
    return orders, saga_store().get_many(confirmed_ids(orders))


def _settle_sagas(
    spec: SaleSpec,
    pipeline: PipelineSpec,
    event_id: str,
    intake: Intake,
    burst: Burst,
    progress: Progress,
) -> Ledger:
    """Wait for every saga to end; offer released seats to late buyers, wave after wave."""
    settings, ddb = get_settings(), aws.client("dynamodb")
    for wave in range(pipeline.resale_waves + 1):
        orders = event_orders(ddb, settings.orders_table, event_id)
        wait_for_sagas(confirmed_ids(orders), progress, spec.timeout_s)
        inventory = get_inventory(ddb, settings.inventory_table, event_id) or {}
        free = int(inventory["capacity"]) - int(inventory["sold"])
        if free == 0 or wave == pipeline.resale_waves:
            break
        late = list(
            requests(event_id, free * 3, duplicates=0, malformed=0, seed=wave, first=burst.sent)
        )
        more = fire(intake, late, progress)
        burst.sent += more.sent
        burst.accepted.update(more.accepted)
        _wait_for_decisions(spec, event_id, len(burst.accepted), intake.messages_sent, progress)
    orders = event_orders(ddb, settings.orders_table, event_id)
    inventory = get_inventory(ddb, settings.inventory_table, event_id) or {}
    return read_ledger(inventory, orders)


def _fleet(stack_env: dict[str, str]) -> Fleet:
    return Fleet(stack_env, Path(os.environ.get("FLASHSALE_STACK_DIR", ".stack")) / "logs")


def _spec(args: argparse.Namespace, *, poison: int) -> SaleSpec:
    """The sale the command line asks for: 5% repeated request ids, 0.1% malformed."""
    decline_rate = getattr(args, "decline_rate", None)
    return SaleSpec(
        requests=args.requests,
        seats=args.seats,
        workers=args.workers,
        duplicates=args.requests // 20,
        malformed=args.requests // 1000,
        poison=poison,
        pipeline=PipelineSpec(decline_rate=decline_rate) if decline_rate is not None else None,
    )


def demo(args: argparse.Namespace, console: Console) -> int:
    spec = _spec(args, poison=5)
    fleet = _fleet(_stack(console))
    try:
        result = run_sale(spec, fleet, console)
    finally:
        fleet.stop_all()
    figures = result.figures()
    console.print(sale_table(figures, title=f"Flash sale {result.event_id}"))
    if result.sagas is not None:
        console.print(saga_table(result.sagas, seats=spec.seats))
    healthy = result.ledger.oversold == 0 and result.ledger.fcfs_inversions == 0
    return 0 if healthy and result.lost == 0 else 1


def bench(args: argparse.Namespace, console: Console) -> int:
    tuned_spec = _spec(args, poison=0)
    base_spec = SaleSpec(
        requests=args.baseline_requests,
        seats=args.baseline_requests // 4,
        workers=1,
        duplicates=args.baseline_requests // 20,
        malformed=args.baseline_requests // 1000,  # the same mix as the main run
        poison=0,
        baseline=True,
    )
    environment = _stack(console)
    fleet = _fleet(environment)
    try:
        console.rule("flashsale (batched intake, batched allocation)")
        tuned = run_sale(tuned_spec, fleet, console)
        console.rule("baseline (Celery defaults, one request per message)")
        base = run_sale(base_spec, fleet, console)
    finally:
        fleet.stop_all()
    console.rule("outbox relay vs a naive one-at-a-time relay")
    # The relay logs every dispatched event id; the benchmark's console wants warnings only.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    relay = measure_relay(environment)
    console.print(relay_table(relay))
    tuned_fig, base_fig = tuned.figures(), base.figures()
    ratios = {
        "throughput": round(tuned_fig["throughput_rps"] / max(base_fig["throughput_rps"], 1e-9), 2),
        "aws_calls_per_request": round(
            base_fig["aws_calls_per_request"] / max(tuned_fig["aws_calls_per_request"], 1e-9), 2
        ),
    }
    document = {
        "flashsale": tuned_fig,
        "baseline": base_fig,
        "ratio": ratios,
        "relay": relay,
        "spec": {"flashsale": asdict(tuned_spec), "baseline": asdict(base_spec)},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")
    console.print(comparison_table(tuned_fig, base_fig, ratios))
    console.print(f"written to {RESULTS}")
    healthy = tuned_fig["oversold"] == 0 and tuned_fig["lost"] == 0 and relay["ok"]
    return 0 if healthy else 1


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
        command.add_argument("--requests", type=int, default=10_000 if name == "demo" else 20_000)
        command.add_argument("--seats", type=int, default=1_000 if name == "demo" else 5_000)
        command.add_argument("--workers", type=int, default=4)
        if name == "demo":
            command.add_argument(
                "--decline-rate", type=float, default=0.1, help="share of cards declined"
            )
        if name == "bench":
            command.add_argument("--baseline-requests", type=int, default=1_000)
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the workers this run started are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    console = Console()
    return demo(args, console) if args.command == "demo" else bench(args, console)


if __name__ == "__main__":
    raise SystemExit(main())
