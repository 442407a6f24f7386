"""Issue 6's targets, each checked against what ``make bench`` measured, and the ratios to the
baseline. Pure functions over the figures, so the verdicts are tested without a stack."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Verdict:
    target: str
    measured: str
    met: bool


def _ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else 0.0


def bench_ratios(tuned: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, float]:
    """flashsale over the baseline: throughput (more is better), and how many times fewer
    calls and CPU per request it needs (more is better too)."""
    return {
        "throughput": _ratio(tuned["decisions_per_s"], base["throughput_rps"]),
        "aws_calls_per_request": _ratio(
            base["aws_calls_per_request"], tuned["aws_calls_per_request"]
        ),
        "sqs_calls_per_request": _ratio(
            base["sqs_calls_per_request"], tuned["sqs_calls_per_request"]
        ),
        "dynamodb_calls_per_request": _ratio(
            base["dynamodb_calls_per_request"], tuned["dynamodb_calls_per_request"]
        ),
        "cpu_per_request": _ratio(base["cpu_ms_per_request"], tuned["cpu_ms_per_request"]),
    }


def _saga_writes(saga: Mapping[str, Any]) -> str:
    writes, calls = saga["dynamodb_writes_per_order"], saga["dynamodb_calls_per_order"]
    outbox_only = saga.get("dynamodb_writes_outbox_only_per_order")
    if not outbox_only:
        return f"{writes} ({calls} calls)"
    return (
        f"{writes} ({calls} calls): {writes - outbox_only:.3f} by the saga, {outbox_only} "
        "the relay's leases and marks"
    )


def targets(tuned: Mapping[str, Any], ratios: Mapping[str, float]) -> list[dict[str, Any]]:
    """Every target with the figure that decides it."""
    within = tuned["decided_within_s"]
    undecided = tuned["lost"] + tuned["rejected_by_backpressure"] + tuned["no_answer"]
    latency = tuned["intake_latency_ms"]
    saga = tuned["saga"]
    ceiling = (saga.get("emulator_ceiling") or {}).get("orders_per_s")
    verdicts = [
        Verdict(
            "every request decided within 90 s",
            f"max {within['max']} s (p99 {within['p99']} s), {undecided} undecided",
            within["max"] <= 90 and undecided == 0,
        ),
        Verdict(
            "intake p99 < 200 ms during the spike",
            f"p99 {latency['p99_ms']} ms (p50 {latency['p50_ms']} ms, max {latency['max_ms']} ms)",
            latency["p99_ms"] < 200,
        ),
        Verdict("0 oversold", str(tuned["oversold"]), tuned["oversold"] == 0),
        Verdict(
            "0 first-come-first-served inversions",
            str(tuned["fcfs_inversions"]),
            tuned["fcfs_inversions"] == 0,
        ),
        Verdict(
            "0 duplicate charges", str(tuned["duplicate_charges"]), tuned["duplicate_charges"] == 0
        ),
        Verdict(
            "purchase path: <= 0.2 SQS calls per request",
            str(tuned["sqs_calls_per_request"]),
            tuned["sqs_calls_per_request"] <= 0.2,
        ),
        Verdict(
            "purchase path: <= 0.1 DynamoDB calls per request",
            str(tuned["dynamodb_calls_per_request"]),
            tuned["dynamodb_calls_per_request"] <= 0.1,
        ),
        Verdict(
            "rest of the saga: <= 2 DynamoDB writes per confirmed order",
            _saga_writes(saga),
            saga["dynamodb_writes_per_order"] <= 2,
        ),
        Verdict(
            ">= 10x the baseline's throughput",
            f"{ratios['throughput']}x",
            ratios["throughput"] >= 10,
        ),
        Verdict(
            "saga completion next to the emulator's ceiling (reported)",
            f"{saga['orders_per_s']} orders/s; ceiling alone {ceiling} orders/s",
            saga["sagas_unfinished"] == 0 and saga["sagas_quarantined"] == 0,
        ),
    ]
    return [asdict(v) for v in verdicts]
