"""Fuzzed raw messages on the purchases queue, past the intake: DLQ or processed, no crash.

Hypothesis generates SQS bodies a broken or hostile producer could send straight to
``purchases.fifo``: text, JSON of any shape, base64 of garbage bytes (invalid UTF-8 once
decoded), bodies near SQS's 256 KiB limit, kombu envelopes with fields of the wrong type,
unknown tasks, the purchase task with bad arguments, negative or enormous quantities, missing
fields, unknown events — and well-formed batches. Between them, real buyers go through the
intake. Afterwards, exactly: every message the schema refuses is in the DLQ (by message id),
every well-formed batch is decided, the real sale's ledger is exact, and the same worker
process is still alive.

The module has a stack of its own, so the DLQ holds only these messages. The examples are
derandomized: the same bodies in every run.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from local_stacks import running_stack
from polling import wait_until
from pydantic import ValidationError
from sale_harness import PURCHASES, Sale, single_seat_burst
from scenarios import Scenario, redecided, worker_logs

from flashsale.messages import PurchaseBatch
from flashsale.names import ORDERS_PK
from flashsale.settings import Settings
from flashsale.task_messages import task_message_body
from infra.local.fleet import Fleet

pytestmark = pytest.mark.integration

PURCHASE_TASK = "tasks.purchase.allocate"
EXAMPLES = 50
SEATS = 60
BUYERS = 200
SQS_MAX_BODY_BYTES = 262_144
WORKER = "fuzzed-purchase-0"

# Bounded and the same in every run: derandomized, no example database, no shrinking needed
# (the sending cannot fail; the checks come after all examples).
FUZZ_SETTINGS = hypothesis_settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A stack of this module's own: the DLQ must hold only this module's messages."""
    yield from running_stack(tmp_path_factory)


@pytest.fixture(scope="module")
def fleet(environ: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = Fleet(environ, tmp_path_factory.mktemp("fuzz-worker-logs"))
    fleet.start_worker(WORKER, [PURCHASES])
    yield fleet
    fleet.stop_all()


# --- what a broken producer sends -------------------------------------------------------------

# Characters SQS accepts in a body (#x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-).
sqs_text = st.text(
    st.characters(
        min_codepoint=0x20,
        exclude_categories=["Cs"],
        exclude_characters="\ufffe\uffff",
        include_characters="\t\n\r",
    ),
    min_size=1,
    max_size=200,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | sqs_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(sqs_text, inner, max_size=4),
    max_leaves=12,
)
identifiers = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.:-]{0,20}\Z")
quantities = st.one_of(
    st.integers(min_value=1, max_value=8),
    st.integers(min_value=-(10**6), max_value=0),
    st.integers(min_value=101, max_value=10**18),
    st.floats(allow_nan=False),
    st.text(max_size=3),
    st.booleans(),
)


def b64(value: str | bytes) -> str:
    return base64.b64encode(value.encode() if isinstance(value, str) else value).decode()


@st.composite
def requests(draw: st.DrawFn, *, valid: bool) -> dict[str, Any]:
    request = {
        "order_id": str(draw(st.uuids())),
        "buyer_id": draw(identifiers),
        "request_id": draw(identifiers),
        "quantity": draw(st.integers(min_value=1, max_value=8)),
        "accepted_seq": draw(st.integers(min_value=0, max_value=10**9)),
        "accepted_at_ms": draw(st.integers(min_value=0, max_value=2 * 10**12)),
    }
    if valid:
        return request
    # Wrong types, missing or extra fields, out-of-range numbers.
    request["quantity"] = draw(quantities)
    for key in draw(st.sets(st.sampled_from(sorted(request)), max_size=2)):
        if draw(st.booleans()):
            del request[key]
        else:
            request[key] = draw(json_values)
    if draw(st.booleans()):
        request[draw(sqs_text)] = draw(json_values)
    return request


@st.composite
def batches(draw: st.DrawFn, event_ids: list[str]) -> dict[str, Any]:
    """Purchase batches, well-formed or not; ``event_ids`` are on sale or unknown."""
    valid = draw(st.booleans())
    return {
        "event_id": draw(st.sampled_from(event_ids)) if valid else draw(json_values | identifiers),
        "requests": draw(st.lists(requests(valid=valid), min_size=1 if valid else 0, max_size=5)),
    }


def huge_body(pad: str) -> str:
    """A body just under SQS's limit."""
    return pad[:64] + "x" * (SQS_MAX_BODY_BYTES - 64 - 8)


def huge_task_body(event_id: str) -> str:
    """The purchase task with an argument so large its message is just under the limit."""
    pad = "y" * 145_000  # base64 twice: about 1.78 bytes on the queue per byte here
    body = task_message_body(
        PURCHASE_TASK, {"batch": {"event_id": event_id, "pad": pad}}, routing_key=PURCHASES
    )
    assert 250_000 < len(body) <= SQS_MAX_BODY_BYTES
    return body


