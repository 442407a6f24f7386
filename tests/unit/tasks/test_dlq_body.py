"""``tasks.dlq``'s view of a dead letter: Celery messages decoded, anything else previewed, and
nothing a broken producer can send makes the operator's command crash."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.poison import poison_bodies
from flashsale.task_messages import task_message_body
from tasks.dlq import (
    KWARGS_CHARS,
    MAX_DEDUP_ID_LENGTH,
    PREVIEW_CHARS,
    BodySummary,
    DeadLetter,
    summarize_body,
)

TASK = "tasks.purchase.allocate"


def b64(value: bytes | str) -> str:
    return base64.b64encode(value.encode() if isinstance(value, str) else value).decode()


def assert_displayable(summary: BodySummary) -> None:
    """Every field short, printable and encodable, whatever the body held."""
    fields = {
        "task": (summary.task, PREVIEW_CHARS),
        "task_id": (summary.task_id, PREVIEW_CHARS),
        "kwargs": (summary.kwargs, KWARGS_CHARS),
        "raw": (summary.raw, PREVIEW_CHARS),
    }
    for name, (value, limit) in fields.items():
        if value is None:
            continue
        assert isinstance(value, str), name
        assert len(value) <= 10 * limit + 1, f"{name}: {len(value)} characters"  # escapes, "…"
        assert value.isprintable(), f"{name}: {value!r}"
        value.encode("utf-8")  # no lone surrogate left
    assert (summary.task is None) != (summary.raw is None), summary


def test_summarize_body__celery_message_gives_task_id_and_kwargs() -> None:
    body = task_message_body(TASK, {"batch": {"event_id": "gig"}}, routing_key="purchases.fifo",
                             task_id="task-1")  # fmt: skip

    summary = summarize_body(body)

    assert (summary.task, summary.task_id) == (TASK, "task-1")
    assert summary.kwargs == '{"batch": {"event_id": "gig"}}'
    assert summary.raw is None


def test_summarize_body__long_kwargs_are_clipped() -> None:
    body = task_message_body(TASK, {"requests": ["x" * 50] * 100}, routing_key="purchases.fifo")

    summary = summarize_body(body)

    assert summary.kwargs is not None and summary.kwargs.endswith("…")
    assert len(summary.kwargs) == KWARGS_CHARS + 1


def test_summarize_body__poison_kinds_are_decoded_or_previewed() -> None:
    bodies = poison_bodies("run-42", 5, "purchases.fifo")

    summaries = [summarize_body(body) for body in bodies]

    assert [s.task for s in summaries] == [None, None, "tasks.no_such_task", TASK, TASK]
    assert summaries[0].raw == "not a celery message run-42/0 \u00e9"
    assert summaries[1].raw == '{"run": "run-42", "n": 1}'
    assert all("run-42" in (s.kwargs or s.raw or "") for s in summaries)


def test_summarize_body__protocol_1_and_plain_json_envelopes() -> None:
    inner = b64(json.dumps({"task": "t.old", "id": 7, "kwargs": {"a": 1}}))
    envelope = {"body": inner, "properties": {"body_encoding": "base64"}}

    assert summarize_body(json.dumps(envelope)) == BodySummary("t.old", "7", '{"a": 1}')
    assert summarize_body(b64(json.dumps(envelope))).task == "t.old"


def test_summarize_body__control_characters_and_bad_utf8_are_escaped() -> None:
    assert summarize_body("a\nb\x00c\x1b[31m").raw == "a\\nb\\x00c\\x1b[31m"
    assert summarize_body(b"\xff\xfeok").raw == "\\xff\\xfeok"
    assert summarize_body(b64(b"\xff" * 10)).raw == b64(b"\xff" * 10)


def test_summarize_body__deep_nesting_is_not_a_crash() -> None:
    for nested in ("[" * 100_000, '{"headers": ' * 50_000):
        assert summarize_body(nested).raw is not None
        assert summarize_body(b64(nested)).raw is not None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
# Envelopes shaped like Celery's with any field of any type, base64 or not.
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "headers": st.one_of(
            json_values, st.fixed_dictionaries({"task": json_values, "id": json_values})
        ),
        "properties": st.one_of(json_values, st.just({"body_encoding": "base64"})),
        "body": st.one_of(
            json_values,
            st.builds(lambda v: b64(json.dumps(v)), json_values),
            st.builds(b64, st.binary(max_size=64)),
        ),
    },
)
bodies = st.one_of(
    st.text(),
    st.binary(),
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1),
    st.builds(b64, st.binary()),
    st.builds(lambda v: json.dumps(v), json_values),
    st.builds(lambda e: b64(json.dumps(e)), envelopes),
    st.builds(json.dumps, envelopes),
)


@settings(max_examples=500, deadline=None)
@given(bodies)
def test_summarize_body__never_raises_and_is_always_displayable(body: Any) -> None:
    assert_displayable(summarize_body(body))


def letter(dedup_id: str | None, message_id: str = "m-1") -> DeadLetter:
    return DeadLetter(message_id=message_id, receipt_handle="h", body="b", receive_count=4,
                      sent_at=None, group_id="g", dedup_id=dedup_id)  # fmt: skip


@given(st.one_of(st.none(), st.text(min_size=1, max_size=MAX_DEDUP_ID_LENGTH)), st.uuids())
def test_redrive_dedup_id__new_valid_and_stable_per_dead_letter(
    dedup_id: str | None, message_id: Any
) -> None:
    first = letter(dedup_id, str(message_id)).redrive_dedup_id()

    assert first != dedup_id
    assert len(first) <= MAX_DEDUP_ID_LENGTH
    assert first == letter(dedup_id, str(message_id)).redrive_dedup_id()
    assert first != letter(dedup_id, "another").redrive_dedup_id()
