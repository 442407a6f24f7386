"""``bench.profiles``: py-spy's collapsed stacks summed into own time per function and module."""

from __future__ import annotations

from bench.profiles import summarize

RAW = """\
main (app.py:10);handle (moto/table.py:800);query (moto/dynamodb/models/table.py:850) 6
main (app.py:10);handle (moto/table.py:800);query (moto/dynamodb/models/table.py:851) 2
main (app.py:10);send (socket.py:5) 2
not a stack line
"""


def test_summarize__own_time_per_function_merges_its_lines() -> None:
    summary = summarize(RAW)

    assert summary["samples"] == 10
    assert summary["own_time_pct"] == {"query (table.py)": 80.0, "send (socket.py)": 20.0}
    assert summary["own_time_pct_by_module"] == {"table.py": 80.0, "socket.py": 20.0}


def test_summarize__an_empty_profile_has_no_shares() -> None:
    assert summarize("") == {"samples": 0, "own_time_pct": {}, "own_time_pct_by_module": {}}
