"""The benchmark's chart: queue depth, throughput and intake latency over the run, one PNG.

Per-second series are built from exact records, not from the sampler alone: seat decisions
from the orders' ``decided_at_ms`` and the intake's sold-out answers, saga completions from
each saga's last history entry, latency from every HTTP answer the load recorded. Only the
queue depths are sampled (about once a second). The series go into the JSON too
(``timeline``), so the chart can be redrawn without running the sale again.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.ledger import percentile

LATENCY_TARGET_MS = 200.0


def per_second(times: Iterable[float], start: float, seconds: int) -> list[int]:
    """How many of ``times`` (epoch seconds) fall in each second after ``start``."""
    counts = [0] * seconds
    for t in times:
        index = math.floor(t - start)
        if 0 <= index < seconds:
            counts[index] += 1
    return counts


def latency_per_second(
    sent_at: Sequence[float], latency_ms: Sequence[float], start: float, seconds: int
) -> dict[str, list[float | None]]:
    """p50 and p99 of the answers sent in each second (None where there were none)."""
    buckets: dict[int, list[float]] = defaultdict(list)
    for t, ms in zip(sent_at, latency_ms, strict=True):
        index = math.floor(t - start)
        if 0 <= index < seconds:
            buckets[index].append(ms)
    p50: list[float | None] = []
    p99: list[float | None] = []
    for second in range(seconds):
        values = buckets.get(second)
        p50.append(round(percentile(values, 50), 1) if values else None)
        p99.append(round(percentile(values, 99), 1) if values else None)
    return {"p50_ms": p50, "p99_ms": p99}


def timeline(
    *,
    start: float,
    end: float,
    decisions: Iterable[float],
    answers: Iterable[float],
    completions: Iterable[float],
    attempt_sent_at: Sequence[float],
    attempt_latency_ms: Sequence[float],
    samples: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """Every series of the chart, on one time axis (seconds since ``start``)."""
    seconds = max(1, math.ceil(end - start))
    depth_names = sorted({q for s in samples for q in s["depths"]})
    return {
        "start": start,
        "seconds": seconds,
        "decisions_per_s": per_second(decisions, start, seconds),
        "intake_answers_per_s": per_second(answers, start, seconds),
        "sagas_completed_per_s": per_second(completions, start, seconds),
        "intake_latency": latency_per_second(attempt_sent_at, attempt_latency_ms, start, seconds),
        "queue_depth": {
            "t": [round(s["at"] - start, 2) for s in samples],
            **{q: [s["depths"].get(q) for s in samples] for q in depth_names},
        },
    }


def draw(series: Mapping[str, Any], path: Path, *, title: str) -> Path:
    """Three panels sharing the time axis; written as a PNG (matplotlib's Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds = int(series["seconds"])
    t = list(range(seconds))
    figure, (depth, rate, latency) = plt.subplots(
        3, 1, figsize=(11, 9.5), sharex=True, constrained_layout=True
    )
    figure.suptitle(title)

    queues = series["queue_depth"]
    for name, values in queues.items():
        if name == "t":
            continue
        points = [(x, v) for x, v in zip(queues["t"], values, strict=True) if v is not None]
        if points and max(v for _, v in points) > 0:
            depth.plot([x for x, _ in points], [v for _, v in points], label=name)
    depth.set_ylabel("messages on the queue")
    depth.set_title("queue depth (visible + in flight + delayed; sampled ~1/s)", fontsize=10)
    depth.legend(loc="upper right", fontsize=8)
    depth.grid(alpha=0.3)

    rate.plot(t, series["intake_answers_per_s"], label="intake answers/s (HTTP)", alpha=0.6)
    rate.plot(t, series["decisions_per_s"], label="seat decisions/s", linewidth=2)
    rate.plot(t, series["sagas_completed_per_s"], label="sagas completed/s", linewidth=2)
    rate.set_ylabel("per second")
    rate.set_title("throughput", fontsize=10)
    rate.legend(loc="upper right", fontsize=8)
    rate.grid(alpha=0.3)

    lat = series["intake_latency"]
    for key, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
        points = [(x, v) for x, v in zip(t, lat[key], strict=True) if v is not None]
        latency.plot([x for x, _ in points], [v for _, v in points], label=f"intake {label}")
    latency.axhline(LATENCY_TARGET_MS, color="red", linestyle="--", linewidth=1, label="target p99")
    latency.set_yscale("log")
    latency.set_ylabel("ms (log)")
    latency.set_xlabel("seconds since the first request")
    latency.set_title("intake latency of the answers sent in each second", fontsize=10)
    latency.legend(loc="upper right", fontsize=8)
    latency.grid(alpha=0.3, which="both")

    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