def kombu_envelope(fields: dict[str, Any]) -> str:
    """A kombu SQS envelope (base64 JSON) whose fields may have any type."""
    return b64(json.dumps(fields))


@st.composite
def raw_bodies(draw: st.DrawFn, event_ids: list[str]) -> str:
    kind = draw(
        st.sampled_from(
            [
                "text",
                "json",
                "garbage",
                "huge",
                "envelope",
                "unknown-task",
                "bad-kwargs",
                "batch",
                "batch",
                "batch",
            ]
        )
    )
    if kind == "text":
        return draw(sqs_text)
    if kind == "json":
        value = json.dumps(draw(json_values))
        return b64(value) if draw(st.booleans()) else value
    if kind == "garbage":
        return b64(draw(st.binary(min_size=1, max_size=300)))
    if kind == "huge":
        return huge_task_body(event_ids[0]) if draw(st.booleans()) else huge_body(draw(sqs_text))
    if kind == "envelope":
        keys = ["body", "properties", "headers", "content-type", "content-encoding"]
        return kombu_envelope(
            draw(st.fixed_dictionaries({}, optional=dict.fromkeys(keys, json_values)))
        )
    if kind == "unknown-task":
        name = draw(st.sampled_from(["tasks.no_such_task", "", "celery.backend_cleanup"]))
        return task_message_body(name, {"batch": {}}, routing_key=PURCHASES)
    if kind == "bad-kwargs":
        kwargs = draw(st.dictionaries(sqs_text, json_values, max_size=3))
        return task_message_body(PURCHASE_TASK, kwargs, routing_key=PURCHASES)
    kwargs = {"batch": draw(batches(event_ids))}
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        kwargs["unexpected"] = 1
    return task_message_body(PURCHASE_TASK, kwargs, routing_key=PURCHASES)


def tricky_envelopes(event_id: str) -> list[str]:
    """Envelope shapes that reach deep into kombu's decoding, always among the examples."""
    task = json.loads(base64.b64decode(task_message_body(PURCHASE_TASK, {}, routing_key="x")))
    request = {
        "order_id": str(uuid.uuid4()),
        "buyer_id": "b-elsewhere",
        "request_id": "r-elsewhere",
        "quantity": 1,
        "accepted_seq": 0,
        "accepted_at_ms": 0,
    }
    return [
        # Well-formed, but addressed to a queue the worker does not know: still decided.
        task_message_body(
            PURCHASE_TASK,
            {"batch": {"event_id": event_id, "requests": [request]}},
            routing_key="elsewhere",
        ),
        kombu_envelope({"body": "e30=", "properties": 5}),
        kombu_envelope({"body": "e30=", "properties": {"delivery_info": 5}}),
        kombu_envelope({"body": "e30=", "properties": [], "headers": "task"}),
        kombu_envelope({**task, "headers": 7}),
        kombu_envelope({**task, "body": {"not": "base64"}}),
        kombu_envelope({**task, "body": b64(json.dumps({"args": []}))}),
        kombu_envelope({**task, "body": b64("[1]")}),
        kombu_envelope({**task, "properties": {**task["properties"], "body_encoding": 3}}),
        kombu_envelope({**task, "content-type": "application/x-python-serialize"}),
        kombu_envelope({**task, "headers": {**task["headers"], "task": None}}),
        kombu_envelope({**task, "properties": {**task["properties"], "body_encoding": "rot13"}}),
    ]


# --- what the worker must have done -----------------------------------------------------------


def well_formed_batch(body: str) -> dict[str, Any] | None:
    """The batch the worker must decide, if ``body`` is a purchase task that passes the schema
    (the same check the task makes); ``None`` if it must be dead-lettered."""
    try:
        envelope = json.loads(base64.b64decode(body, validate=True))
        args, kwargs, _ = json.loads(base64.b64decode(envelope["body"]))
        if envelope["headers"]["task"] != PURCHASE_TASK or args or set(kwargs) != {"batch"}:
            return None
        PurchaseBatch.model_validate(kwargs["batch"])
    except (ValueError, KeyError, TypeError, ValidationError):
        return None
    return dict(kwargs["batch"])


@dataclass(frozen=True)
class Sent:
    message_id: str
    body: str
    batch: dict[str, Any] | None


def dead_lettered_ids(sqs: Any, dlq_url: str) -> set[str]:
    """Every message id in the DLQ; each message is hidden only briefly, and left there."""
    seen: set[str] = set()
    while True:
        messages = sqs.receive_message(
            QueueUrl=dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=10, WaitTimeSeconds=1
        ).get("Messages", [])
        new = {m["MessageId"] for m in messages} - seen
        if not new:
            return seen
        seen |= new


