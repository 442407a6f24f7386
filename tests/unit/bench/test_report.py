"""The closing tables: every figure shown, broken invariants in red."""

from __future__ import annotations

from rich.console import Console

from bench.report import saga_table

FIGURES = {
    "ticketed": 90, "released": 10, "still_held": 0, "charges": 90, "declines": 10,
    "refunds": 0, "voids": 0, "captured_cents": 450_000, "sagas_completed": 90,
    "sagas_compensated": 10, "sagas_quarantined": 0, "sagas_unfinished": 1,
    "confirmation_emails": 90, "cancellation_emails": 10, "sms": 18,
}  # fmt: skip


def render(figures: dict[str, int]) -> str:
    console = Console(record=True, width=120, color_system="truecolor")
    console.print(saga_table(figures, seats=100))
    return console.export_text(styles=True)


def test_saga_table__shows_money_in_currency_units_and_flags_unfinished_sagas() -> None:
    text = render(FIGURES)

    assert "4,500.00" in text
    unfinished = next(line for line in text.splitlines() if "sagas unfinished" in line)
    assert "\x1b[1;31m" in unfinished  # bold red: must be 0
    quarantined = next(line for line in text.splitlines() if "sagas quarantined" in line)
    assert "\x1b[1;31m" not in quarantined
