"""The DynamoDB emulator's own ceiling for the saga's call mix, measured alone.

The purchase saga's completion rate on the local stack is bounded by the DynamoDB emulator:
moto serves one request at a time (``infra.local.dynamodb_server``) and spends milliseconds of
CPU on each — and an index query scans the whole table. So after the sale, with every process
of the run stopped, this module times the emulator on its own: for each DynamoDB operation the
sagas used (the mix counted in the run, calls per confirmed order), a tight loop of a request
shaped like the saga's. Reads go to the run's own tables, as they are at the end of the run
(the relay's pending-index and the sweeper's active-index queries, a saga's ``GetItem``, the
relay's ``BatchGetItem`` of records): their cost depends on those tables' sizes. Writes go to
scratch tables declared like the real ones (``TABLE_SPECS``), built with the project's own item
builders (``SagaState.to_item``, ``outbox.records.put_item``, the ticket's order update,
``notifications.dedup.DeliveryRecords.claim``). Two client threads keep the emulator busy (it
serializes them anyway).

``orders_per_s = 1 / sum(calls_per_order[op] / calls_per_s[op])``: what the emulator could
complete if the sagas did nothing but wait on it. An operation of the mix without a
representative request here is costed at the mean of the measured ones (listed under
``estimated``). The scratch tables are deleted at the end.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console

from flashsale import aws
from flashsale.names import (
    ORDERS_PK,
    OUTBOX_PENDING_INDEX,
    OUTBOX_PENDING_SHARD,
    SAGAS_ACTIVE_INDEX,
    SAGAS_ACTIVE_SHARD,
    SAGAS_DEADLINE,
    SAGAS_PK,
    QueueRole,
    Table,
)
from flashsale.settings import get_settings
from infra.components.tables import TABLE_SPECS
from notifications.dedup import DeliveryRecords
from notifications.messages import NotificationKind
from outbox.records import OutboxRecord, put_item
from saga.state import HistoryEntry, SagaState, SagaStatus

SECONDS_PER_OPERATION = 3.0
MIN_CALLS = 40
THREADS = 2
SHARDS = 8
_WRITE_BATCH = 25


def _saga(saga_id: str, *, version: int, final: bool) -> SagaState:
    """A purchase saga as it looks mid-way: its data, a few history entries."""
    now = datetime.now(UTC)
    history = [
        HistoryEntry(at=(now + timedelta(milliseconds=n)).isoformat(), step=step, event=event)
        for n, (step, event) in enumerate(
            [
                ("reserve_seat", "succeeded"),
                ("charge_payment", "started"),
                ("charge_payment", "succeeded"),
                ("issue_ticket", "succeeded"),
            ]
        )
    ]
    return SagaState(
        saga_id=saga_id,
        saga="purchase",
        status=SagaStatus.COMPLETED if final else SagaStatus.RUNNING,
        step=2,
        version=version,
        events=2,
        data={
            "event_id": "ceiling-event",
            "buyer_id": f"buyer-{saga_id[:8]}",
            "quantity": 1,
            "amount_cents": 5000,
            "currency": "usd",
            "email": f"{saga_id[:8]}@example.com",
            "phone": "+15550000000",
            "charge_id": f"ch_{saga_id[:12]}",
        },
        history=history,
        deadline=None if final else time.time() + 120,
        expires_at=time.time() + 600,
    )


def _record(saga_id: str, sequence: int) -> OutboxRecord:
    return OutboxRecord(
        aggregate_id=saga_id,
        sequence=sequence,
        type="saga.command",
        destination=QueueRole.NOTIFICATIONS,
        task="tasks.notify.confirmation",
        payload={"saga_id": saga_id, "saga": "purchase", "step": "notify_buyer", "attempt": 1},
    )


class Scratch:
    """Scratch copies of the sagas, orders, outbox and idempotency tables, filled."""

    def __init__(self, dynamodb: Any, run: str, fill: int) -> None:
        self.ddb = dynamodb
        self.names = {t: f"flashsale-bench-ceiling-{run}-{t.value}" for t in self._tables()}
        self.fill = fill
        self.ids = [str(uuid.uuid4()) for _ in range(fill)]

    @staticmethod
    def _tables() -> tuple[Table, ...]:
        return (Table.SAGAS, Table.ORDERS, Table.OUTBOX, Table.IDEMPOTENCY)

    def create(self) -> None:
        for table, name in self.names.items():
            self.ddb.create_table(TableName=name, **TABLE_SPECS[table].create_table_parameters())
        for name in self.names.values():
            self.ddb.get_waiter("table_exists").wait(
                TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
            )
        sagas = self.names[Table.SAGAS]
        orders = self.names[Table.ORDERS]
        outbox = self.names[Table.OUTBOX]
        # Most sagas of a busy table are final (off the sparse index); the rest are running.
        items = [
            (sagas, _saga(i, version=3, final=n % 4 != 0).to_item(SHARDS))
            for n, i in enumerate(self.ids)
        ]
        items += [(orders, _order(i)) for i in self.ids]
        items += [(outbox, _dispatched(_record(i, 1).to_item(SHARDS))) for i in self.ids]
        for start in range(0, len(items), _WRITE_BATCH):
            request: dict[str, Any] = {}
            for name, item in items[start : start + _WRITE_BATCH]:
                request.setdefault(name, []).append({"PutRequest": {"Item": item}})
            while request:
                request = self.ddb.batch_write_item(RequestItems=request).get("UnprocessedItems")

    def delete(self) -> None:
        for name in self.names.values():
            self.ddb.delete_table(TableName=name)


def _order(order_id: str) -> dict[str, Any]:
    return {
        ORDERS_PK: {"S": order_id},
        "event_id": {"S": "ceiling-event"},
        "status": {"S": "confirmed"},
        "fulfilment": {"S": "held"},
        "quantity": {"N": "1"},
        "accepted_seq": {"N": str(time.time_ns() // 1000)},
        "accepted_at_ms": {"N": str(int(time.time() * 1000))},
        "decided_at_ms": {"N": str(int(time.time() * 1000))},
        "buyer_id": {"S": f"buyer-{order_id[:8]}"},
    }


def _dispatched(item: dict[str, Any]) -> dict[str, Any]:
    """An outbox item already relayed: off the sparse pending index."""
    return {k: v for k, v in item.items() if k != OUTBOX_PENDING_SHARD}


def _requests(
    scratch: Scratch, real: Mapping[Table, str], saga_ids: Sequence[str]
) -> dict[str, Callable[[int], None]]:
    """One representative request per operation; each call gets a fresh number ``n``. Reads
    use the run's tables (``real``) and sagas (``saga_ids``); writes the scratch tables."""
    ddb, names, ids = scratch.ddb, scratch.names, scratch.ids
    sagas, orders, outbox = names[Table.SAGAS], names[Table.ORDERS], names[Table.OUTBOX]
    read = list(saga_ids) or ids
    outbox_shards, saga_shards = get_settings().outbox_shards, get_settings().saga_shards
    deliveries = DeliveryRecords(ddb, names[Table.IDEMPOTENCY])
    fresh = itertools.count()
    lock = threading.Lock()

    def next_id() -> str:
        """The next prefilled saga (a commit moves each one once; they are reused after)."""
        with lock:
            n = next(fresh)
        return ids[n % len(ids)]

    def get_item(n: int) -> None:
        ddb.get_item(
            TableName=real[Table.SAGAS],
            Key={SAGAS_PK: {"S": read[n % len(read)]}},
            ConsistentRead=True,
        )

    def batch_get_item(n: int) -> None:
        keys = [
            {"aggregate_id": {"S": read[(n + k) % len(read)]}, "sequence": {"N": "1"}}
            for k in range(10)
        ]
        request = {real[Table.OUTBOX]: {"Keys": keys, "ConsistentRead": True}}
        ddb.batch_get_item(RequestItems=request)

    def query(n: int) -> None:
        # The relay's and the sweeper's reads: one shard of a sparse index each.
        if n % 2:
            ddb.query(
                TableName=real[Table.OUTBOX],
                IndexName=OUTBOX_PENDING_INDEX,
                KeyConditionExpression="#s = :s",
                ExpressionAttributeNames={"#s": OUTBOX_PENDING_SHARD},
                ExpressionAttributeValues={":s": {"N": str(n % outbox_shards)}},
                Limit=100,
            )
        else:
            ddb.query(
                TableName=real[Table.SAGAS],
                IndexName=SAGAS_ACTIVE_INDEX,
                KeyConditionExpression="#s = :s AND #d <= :now",
                ExpressionAttributeNames={"#s": SAGAS_ACTIVE_SHARD, "#d": SAGAS_DEADLINE},
                ExpressionAttributeValues={
                    ":s": {"N": str(n % saga_shards)},
                    ":now": {"N": f"{time.time():.3f}"},
                },
                Limit=100,
            )

    def transact_write_items(n: int) -> None:
        # A saga's commit: its new state (version check), the ticket on the order (only if
        # still held) and the next command (an outbox record, written once).
        saga_id = next_id()
        state = _saga(saga_id, version=4 + n, final=False)
        items = [
            {
                "Put": {
                    "TableName": sagas,
                    "Item": state.to_item(SHARDS),
                    "ConditionExpression": "attribute_not_exists(#v) OR #v < :v",
                    "ExpressionAttributeNames": {"#v": "version"},
                    "ExpressionAttributeValues": {":v": {"N": str(4 + n)}},
                }
            },
            {
                "Update": {
                    "TableName": orders,
                    "Key": {ORDERS_PK: {"S": saga_id}},
                    "UpdateExpression": "SET #f = :t, #c = :c",
                    # The real step requires "held"; a reused order is already ticketed.
                    "ConditionExpression": "#f IN (:held, :t)",
                    "ExpressionAttributeNames": {"#f": "fulfilment", "#c": "ticket_code"},
                    "ExpressionAttributeValues": {
                        ":t": {"S": "ticketed"},
                        ":held": {"S": "held"},
                        ":c": {"S": "ABC"},
                    },
                }
            },
            put_item(_record(saga_id, 2 + n), table=outbox, shards=SHARDS),
        ]
        ddb.transact_write_items(TransactItems=items)

    def update_item(n: int) -> None:
        deliveries.claim(str(uuid.uuid4()), NotificationKind.CONFIRMATION)

    def put_item_(n: int) -> None:
        ddb.put_item(
            TableName=names[Table.IDEMPOTENCY],
            Item={"id": {"S": f"heartbeat-{n % 8}"}, "at": {"N": f"{time.time():.3f}"}},
        )

    return {
        "dynamodb.GetItem": get_item,
        "dynamodb.BatchGetItem": batch_get_item,
        "dynamodb.Query": query,
        "dynamodb.TransactWriteItems": transact_write_items,
        "dynamodb.UpdateItem": update_item,
        "dynamodb.PutItem": put_item_,
    }


