"""``bench.poison``: every poison kind carries the run id, so a DLQ count is exact per run."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from bench.poison import PURCHASE_TASK, _mentions, count_dead_letters, poison_bodies
from flashsale.names import QueueRole

RUN = "run-5f2a"
KINDS = 5


@pytest.fixture
def bodies() -> list[str]:
    """Two of each poison kind."""
    return poison_bodies(RUN, 2 * KINDS, QueueRole.PURCHASES.celery_queue)


def celery_task_name(body: str) -> str | None:
    try:
        return json.loads(base64.b64decode(body, validate=True))["headers"]["task"]
    except ValueError:
        return None


def test_poison_bodies__cycles_through_every_kind(bodies: list[str]) -> None:
    assert len(set(bodies)) == len(bodies)
    assert [celery_task_name(body) for body in bodies[:KINDS]] == [
        None, None, "tasks.no_such_task", PURCHASE_TASK, PURCHASE_TASK,
    ]  # fmt: skip
    assert json.loads(bodies[1]) == {"run": RUN, "n": 1}


@pytest.mark.parametrize("kind", range(KINDS))
def test_mentions__finds_the_run_id_in_every_poison_kind(bodies: list[str], kind: int) -> None:
    assert _mentions(bodies[kind], RUN)
    assert _mentions(bodies[kind + KINDS], RUN)


@pytest.mark.parametrize("kind", range(KINDS))
def test_mentions__does_not_claim_another_runs_poison(bodies: list[str], kind: int) -> None:
    assert not _mentions(bodies[kind], "run-other")


@pytest.mark.parametrize(
    "body",
    ["", "not base64 at all \u00e9", base64.b64encode(b"\xff\xfe").decode(),
     base64.b64encode(b'{"body": "%%%"}').decode(), base64.b64encode(b"[1, 2]").decode()],
)  # fmt: skip
def test_mentions__says_no_to_an_unrelated_body_without_raising(body: str) -> None:
    assert not _mentions(body, RUN)


class ScriptedDlq:
    """A DLQ whose receives return these pages, then nothing."""

    def __init__(self, pages: list[list[dict[str, Any]]]) -> None:
        self._pages = pages

    def receive_message(self, **_: Any) -> dict[str, Any]:
        return {"Messages": self._pages.pop(0)} if self._pages else {}


def test_count_dead_letters__counts_this_runs_messages_once_each(bodies: list[str]) -> None:
    mine = [{"MessageId": f"m{n}", "Body": body} for n, body in enumerate(bodies)]
    other = poison_bodies("run-other", 3, "purchases.fifo")
    theirs = [{"MessageId": f"x{n}", "Body": body} for n, body in enumerate(other)]
    dlq = ScriptedDlq([mine[:6] + theirs, mine[4:], mine[:2]])

    assert count_dead_letters(dlq, "dlq-url", RUN) == len(bodies)
