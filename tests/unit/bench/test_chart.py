"""``bench.chart``: per-second series from exact records, and the PNG itself."""

from __future__ import annotations

from pathlib import Path

from bench.chart import draw, latency_per_second, per_second, timeline


def test_per_second__counts_each_instant_in_its_second_and_drops_the_rest() -> None:
    assert per_second([100.0, 100.9, 101.0, 103.5, 99.9, 200.0], 100.0, 4) == [2, 1, 0, 1]


def test_latency_per_second__p50_and_p99_per_second_none_where_nothing_was_sent() -> None:
    series = latency_per_second([0.1, 0.2, 0.3, 2.5], [10.0, 20.0, 30.0, 5.0], 0.0, 3)

    assert series == {"p50_ms": [20.0, None, 5.0], "p99_ms": [30.0, None, 5.0]}


def test_draw__writes_a_png_of_the_three_panels(tmp_path: Path) -> None:
    samples = [{"at": 10.0 + s, "depths": {"purchases": 5 - s, "payments": s}} for s in range(5)]
    series = timeline(
        start=10.0,
        end=15.0,
        decisions=[10.5, 11.2, 11.7],
        answers=[10.1, 10.2],
        completions=[13.0],
        attempt_sent_at=[10.0, 10.05],
        attempt_latency_ms=[12.0, 250.0],
        samples=samples,
    )

    path = draw(series, tmp_path / "chart.png", title="test")

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert series["decisions_per_s"] == [1, 2, 0, 0, 0]
    assert series["queue_depth"]["purchases"] == [5, 4, 3, 2, 1]
