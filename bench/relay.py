"""The outbox relay as a benchmark: ours against a naive one-at-a-time relay, in the same run.

Each relay drains ``events`` pending outbox records from a scratch copy of the outbox table
(its keys and pending index from ``infra.components.tables``) to a scratch standard queue, on
the same stack, one after the other. Scratch resources keep the figures exact and the stack's
own table and queues untouched: the relay relays only the benchmark's records, and no worker
ever receives them. Both are deleted at the end.

- **flashsale**: the relay that ``python -m outbox.relay`` runs (``outbox.relay.Relay``: fenced
  shard leases, one Query per shard, BatchGetItem for order, ``SendMessageBatch``, one
  ``TransactWriteItems`` of marks per round and shard), run **in-process**, metrics off, so
  the counted calls are the relay's alone and the process start is not timed.
- **baseline**: the textbook relay: per record, Query the oldest pending one (``Limit=1``),
  ``SendMessage`` it, ``UpdateItem`` it dispatched.

Calls are counted by the emulators (``bench.stats.CallCounter``), and cross-checked against
the requests the two relays' own clients sent: if anything else used the emulators meanwhile,
``counts_exact`` is false. Against AWS (no emulator endpoints) the client counts are reported.

``python -m bench.relay`` starts (or reuses) the local stack, runs both, writes
``bench/results/relay.json`` and prints a table. ``measure_relay`` is what ``make bench`` calls.
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
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import structlog
from botocore.config import Config
from rich.console import Console
from rich.table import Table as RichTable

from bench.stats import CallCounter
from flashsale.names import OUTBOX_PENDING_INDEX, OUTBOX_PENDING_SHARD, OUTBOX_SK, QueueRole, Table
from flashsale.settings import OUTPUTS_FILE_ENV
from infra.components.tables import TABLE_SPECS
from infra.local import up
from outbox.leases import Leases
from outbox.pending import PendingStore, record_key
from outbox.records import DISPATCHES, OutboxRecord
from outbox.relay import Relay, RelayConfig
from outbox.sender import Sender

log = structlog.get_logger("bench.relay")

RESULTS = Path("bench/results/relay.json")
DEFAULT_EVENTS = 2_000
SERVICES = ("dynamodb", "sqs")
_ENDPOINT_VARIABLES = {"dynamodb": "AWS_ENDPOINT_URL_DYNAMODB", "sqs": "AWS_ENDPOINT_URL_SQS"}
_CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=16)


@dataclass(frozen=True)
class RelaySpec:
    events: int = DEFAULT_EVENTS
    per_aggregate: int = 1  # events per aggregate; > 1 needs a round per sequence number
    shards: int = 8  # the pending index's shards (flashsale's default)
    lease_seconds: float = 10.0
    timeout_s: float = 900.0


class Clients:
    """boto3 clients for one stack that also count the HTTP requests they send."""

    def __init__(self, environment: Mapping[str, str]) -> None:
        env = {**os.environ, **environment}
        session = boto3.session.Session(
            aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
            region_name=env.get("AWS_DEFAULT_REGION"),
        )
        self.sent: Counter[str] = Counter()
        self.endpoints = {s: env[v] for s, v in _ENDPOINT_VARIABLES.items() if v in env}
        self.dynamodb = self._client(session, "dynamodb")
        self.sqs = self._client(session, "sqs")

    def _client(self, session: boto3.session.Session, service: str) -> Any:
        client = session.client(
            service, endpoint_url=self.endpoints.get(service), config=_CLIENT_CONFIG
        )

        def count(event_name: str, **_: Any) -> None:
            # before-send fires once per HTTP attempt (retries too), as the server counts.
            self.sent[f"{service}.{event_name.rsplit('.', 1)[-1]}"] += 1

        client.meta.events.register("before-send", count)
        return client

    def reset(self) -> None:
        self.sent.clear()


@dataclass
class Scratch:
    table: str
    queues: dict[str, str]  # relay name -> queue URL


def create_scratch(clients: Clients, run: str) -> Scratch:
    """A copy of the outbox table (same keys, same sparse pending index) and one standard
    queue per relay, named after the run."""
    table = f"flashsale-bench-relay-{run}"
    clients.dynamodb.create_table(
        TableName=table, **TABLE_SPECS[Table.OUTBOX].create_table_parameters()
    )
    clients.dynamodb.get_waiter("table_exists").wait(
        TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
    )
    queues = {
        name: clients.sqs.create_queue(QueueName=f"flashsale-bench-relay-{run}-{name}")["QueueUrl"]
        for name in ("flashsale", "baseline")
    }
    return Scratch(table, queues)


def delete_scratch(clients: Clients, scratch: Scratch) -> None:
    clients.dynamodb.delete_table(TableName=scratch.table)
    for url in scratch.queues.values():
        clients.sqs.delete_queue(QueueUrl=url)


def make_records(run: str, name: str, spec: RelaySpec) -> list[OutboxRecord]:
    """``spec.events`` records, ``per_aggregate`` per order, created 1 ms apart in order."""
    start = datetime.now(UTC)
    aggregates = max(spec.events // spec.per_aggregate, 1)
    return [
        OutboxRecord(
            aggregate_id=f"{run}-{name}-order-{n % aggregates}",
            sequence=n // aggregates + 1,
            type="order.confirmed",
            destination=QueueRole.PAYMENTS,
            task="tasks.payment.charge",
            payload={"order_id": f"{run}-order-{n % aggregates}", "amount_cents": 5000},
            created_at=start + timedelta(milliseconds=n),
        )
        for n in range(spec.events)
    ]


def write_records(clients: Clients, table: str, records: list[OutboxRecord], shards: int) -> None:
    """Put the records pending, 25 per BatchWriteItem (setup, not measured)."""
    for start in range(0, len(records), 25):
        request: dict[str, Any] = {
            table: [
                {"PutRequest": {"Item": r.to_item(shards)}} for r in records[start : start + 25]
            ]
        }
        while request:
            request = clients.dynamodb.batch_write_item(RequestItems=request).get(
                "UnprocessedItems"
            )


def run_flashsale(clients: Clients, scratch: Scratch, spec: RelaySpec, events: int) -> int:
    """Our relay, in-process, round after round until it has marked ``events`` records."""
    owner = f"bench-relay-{uuid.uuid4().hex[:6]}"
    config = RelayConfig(owner=owner, lease_seconds=spec.lease_seconds, metrics=False)
    relay = Relay(
        store=PendingStore(clients.dynamodb, scratch.table),
        leases=Leases(
            clients.dynamodb,
            scratch.table,
            owner=owner,
            shards=spec.shards,
            duration=spec.lease_seconds,
        ),
        sender=Sender(clients.sqs, {QueueRole.PAYMENTS: scratch.queues["flashsale"]}),
        config=config,
    )
    deadline = time.monotonic() + spec.timeout_s
    while relay.counters.dispatched < events and time.monotonic() < deadline:
        if relay.run_round() == 0:
            time.sleep(config.poll_interval)  # as ``Relay.run`` waits between empty rounds
    return relay.counters.dispatched


def run_baseline(clients: Clients, scratch: Scratch, spec: RelaySpec, events: int) -> int:
    """The naive relay: one record at a time, query, send, mark; shard after shard."""
    ddb, sqs, url = clients.dynamodb, clients.sqs, scratch.queues["baseline"]
    marked = 0
    deadline = time.monotonic() + spec.timeout_s
    for shard in range(spec.shards):
        while time.monotonic() < deadline:  # until the shard is empty, as a poller would
            items = ddb.query(
                TableName=scratch.table,
                IndexName=OUTBOX_PENDING_INDEX,
                KeyConditionExpression="#shard = :shard",
                ExpressionAttributeNames={"#shard": OUTBOX_PENDING_SHARD},
                ExpressionAttributeValues={":shard": {"N": str(shard)}},
                Limit=1,
            )["Items"]
            if not items:
                break
            record = OutboxRecord.from_item(items[0])
            entry = record.batch_entry("0")
            sqs.send_message(QueueUrl=url, MessageBody=entry["MessageBody"])
            try:
                ddb.update_item(
                    TableName=scratch.table,
                    Key=record_key((record.aggregate_id, record.sequence)),
                    UpdateExpression="REMOVE #shard SET #d = #d + :one",
                    ConditionExpression="attribute_exists(#shard)",
                    ExpressionAttributeNames={"#shard": OUTBOX_PENDING_SHARD, "#d": DISPATCHES},
                    ExpressionAttributeValues={":one": {"N": "1"}},
                )
            except ddb.exceptions.ConditionalCheckFailedException:
                continue  # the index lagged and listed a record marked already: a duplicate
            marked += 1
    return marked


def check_delivery(
    clients: Clients, scratch: Scratch, name: str, records: list[OutboxRecord]
) -> dict[str, int]:
    """Messages on the relay's queue, and records marked dispatched exactly once."""
    depth = clients.sqs.get_queue_attributes(
        QueueUrl=scratch.queues[name], AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]["ApproximateNumberOfMessages"]
    once = 0
    keys = [record_key((r.aggregate_id, r.sequence)) for r in records]
    for start in range(0, len(keys), 100):
        request: dict[str, Any] = {
            scratch.table: {
                "Keys": keys[start : start + 100],
                "ConsistentRead": True,
                "ProjectionExpression": "#sk, #d",
                "ExpressionAttributeNames": {"#sk": OUTBOX_SK, "#d": DISPATCHES},
            }
        }
        while request:
            response = clients.dynamodb.batch_get_item(RequestItems=request)
            items = response["Responses"].get(scratch.table, [])
            once += sum(i[DISPATCHES]["N"] == "1" for i in items)
            request = response.get("UnprocessedKeys") or {}
    return {"messages_on_queue": int(depth), "marked_once": once}