def _rate(call: Callable[[int], None], seconds: float) -> tuple[float, int]:
    """Calls per second of ``call`` from ``THREADS`` threads for ``seconds`` (at least
    ``MIN_CALLS`` calls)."""
    counter = itertools.count()
    done = itertools.count()
    deadline = time.monotonic() + seconds

    def loop() -> None:
        while True:
            n = next(counter)
            if time.monotonic() > deadline and n >= MIN_CALLS:
                return
            call(n)
            next(done)

    started = time.perf_counter()
    threads = [threading.Thread(target=loop) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    calls = next(done)
    return calls / elapsed, calls


def measure_ceiling(
    saga_calls: Mapping[str, int],
    orders: int,
    console: Console,
    *,
    saga_ids: Sequence[str] = (),
    fill: int = 1_000,
    seconds: float = SECONDS_PER_OPERATION,
) -> dict[str, Any]:
    """The emulator's orders/s for the saga's DynamoDB mix (``saga_calls`` over ``orders``)."""
    mix = {
        op: n / max(orders, 1)
        for op, n in sorted(saga_calls.items())
        if op.startswith("dynamodb.") and n > 0
    }
    ddb = aws.client("dynamodb")
    scratch = Scratch(ddb, uuid.uuid4().hex[:8], fill)
    rates: dict[str, float] = {}
    calls: dict[str, int] = {}
    with console.status(f"scratch tables with {fill:,} sagas, orders and outbox records"):
        scratch.create()
    try:
        settings = get_settings()
        real = {t: settings.table(t) for t in (Table.SAGAS, Table.OUTBOX)}
        requests = _requests(scratch, real, saga_ids)
        for op in _ordered(mix, requests):
            with console.status(f"the emulator alone: {op}"):
                rates[op], calls[op] = _rate(requests[op], seconds)
    finally:
        scratch.delete()
    measured_ms = [1000 / r for r in rates.values() if r > 0]
    mean_ms = sum(measured_ms) / len(measured_ms) if measured_ms else 0.0
    estimated = [op for op in mix if op not in rates]
    ms_per_order = sum(n * (1000 / rates[op] if op in rates else mean_ms) for op, n in mix.items())
    sizes = {
        t.value: ddb.describe_table(TableName=get_settings().table(t))["Table"]["ItemCount"]
        for t in (Table.SAGAS, Table.OUTBOX, Table.ORDERS)
    }
    return {
        "orders_per_s": round(1000 / ms_per_order, 1) if ms_per_order else None,
        "table_items": sizes,
        "emulator_ms_per_order": round(ms_per_order, 2),
        "calls_per_order": {op: round(n, 3) for op, n in mix.items()},
        "calls_per_s_alone": {op: round(r, 1) for op, r in rates.items()},
        "ms_per_call_alone": {op: round(1000 / r, 2) for op, r in rates.items() if r},
        "calls_timed": calls,
        "estimated": estimated,
        "fill": fill,
        "threads": THREADS,
        "method": "tight loops of saga-shaped requests, every process of the run stopped: "
        "reads on the run's tables, writes on scratch tables; "
        "orders/s = 1 / sum(calls per order x seconds per call)",
    }


def _ordered(mix: Mapping[str, float], requests: Mapping[str, Any]) -> Iterator[str]:
    """The mix's operations that have a representative request, the biggest share first."""
    yield from sorted((op for op in mix if op in requests), key=lambda op: -mix[op])


def measure_purchase_ceiling(
    console: Console, *, seats: int = 1_000, sold_out_batches: int = 20
) -> dict[str, Any]:
    """The purchase path alone on the emulator: the real allocation (``tasks.allocation``,
    with the saga starter, exactly as a purchase worker runs it), one 32-buyer batch after
    another — a hot event is one FIFO group, decided one message at a time — on a new event of
    ``seats`` seats: batches that confirm until it is sold out, then batches that are sold out.

    It writes sagas and outbox records into the stack's tables: run it only on a stack of the
    benchmark's own, with nothing relaying them.
    """
    import random

    from flashsale.messages import AcceptedRequest, PurchaseBatch
    from tasks.allocation import SeatAllocator
    from tasks.inventory import create_event
    from tasks.purchase_saga import orchestrator, saga_starter

    settings = get_settings()
    ddb = aws.client("dynamodb")
    event_id = f"ceiling-{uuid.uuid4().hex[:8]}"
    create_event(ddb, settings.inventory_table, event_id, seats)
    allocator = SeatAllocator(
        ddb,
        inventory_table=settings.inventory_table,
        orders_table=settings.orders_table,
        max_per_request=settings.max_tickets_per_request,
        start_saga=saga_starter(orchestrator(), settings),
    )
    rng = random.Random(7)
    quantities = [1, 1, 1, 1, 1, 1, 2, 2, 3, 4]  # tasks.loadgen's mix
    seq = time.time_ns() // 1000
    phases: dict[str, list[float]] = {"confirming": [], "sold_out": []}
    buyers: dict[str, int] = {"confirming": 0, "sold_out": 0}
    sold_out_seen = 0
    with console.status("the emulator alone: the purchase path's batches"):
        while sold_out_seen < sold_out_batches:
            requests = []
            for _ in range(settings.purchase_batch_size):
                seq += 1
                requests.append(
                    AcceptedRequest(
                        order_id=str(uuid.uuid4()),
                        buyer_id=f"b{seq}",
                        request_id=f"r{seq}",
                        quantity=rng.choice(quantities),
                        accepted_seq=seq,
                        accepted_at_ms=int(time.time() * 1000),
                        email=f"b{seq}@example.com",
                    )
                )
            batch = PurchaseBatch(event_id=event_id, requests=requests)
            started = time.perf_counter()
            outcome = allocator.allocate(batch)
            elapsed = time.perf_counter() - started
            phase = "confirming" if outcome.summary().get("confirmed", 0) else "sold_out"
            sold_out_seen += phase == "sold_out"
            phases[phase].append(elapsed)
            buyers[phase] += len(requests)
    return {
        phase: {
            "batches": len(times),
            "ms_per_batch": round(1000 * sum(times) / len(times), 1) if times else None,
            "buyers_per_s": round(buyers[phase] / sum(times), 1) if times else None,
        }
        for phase, times in phases.items()
    } | {
        "seats": seats,
        "method": "tasks.allocation.SeatAllocator.allocate in a loop, 32 buyers a batch, "
        "one batch at a time, every process of the run stopped",
    }
