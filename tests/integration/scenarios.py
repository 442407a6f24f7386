"""One table for every failure scenario: what was broken, exact counts, time, pass or fail.

A scenario test is marked ``@pytest.mark.scenario("name", injected="what was broken")`` and
fills its row through the ``scenario`` fixture with the counts it checked: how many units it
sent, how many reached their final state (processed), how many ended in a DLQ (or were
parked), and how many duplicate deliveries or requests the system absorbed. ``lost`` is not
reported by the test but derived (sent - processed - dead-lettered), so a row cannot claim
"nothing lost" while its own counts disagree. The row's result is the test's own pytest
outcome (``conftest.pytest_runtest_makereport``), never a second judgement; the table is
printed once, at the end of the session, and written as JSON and as the README's Markdown.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rich import box
from rich.console import Console
from rich.table import Table

SCENARIOS: pytest.StashKey[dict[str, Scenario]] = pytest.StashKey()
SESSION_START: pytest.StashKey[float] = pytest.StashKey()


@dataclass
class Scenario:
    """One row: filled by the test through ``record``, judged by pytest."""

    name: str
    injected: str
    nodeid: str
    slow: bool
    unit: str = "messages"
    sent: int | None = None
    processed: int | None = None
    dead_lettered: int = 0
    duplicated: int = 0
    observed: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None
    outcome: str = "not run"

    @property
    def lost(self) -> int | None:
        """Derived, never reported: what was sent and reached no final state."""
        if self.sent is None or self.processed is None:
            return None
        return self.sent - self.processed - self.dead_lettered

    def record(
        self,
        *,
        sent: int,
        processed: int,
        dead_lettered: int = 0,
        duplicated: int = 0,
        unit: str | None = None,
        **observed: Any,
    ) -> None:
        """The test's exact counts (call it before its assertions, so a failing row still
        shows what was seen); ``observed`` adds figures worth a column (max depth...)."""
        self.sent, self.processed = sent, processed
        self.dead_lettered, self.duplicated = dead_lettered, duplicated
        if unit is not None:
            self.unit = unit
        self.observed.update(observed)

    def observe(self, **observed: Any) -> None:
        """Figures seen along the way (times, counts of injected faults)."""
        self.observed.update(observed)

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"lost": self.lost}


def declare(item: pytest.Item) -> Scenario | None:
    """The row of a test marked ``scenario``; its name may use the test's parameters
    (``"relay SIGKILLed at {point}"``)."""
    marker = item.get_closest_marker("scenario")
    if marker is None:
        return None
    params = getattr(getattr(item, "callspec", None), "params", {})
    template = marker.args[0] if marker.args else marker.kwargs.get("name", item.name)
    values = {k: getattr(v, "value", v) for k, v in params.items()}
    return Scenario(
        name=template.format(**values),
        injected=str(marker.kwargs.get("injected", "")).format(**values),
        unit=str(marker.kwargs.get("unit", "messages")),
        nodeid=item.nodeid,
        slow=item.get_closest_marker("slow") is not None,
    )


def rows(config: pytest.Config) -> dict[str, Scenario]:
    return config.stash.setdefault(SCENARIOS, {})


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _observed(values: dict[str, Any]) -> str:
    """``released_after_s=0.2, held=8`` as "released after 0.2 s; held 8"."""

    def show(key: str, value: Any) -> str:
        label, unit = (key[:-2], " s") if key.endswith("_s") else (key, "")
        if isinstance(value, float):
            text = f"{value:.1f}"
        elif isinstance(value, int):
            text = f"{value:,}"
        else:
            text = str(value)
        return f"{label.replace('_', ' ')} {text}{unit}"

    return "; ".join(show(key, value) for key, value in values.items())


COLUMNS = [
    ("scenario", "left"),
    ("injected", "left"),
    ("unit", "left"),
    ("sent", "right"),
    ("processed", "right"),
    ("dead-lettered", "right"),
    ("lost", "right"),
    ("duplicated", "right"),
    ("time (s)", "right"),
    ("result", "left"),
    ("observed", "left"),
]


def _cells(row: Scenario, slow_mark: str) -> list[str]:
    """One row's cells, in ``COLUMNS`` order, for the terminal and the Markdown table."""
    return [
        row.name + (slow_mark if row.slow else ""),
        row.injected,
        row.unit,
        _count(row.sent),
        _count(row.processed),
        _count(row.dead_lettered),
        _count(row.lost),
        _count(row.duplicated),
        "-" if row.seconds is None else f"{row.seconds:.1f}",
        {"passed": "pass", "failed": "FAIL"}.get(row.outcome, row.outcome),
        _observed(row.observed),
    ]


