"""Where the CPU goes during the spike: ``py-spy record`` on the processes that bound it.

``make bench`` runs without it (sampling costs CPU on a 2-core machine); ``python -m
bench.flash_sale bench --profile 30`` samples the emulators, the intake, a purchase worker and
the saga worker for the first 30 s of the load and writes their collapsed stacks (py-spy's
``raw`` format, one ``frame;frame;...;leaf count`` per line) to ``bench/results/profiles/``,
plus the top functions by own time into the JSON.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROFILES = Path("bench/results/profiles")
RATE_HZ = 50
_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME_LINE = re.compile(r":\d+\)$")


def py_spy() -> str | None:
    """The py-spy executable of this virtualenv (or on PATH), if installed."""
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


@dataclass
class Profiles:
    """``py-spy record`` processes, one per profiled process."""

    outputs: dict[str, Path]
    popens: dict[str, subprocess.Popen[bytes]]

    @classmethod
    def start(cls, targets: Mapping[str, int], seconds: float, out_dir: Path) -> Profiles:
        executable = py_spy()
        if executable is None:
            return cls({}, {})
        out_dir.mkdir(parents=True, exist_ok=True)
        outputs: dict[str, Path] = {}
        popens: dict[str, subprocess.Popen[bytes]] = {}
        for name, pid in targets.items():
            output = out_dir / f"{name}.txt"
            command = [
                executable, "record", "--pid", str(pid), "--duration", str(int(seconds)),
                "--rate", str(RATE_HZ), "--format", "raw", "--nonblocking", "--subprocesses",
                "--output", str(output),
            ]  # fmt: skip
            popens[name] = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            outputs[name] = output
        return cls(outputs, popens)

    def wait(self, timeout: float) -> None:
        for popen in self.popens.values():
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                popen.terminate()
                popen.wait()

    def summaries(self, top: int = 12) -> dict[str, dict[str, object]]:
        return {
            name: summarize(path.read_text(), top)
            for name, path in self.outputs.items()
            if path.exists()
        }


def _function(frame: str) -> str:
    """``name (path/to/module.py:123)`` -> ``name (module.py)``: lines of one function merge."""
    frame = _FRAME_LINE.sub(")", frame.strip())
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1]}" if where else name


def summarize(raw: str, top: int = 12) -> dict[str, object]:
    """Samples, and the functions with the most own time (share of samples, %)."""
    own: Counter[str] = Counter()
    modules: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        count = int(match["count"])
        leaf = _function(match["stack"].split(";")[-1])
        own[leaf] += count
        modules[leaf.partition(" (")[2].rstrip(")") or leaf] += count
        total += count

    def shares(counter: Counter[str]) -> dict[str, float]:
        return {key: round(100 * n / total, 1) for key, n in counter.most_common(top)}

    return {
        "samples": total,
        "own_time_pct": shares(own) if total else {},
        "own_time_pct_by_module": shares(modules) if total else {},
    }
