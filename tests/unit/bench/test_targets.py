"""``bench.targets``: each of issue 6's targets decided by the figure that measures it."""

from __future__ import annotations

from typing import Any

from bench.targets import bench_ratios, targets


def _figures(**changes: Any) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "decided_within_s": {"p50": 10.0, "p99": 40.0, "max": 45.0},
        "lost": 0, "rejected_by_backpressure": 0, "no_answer": 0,
        "intake_latency_ms": {"p50_ms": 20.0, "p99_ms": 150.0, "max_ms": 400.0},
        "oversold": 0, "fcfs_inversions": 0, "duplicate_charges": 0,
        "sqs_calls_per_request": 0.05, "dynamodb_calls_per_request": 0.07,
        "decisions_per_s": 900.0, "aws_calls_per_request": 0.12, "cpu_ms_per_request": 1.0,
        "saga": {"dynamodb_writes_per_order": 1.5, "dynamodb_calls_per_order": 4.0,
                 "orders_per_s": 30.0, "sagas_unfinished": 0, "sagas_quarantined": 0,
                 "emulator_ceiling": {"orders_per_s": 40.0}},
    }  # fmt: skip
    return figures | changes


BASE = {"throughput_rps": 30.0, "aws_calls_per_request": 4.5, "sqs_calls_per_request": 2.4,
        "dynamodb_calls_per_request": 2.1, "cpu_ms_per_request": 20.0}  # fmt: skip


def test_targets__all_met_when_every_figure_is_within_its_bound() -> None:
    verdicts = targets(_figures(), bench_ratios(_figures(), BASE))

    assert all(v["met"] for v in verdicts), [v for v in verdicts if not v["met"]]
    assert bench_ratios(_figures(), BASE)["throughput"] == 30.0


def test_targets__a_request_refused_by_backpressure_is_one_not_decided() -> None:
    figures = _figures(rejected_by_backpressure=1)

    verdict = targets(figures, bench_ratios(figures, BASE))[0]

    assert not verdict["met"] and "1 undecided" in verdict["measured"]


def test_targets__misses_are_reported_with_their_figure() -> None:
    figures = _figures(
        intake_latency_ms={"p50_ms": 50.0, "p99_ms": 250.0, "max_ms": 900.0},
        decisions_per_s=200.0,
    )

    missed = {v["target"]: v["measured"] for v in targets(figures, bench_ratios(figures, BASE))
              if not v["met"]}  # fmt: skip

    assert set(missed) == {"intake p99 < 200 ms during the spike",
                           ">= 10x the baseline's throughput"}  # fmt: skip
    assert "250.0" in missed["intake p99 < 200 ms during the spike"]


def test_targets__saga_writes_show_the_relays_share_apart_and_count_it_all() -> None:
    saga = _figures()["saga"] | {"dynamodb_writes_per_order": 2.045,
                                 "dynamodb_writes_outbox_only_per_order": 0.045}  # fmt: skip
    figures = _figures(saga=saga)

    (verdict,) = [v for v in targets(figures, bench_ratios(figures, BASE))
                  if v["target"].startswith("rest of the saga")]  # fmt: skip

    assert not verdict["met"]  # the relay's bookkeeping counts against the target too
    assert verdict["measured"] == (
        "2.045 (4.0 calls): 2.000 by the saga, 0.045 the relay's leases and marks"
    )
