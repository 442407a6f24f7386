"""Waiting for a condition, never for a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    *,
    interval: float = 0.2,
    explain: Callable[[], str] | None = None,
) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds, with
    what ``explain`` says of the state at that moment (where the missing work went)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            detail = f" ({explain()})" if explain is not None else ""
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}{detail}")
        time.sleep(interval)