def decided(dynamodb: Any, table: str, order_ids: set[str]) -> set[str]:
    found: set[str] = set()
    ids = sorted(order_ids)
    for start in range(0, len(ids), 100):
        keys: dict[str, Any] = {
            table: {"Keys": [{ORDERS_PK: {"S": i}} for i in ids[start : start + 100]]}
        }
        while keys:
            response = dynamodb.batch_get_item(RequestItems=keys)
            found |= {item[ORDERS_PK]["S"] for item in response["Responses"].get(table, [])}
            keys = response.get("UnprocessedKeys") or {}
    return found


@pytest.mark.scenario(
    "fuzzed raw queue messages (hypothesis)",
    injected=f"{EXAMPLES} generated + 12 crafted bodies past the intake, among {BUYERS} buyers",
    unit="raw msgs + buyers",
)
def test_fuzzed_raw_messages__are_dead_lettered_or_decided_and_the_worker_survives(
    sale: Sale, settings: Settings, clients: dict[str, Any], scenario: Scenario
) -> None:
    sqs, dynamodb = clients["sqs"], clients["dynamodb"]
    worker = sale.fleet.processes[WORKER]
    pid = worker.pid
    fuzz_event = sale.new_event(1_000)
    sale_event = sale.new_event(SEATS)
    event_ids = [fuzz_event, f"no-such-event-{uuid.uuid4().hex[:8]}"]
    buyers = single_seat_burst(sale_event, BUYERS)
    # Real buyers go through the intake in chunks, between the raw messages.
    chunks = [buyers[i : i + 40] for i in range(0, BUYERS, 40)]
    run = uuid.uuid4().hex[:8]
    sent: list[Sent] = []
    accepted = 0

    def send(body: str) -> None:
        nonlocal accepted
        n = len(sent)
        response = sqs.send_message(
            QueueUrl=settings.purchases_queue_url,
            MessageBody=body,
            MessageGroupId=f"fuzz-{run}-{n}",  # its own group: never holds up a real event
            MessageDeduplicationId=f"fuzz-{run}-{n}",
        )
        sent.append(Sent(response["MessageId"], body, well_formed_batch(body)))
        if n % 12 == 0 and chunks:
            accepted += sale.fire(chunks.pop(0))

    @FUZZ_SETTINGS
    @given(raw_bodies(event_ids))
    def send_fuzzed(body: str) -> None:
        send(body)

    for body in tricky_envelopes(fuzz_event):
        send(body)
    send_fuzzed()
    for chunk in chunks:
        accepted += sale.fire(chunk)

    poison = {s.message_id for s in sent if s.batch is None}
    well_formed = [s for s in sent if s.batch is not None]
    order_ids = {r["order_id"] for s in well_formed for r in s.batch["requests"]}  # type: ignore[index]
    kinds = f"{len(sent)} raw messages: {len(poison)} poison, {len(well_formed)} well-formed"
    print(f"\n{kinds} ({len(order_ids)} orders); {accepted} real buyers")
    assert accepted == BUYERS
    assert poison and well_formed, "the examples must include both kinds"

    orders = sale.decided(sale_event, BUYERS, timeout=120)
    wait_until(
        lambda: decided(dynamodb, settings.orders_table, order_ids) == order_ids,
        60,
        f"the {len(order_ids)} orders of the well-formed raw batches",
    )
    in_dlq: set[str] = set()

    def all_dead_lettered() -> bool:
        in_dlq.update(dead_lettered_ids(sqs, settings.purchases_dlq_url))
        return len(in_dlq) >= len(poison)

    try:
        wait_until(all_dead_lettered, 120, f"{len(poison)} raw messages in the DLQ", interval=1)
        wait_until(sale.queue_drained, 60, "the purchases queue to drain")
        raw_decided = decided(dynamodb, settings.orders_table, order_ids)
        scenario.record(
            sent=len(sent) + accepted,
            processed=sum(
                all(r["order_id"] in raw_decided for r in s.batch["requests"])  # type: ignore[index]
                for s in well_formed
            )
            + len({o["order_id"] for o in orders}),
            dead_lettered=len(in_dlq & poison),
            duplicated=redecided(worker_logs(sale.fleet.log_dir), sale_event),
        )
    finally:
        by_id = {s.message_id: s.body for s in sent}
        missing = {i: by_id[i][:160] for i in poison - in_dlq}
        extra = {i: by_id.get(i, "?")[:160] for i in in_dlq - poison}
        assert not missing and not extra, f"not dead-lettered: {missing}; unexpected: {extra}"
    assert in_dlq == poison  # exactly the refused ones: none lost, none extra
    assert worker.alive() and worker.pid == pid, f"the worker died; see {worker.log}"
    ledger = sale.ledger(sale_event, orders)
    assert len(orders) == len({o["order_id"] for o in orders}) == BUYERS
    assert (ledger.confirmed, ledger.sold_out, ledger.rejected) == (SEATS, BUYERS - SEATS, 0)
    assert ledger.sold_counter == ledger.seats_confirmed == SEATS
    assert ledger.oversold == 0
    assert ledger.fcfs_inversions == 0
    assert sale.ledger(fuzz_event, sale.orders(fuzz_event)).oversold == 0
