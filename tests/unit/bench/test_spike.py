"""``bench.spike``: following sagas through their workers' logs, and a sale's figures from
exact records (the load's answers, the orders, the sagas, the provider's charges)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.http_load import LoadResult, Outcome
from bench.spike import LogTail, Phase, SpikeRun, SpikeSpec, outbox_only_writes

LINE = (
    "[2026-11-23 16:57:19,068: WARNING/ForkPoolWorker-2] 2026-11-23 16:57:19 [info     ] "
    "saga.transition                outcome={outcome} saga_id={saga} status={status} "
    "step=charge_payment version=1\n"
)


def test_log_tail__collects_final_sagas_and_waits_for_a_half_written_line(tmp_path: Path) -> None:
    log = tmp_path / "saga.log"
    log.write_text(
        LINE.format(outcome="advanced", saga="s1", status="running")
        + LINE.format(outcome="completed", saga="s1", status="completed")
        + LINE.format(outcome="compensated", saga="s2", status="compensated")[:60]
    )
    tail = LogTail([log, tmp_path / "absent.log"])

    assert tail.poll() == 1 and tail.final == {"s1": "completed"}

    with log.open("a") as handle:  # the rest of the half-written line arrives
        handle.write(LINE.format(outcome="compensated", saga="s2", status="compensated")[60:])
    assert tail.poll() == 2 and tail.final["s2"] == "compensated"


def _load(rows: list[tuple[str, str, int, float, float]]) -> LoadResult:
    """``rows``: (outcome, order id, quantity, first sent, answered), one attempt each."""
    return LoadResult(
        spec={}, started_at=100.0, ended_at=110.0, timed_out=False,
        outcome=[r[0] for r in rows], order_id=[r[1] for r in rows],
        quantity=[r[2] for r in rows], first_sent_at=[r[3] for r in rows],
        answered_at=[r[4] for r in rows], attempts=len(rows),
        attempt_request=list(range(len(rows))), attempt_sent_at=[r[3] for r in rows],
        attempt_latency_ms=[1000 * (r[4] - r[3]) for r in rows],
        attempt_status=[{"accepted": 202, "sold_out": 200}.get(r[0], 422) for r in rows],
        attempt_reason=["" for _ in rows],
    )  # fmt: skip


def _order(order_id: str, status: str, seq: int, decided: float) -> dict[str, Any]:
    ms = int(decided * 1000)
    return {"order_id": order_id, "status": status, "quantity": 1, "accepted_seq": seq,
            "accepted_at_ms": ms - 500, "decided_at_ms": ms}  # fmt: skip


def _run(orders: list[dict[str, Any]], load: LoadResult, charges: list[dict[str, Any]]) -> SpikeRun:
    return SpikeRun(
        spec=SpikeSpec(requests=5, seats=1), event_id="e", loads=[load], orders=orders,
        inventory={"capacity": 1, "sold": 1}, states={},
        sagas={"sagas_unfinished": 0, "sagas_quarantined": 0}, charges=charges,
        phase=Phase(load_started=100.0, decided=104.0, settled=106.0),
        path_calls={"sqs.SendMessageBatch": 1, "dynamodb.TransactWriteItems": 1},
        path_calls_total={}, saga_calls={"dynamodb.TransactWriteItems": 2,
                                         "dynamodb.UpdateItem": 2, "dynamodb.GetItem": 1},
        driver_calls={}, emulator_calls={}, cpu_path={"intake": 0.5, "load": 1.0},
        cpu_settle={"saga": 2.0}, peak_rss={"intake": 2**20}, peak_processes={}, samples=[],
        intake_stats={"requests_sent": 2, "messages_sent": 1}, dead_lettered=0, profiles={},
        emulator_others={}, roles={"intake": "path", "load": "load", "saga": "saga"},
    )  # fmt: skip


def test_figures__count_every_request_once_and_time_each_decision() -> None:
    load = _load([
        (Outcome.ACCEPTED, "o1", 1, 100.0, 100.1),
        (Outcome.ACCEPTED, "o2", 1, 100.2, 100.3),
        (Outcome.ACCEPTED, "o1", 1, 101.0, 101.1),  # a double click: same order
        (Outcome.SOLD_OUT, "o3", 1, 103.0, 103.2),  # answered at the intake
        (Outcome.INVALID, "", 0, 103.5, 103.6),
    ])  # fmt: skip
    orders = [_order("o1", "confirmed", 1, 102.0), _order("o2", "sold_out", 2, 102.5)]

    figures = _run(orders, load, [{"key": "o1", "status": "succeeded"}]).figures()

    assert figures["accepted"] == 2 and figures["repeated_request_ids"] == 1
    assert figures["sold_out_at_intake"] == 1 and figures["invalid"] == 1
    assert figures["lost"] == 0 and figures["oversold"] == 0 and figures["fcfs_inversions"] == 0
    assert figures["decisions"] == 3  # two by the workers, one at the intake
    assert figures["decided_within_s"]["max"] == 2.3  # o2: sent at 100.2, decided at 102.5
    assert figures["duplicate_charges"] == 0
    assert figures["cpu_ms_per_request"] == 100.0  # 0.5 s of path CPU over 5 answers
    saga = figures["saga"]
    assert saga["dynamodb_writes_per_order"] == 4.0 and saga["dynamodb_calls_per_order"] == 5.0


def test_figures__a_confirmation_after_a_sold_out_answer_at_the_intake_is_an_inversion() -> None:
    load = _load([
        (Outcome.SOLD_OUT, "o1", 1, 100.0, 100.1),
        (Outcome.ACCEPTED, "o2", 1, 100.5, 100.6),
    ])  # fmt: skip
    orders = [_order("o2", "confirmed", int(100.55 * 1_000_000), 101.0)]

    assert _run(orders, load, []).figures()["fcfs_inversions"] == 1


def test_figures__a_charge_for_an_order_not_confirmed_here_is_a_duplicate() -> None:
    load = _load([(Outcome.ACCEPTED, "o1", 1, 100.0, 100.1)])
    charges = [{"key": "o1", "status": "succeeded"}, {"key": "o9", "status": "succeeded"},
               {"key": "o8", "status": "declined"}]  # fmt: skip

    figures = _run([_order("o1", "confirmed", 1, 101.0)], load, charges).figures()

    assert figures["duplicate_charges"] == 1


def test_outbox_only_writes__are_those_that_touch_the_outbox_table_alone() -> None:
    writes = {
        "PutItem outbox": 92,  # heartbeats
        "UpdateItem outbox": 90,  # lease renewals
        "TransactWriteItems outbox": 85,  # marks of delivered records
        "TransactWriteItems inventory+orders+outbox+sagas": 277,  # purchases
        "TransactWriteItems idempotency+orders+sagas": 5906,  # saga commits
        "UpdateItem idempotency": 5906,
    }

    assert outbox_only_writes(writes, "outbox") == 92 + 90 + 85
    assert outbox_only_writes(writes, "outbox-of-another-stack") == 0
