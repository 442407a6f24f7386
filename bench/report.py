"""Tables for people: a sale's figures, and the benchmark against its baseline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table

# Rows of the demo's sale table: (label, key, what must hold).
_ROWS = [
    ("requests (HTTP)", "requests", ""),
    ("accepted (unique orders)", "accepted", "queued, decided by the workers"),
    ("repeated request ids", "duplicates", "one order each"),
    ("refused at the intake (4xx)", "invalid", "never enqueued"),
    ("sold out at the intake", "sold_out_at_intake", "answered at the edge, never queued"),
    ("refused by backpressure (503)", "rejected_by_backpressure", "after Retry-After retries"),
    ("confirmed (a seat held)", "confirmed", ""),
    ("sold out (queued)", "sold_out", ""),
    ("rejected", "rejected", ""),
    ("dead-lettered", "dead_lettered", "poison messages, exact"),
    ("lost", "lost", "must be 0"),
    ("seats sold / capacity", None, ""),
    ("oversold", "oversold", "must be 0"),
    ("first-come-first-served inversions", "fcfs_inversions", "must be 0"),
    ("spike: first request to last decision (s)", "duration_s", ""),
    ("seat decisions per second", "throughput_rps", ""),
    ("intake latency p50 / p99 (ms)", None, ""),
    ("AWS calls per request (purchase path)", "aws_calls_per_request", ""),
]


def _cell(figures: Mapping[str, Any], label: str, key: str | None) -> str:
    if key is not None:
        return f"{figures[key]:,}" if isinstance(figures[key], int) else str(figures[key])
    if label.startswith("seats"):
        return f"{figures['sold']:,} / {figures['seats']:,}"
    return f"{figures['p50_latency_ms']:,.0f} / {figures['p99_latency_ms']:,.0f}"


def sale_table(figures: Mapping[str, Any], *, title: str) -> Table:
    """The demo's sale through the HTTP intake (``bench.spike.sale_rows`` gives the keys)."""
    table = Table(title=title)
    table.add_column("")
    table.add_column("", justify="right")
    table.add_column("", style="dim")
    for label, key, rule in _ROWS:
        bad = rule == "must be 0" and key is not None and figures[key] != 0
        table.add_row(label, _cell(figures, label, key), rule, style="bold red" if bad else None)
    return table


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}" if value < 1 else f"{value:,.1f}"
    return str(value)


def bench_table(
    tuned: Mapping[str, Any], base: Mapping[str, Any], ratios: Mapping[str, float]
) -> Table:
    """``make bench``: the sale through the intake against the baseline, per request."""
    table = Table(title="make bench: flashsale (HTTP intake, whole pipeline) vs baseline")
    for column in ("", "flashsale", "baseline (Celery defaults)", "ratio"):
        table.add_column(column, justify="right" if column else "left")
    within = tuned["decided_within_s"]
    rows = [
        ("requests", tuned["requests"], base["requests"], ""),
        ("accepted (queued)", tuned["accepted"], base["accepted"], ""),
        ("sold out at the intake", tuned["sold_out_at_intake"], 0, ""),
        ("seats sold / capacity", f"{tuned['sold']:,} / {tuned['seats']:,}",
         f"{base['sold']:,} / {base['seats']:,}", ""),
        ("oversold / FCFS inversions / lost",
         f"{tuned['oversold']} / {tuned['fcfs_inversions']} / {tuned['lost']}",
         f"{base['oversold']} / {base['fcfs_inversions']} / {base['lost']}", ""),
        ("seat decisions per second", tuned["decisions_per_s"], base["throughput_rps"],
         f"{ratios['throughput']}x"),
        ("SQS calls per request", tuned["sqs_calls_per_request"],
         base["sqs_calls_per_request"], f"{ratios['sqs_calls_per_request']}x fewer"),
        ("DynamoDB calls per request", tuned["dynamodb_calls_per_request"],
         base["dynamodb_calls_per_request"], f"{ratios['dynamodb_calls_per_request']}x fewer"),
        ("CPU ms per request (path processes)", tuned["cpu_ms_per_request"],
         base["cpu_ms_per_request"], f"{ratios['cpu_per_request']}x less"),
        ("request to decision p50 / p99 (s)", f"{within['p50']} / {within['p99']}",
         f"{base['p50_latency_ms'] / 1000:.1f} / {base['p99_latency_ms'] / 1000:.1f}", ""),
        ("intake latency p50 / p99 (ms)",
         f"{tuned['intake_latency_ms']['p50_ms']} / {tuned['intake_latency_ms']['p99_ms']}",
         "-", ""),
        ("503 + Retry-After answers (retried)", tuned["http_503_answers"], "-", ""),
        ("refused by backpressure in the end", tuned["rejected_by_backpressure"], "-", ""),
        ("sagas completed per second", tuned["saga"]["orders_per_s"], "-", ""),
    ]  # fmt: skip
    for label, ours, theirs, ratio in rows:
        table.add_row(label, _fmt(ours), _fmt(theirs), ratio)
    return table


def targets_table(verdicts: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title="issue 6's targets")
    table.add_column("target")
    table.add_column("measured", justify="right")
    table.add_column("met")
    for verdict in verdicts:
        met = bool(verdict["met"])
        table.add_row(
            verdict["target"],
            verdict["measured"],
            "yes" if met else "no",
            style=None if met else "bold red",
        )
    return table


# Rows of the saga table: (label, key, what must hold).
_SAGA_ROWS = [
    ("orders ticketed", "ticketed", "their seats = capacity when buyers suffice"),
    ("orders released (declined, expired)", "released", "their seats back on sale"),
    ("orders still holding seats", "still_held", "must be 0"),
    ("charges (provider ledger)", "charges", ""),
    ("declines", "declines", ""),
    ("refunds", "refunds", ""),
    ("voided payment keys", "voids", ""),
    ("captured", "captured_cents", "= ticketed seats x price"),
    ("sagas completed", "sagas_completed", "= ticketed"),
    ("sagas compensated", "sagas_compensated", "= released"),
    ("sagas quarantined", "sagas_quarantined", "must be 0"),
    ("sagas unfinished", "sagas_unfinished", "must be 0"),
    ("confirmation e-mails (SES)", "confirmation_emails", "= ticketed, once each"),
    ("cancellation e-mails (SES)", "cancellation_emails", "= released"),
    ("SMS (SNS)", "sms", "buyers who gave a phone"),
]


def saga_table(figures: Mapping[str, Any], *, seats: int) -> Table:
    """What the purchase sagas did, next to the seats sold."""
    table = Table(title=f"Purchase sagas ({seats:,} seats)")
    table.add_column("")
    table.add_column("", justify="right")
    table.add_column("", style="dim")
    for label, key, rule in _SAGA_ROWS:
        value = figures[key]
        cell = f"{value / 100:,.2f}" if key == "captured_cents" else f"{value:,}"
        bad = rule == "must be 0" and value != 0
        table.add_row(label, cell, rule, style="bold red" if bad else None)
    return table
