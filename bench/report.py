"""Tables for people: a sale's figures, and the benchmark against its baseline."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.table import Table

# Rows of the closing table: (label, key, what must hold).
_ROWS = [
    ("requests", "requests", ""),
    ("accepted (unique)", "accepted", ""),
    ("repeated request ids", "duplicates", "one order each"),
    ("refused at the intake", "invalid", "never enqueued"),
    ("confirmed (a seat held)", "confirmed", ""),
    ("sold out", "sold_out", ""),
    ("rejected", "rejected", ""),
    ("dead-lettered", "dead_lettered", "poison messages, exact"),
    ("lost", "lost", "must be 0"),
    ("seats sold / capacity", None, ""),
    ("oversold", "oversold", "must be 0"),
    ("first-come-first-served inversions", "fcfs_inversions", "must be 0"),
    ("duration (s)", "duration_s", ""),
    ("throughput (requests/s)", "throughput_rps", ""),
    ("decision latency p50 / p99 (ms)", None, ""),
    ("AWS calls per request", "aws_calls_per_request", ""),
]


def _cell(figures: Mapping[str, Any], label: str, key: str | None) -> str:
    if key is not None:
        return f"{figures[key]:,}" if isinstance(figures[key], int) else str(figures[key])
    if label.startswith("seats"):
        return f"{figures['sold']:,} / {figures['seats']:,}"
    return f"{figures['p50_latency_ms']:,.0f} / {figures['p99_latency_ms']:,.0f}"


def sale_table(figures: Mapping[str, Any], *, title: str) -> Table:
    table = Table(title=title)
    table.add_column("")
    table.add_column("", justify="right")
    table.add_column("", style="dim")
    for label, key, rule in _ROWS:
        bad = rule == "must be 0" and key is not None and figures[key] != 0
        table.add_row(label, _cell(figures, label, key), rule, style="bold red" if bad else None)
    return table


def comparison_table(
    tuned: Mapping[str, Any], base: Mapping[str, Any], ratios: Mapping[str, float]
) -> Table:
    table = Table(title="make bench: flashsale vs baseline (same run)")
    for column in ("", "flashsale", "baseline (Celery defaults)"):
        table.add_column(column, justify="right" if column else "left")
    for label, key, _ in _ROWS:
        table.add_row(label, _cell(tuned, label, key), _cell(base, label, key))
    table.add_row("throughput ratio", f"{ratios['throughput']}x", "1x", style="bold")
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