def figures(
    events: int, marked: int, seconds: float, calls: Mapping[str, int], check: Mapping[str, int]
) -> dict[str, Any]:
    """One relay's figures: throughput and AWS calls per event, per service and in total."""
    per_service = {s: sum(n for op, n in calls.items() if op.startswith(s + ".")) for s in SERVICES}
    per_event = {s: round(n / max(events, 1), 4) for s, n in per_service.items()}
    return {
        "events": events,
        "marked": marked,
        **check,
        "duration_s": round(seconds, 3),
        "events_per_s": round(marked / seconds, 1) if seconds > 0 else 0.0,
        "sqs_calls": per_service["sqs"],
        "dynamodb_calls": per_service["dynamodb"],
        "sqs_calls_per_event": per_event["sqs"],
        "dynamodb_calls_per_event": per_event["dynamodb"],
        "aws_calls_per_event": round(sum(per_service.values()) / max(events, 1), 4),
        "calls": dict(sorted(calls.items())),
    }


def ratios(ours: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, float]:
    """Ours over the baseline for throughput; the baseline over ours for calls (times fewer)."""

    def over(a: float, b: float) -> float:
        return round(a / b, 2) if b else 0.0

    return {
        "events_per_s": over(ours["events_per_s"], base["events_per_s"]),
        "aws_calls_per_event": over(base["aws_calls_per_event"], ours["aws_calls_per_event"]),
        "sqs_calls_per_event": over(base["sqs_calls_per_event"], ours["sqs_calls_per_event"]),
        "dynamodb_calls_per_event": over(
            base["dynamodb_calls_per_event"], ours["dynamodb_calls_per_event"]
        ),
    }