def render(scenarios: Iterable[Scenario], title: str) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAVY, show_lines=False, title_justify="left")
    for header, justify in COLUMNS:
        table.add_column(header, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for row in scenarios:
        table.add_row(*_cells(row, " (slow)"))
    return table


def markdown(scenarios: Iterable[Scenario]) -> str:
    """The same table in Markdown, as the README shows it."""
    lines = [
        "| " + " | ".join(header for header, _ in COLUMNS) + " |",
        "|" + "|".join("--:" if justify == "right" else "---" for _, justify in COLUMNS) + "|",
    ]
    for row in scenarios:
        cells = [cell.replace("|", "\\|") for cell in _cells(row, " *(slow)*")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report(config: pytest.Config, write: Any) -> None:
    """Print the session's table through ``write`` and write it as JSON."""
    found = list(rows(config).values())
    if not found:
        return
    started = config.stash.get(SESSION_START, time.time())
    wall = time.time() - started
    passed = sum(r.outcome == "passed" for r in found)
    title = (
        f"failure scenarios: {passed} of {len(found)} passed "
        f"({datetime.now(UTC):%Y-%m-%d}, session {wall / 60:.1f} min)"
    )
    console = Console(width=220, record=True, force_terminal=False, color_system=None)
    with console.capture() as captured:
        console.print(render(found, title))
    write(captured.get())
    target = os.environ.get("FLASHSALE_SCENARIOS_JSON", "")
    if target:
        document = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "selection": config.getoption("markexpr", "") or "",
            "session_seconds": round(wall, 1),
            "scenarios": [r.to_json() for r in found],
        }
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(json.dumps(document, indent=2, default=str) + "\n")
        Path(target).with_suffix(".md").write_text(f"{title}\n\n{markdown(found)}")


# --- counting from the workers' own logs -------------------------------------------------------

_ALLOCATED = re.compile(r"purchase\.batch_allocated\s.*")
_FIELD = re.compile(r"(\w+)=(\S+)")


def allocation_lines(logs: Iterable[Path], event_id: str) -> list[dict[str, str]]:
    """The ``purchase.batch_allocated`` lines of ``event_id`` in these worker logs, as fields
    (confirmed, sold_out, rejected, duplicates...): one per executed purchase task."""
    found = []
    for log in logs:
        if not log.exists():
            continue
        for line in log.read_text(errors="replace").splitlines():
            match = _ALLOCATED.search(line)
            if match is None:
                continue
            fields = dict(_FIELD.findall(match.group(0)))
            if fields.get("event_id") == event_id:
                found.append(fields)
    return found


def redecided(logs: Iterable[Path], event_id: str) -> int:
    """Requests that purchase tasks found already decided: each a duplicate delivery (a
    redelivered or repeated message) that the orders' conditional writes made a no-op."""
    return sum(int(f.get("duplicates", 0)) for f in allocation_lines(logs, event_id))


def worker_logs(log_dir: Path) -> list[Path]:
    """Every process log a ``Fleet`` wrote in ``log_dir`` (restarted ones under new names)."""
    return sorted(log_dir.glob("*.log"))