Runner = Callable[[Clients, Scratch, RelaySpec, int], int]


def _measure(
    clients: Clients,
    counter: CallCounter | None,
    scratch: Scratch,
    spec: RelaySpec,
    name: str,
    run: str,
) -> tuple[dict[str, Any], bool]:
    runner: Runner = run_flashsale if name == "flashsale" else run_baseline
    records = make_records(run, name, spec)
    write_records(clients, scratch.table, records, spec.shards)
    if counter is not None:
        counter.reset()
    clients.reset()
    started = time.perf_counter()
    marked = runner(clients, scratch, spec, len(records))
    seconds = time.perf_counter() - started
    sent = {op: n for op, n in clients.sent.items() if n}
    counted = counter.read() if counter is not None else {}
    # Exact only if the emulators saw the relay's requests and nothing else.
    exact = counter is not None and counted == sent
    result = figures(
        len(records),
        marked,
        seconds,
        counted if counter is not None else sent,
        check_delivery(clients, scratch, name, records),
    )
    log.info(
        "bench.relay_measured",
        relay=name,
        events_per_s=result["events_per_s"],
        aws_calls_per_event=result["aws_calls_per_event"],
        counts_exact=exact,
    )
    return result, exact


def measure_relay(
    environment: Mapping[str, str],
    events: int = DEFAULT_EVENTS,
    *,
    per_aggregate: int = 1,
    shards: int = 8,
    lease_seconds: float = 10.0,
    timeout_s: float = 900.0,
    run: str | None = None,
) -> dict[str, Any]:
    """Our relay and the naive baseline over ``events`` records each on the stack that
    ``environment`` (the standard ``AWS_*`` variables, as ``infra.local.up`` returns them;
    empty: this process's) points at. Returns ``{"flashsale", "baseline", "ratio", "spec",
    "ok", "counts_exact", "mode", "measured_at"}``; ``ok`` is every event delivered and marked
    exactly once by both. ``run`` names the records and scratch resources (default: random)."""
    spec = RelaySpec(events=events, per_aggregate=per_aggregate, shards=shards, timeout_s=timeout_s)
    clients = Clients(environment)
    counter = CallCounter(clients.endpoints) if set(clients.endpoints) == set(SERVICES) else None
    run = run or uuid.uuid4().hex[:8]
    scratch = create_scratch(clients, run)
    try:
        ours, ours_exact = _measure(clients, counter, scratch, spec, "flashsale", run)
        base, base_exact = _measure(clients, counter, scratch, spec, "baseline", run)
    finally:
        delete_scratch(clients, scratch)
    ok = all(
        f["marked"] == f["marked_once"] == f["messages_on_queue"] == events for f in (ours, base)
    )
    return {
        "flashsale": ours,
        "baseline": base,
        "ratio": ratios(ours, base),
        "spec": asdict(spec),
        "ok": ok,
        "counts_exact": ours_exact and base_exact,
        "mode": "in-process outbox.relay.Relay (metrics off) vs one-at-a-time baseline; "
        "scratch table and queues on the same stack",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def relay_table(document: Mapping[str, Any]) -> RichTable:
    ours, base, ratio = document["flashsale"], document["baseline"], document["ratio"]
    table = RichTable(title=f"outbox relay: {ours['events']:,} pending events (same run)")
    for column in ("", "flashsale relay", "naive baseline", "ratio"):
        table.add_column(column, justify="right" if column else "left")
    rows = [
        ("events/s", "events_per_s", "events_per_s"),
        ("SQS calls per event", "sqs_calls_per_event", "sqs_calls_per_event"),
        ("DynamoDB calls per event", "dynamodb_calls_per_event", "dynamodb_calls_per_event"),
        ("AWS calls per event", "aws_calls_per_event", "aws_calls_per_event"),
    ]
    for label, key, ratio_key in rows:
        fewer = "" if key == "events_per_s" else " fewer"
        table.add_row(label, str(ours[key]), str(base[key]), f"{ratio[ratio_key]}x{fewer}")
    table.add_row("duration (s)", str(ours["duration_s"]), str(base["duration_s"]), "")
    table.add_row(
        "delivered / marked once",
        f"{ours['messages_on_queue']:,} / {ours['marked_once']:,}",
        f"{base['messages_on_queue']:,} / {base['marked_once']:,}",
        "",
    )
    return table


def stack_environment(console: Console) -> dict[str, str]:
    """The local stack's variables, starting it if needed (as ``make bench`` does); with
    ``FLASHSALE_OUTPUTS_FILE`` set, this process's environment points at the stack instead."""
    if OUTPUTS_FILE_ENV in os.environ:
        return {}
    with console.status("starting the local stack (the first run installs LocalStack)"):
        return up()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__ and __doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS)
    parser.add_argument("--per-aggregate", type=int, default=1)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: scratch gets deleted
    # The relay logs every dispatched event id; a benchmark's console wants only warnings.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    console = Console()
    environment = stack_environment(console)
    document = measure_relay(environment, args.events, per_aggregate=args.per_aggregate)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    console.print(relay_table(document))
    if not document["counts_exact"]:
        console.print("[yellow]call counts not exact: something else used the emulators")
    console.print(f"written to {args.output}")
    return 0 if document["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
