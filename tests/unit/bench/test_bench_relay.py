"""``bench.relay`` against moto in process: both relays deliver everything, calls are exact."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws

from bench.relay import RelaySpec, figures, make_records, measure_relay, ratios
from outbox.records import shard_of

EVENTS, PER_AGGREGATE, SHARDS = 30, 3, 8
RUN = "unit"
SPEC = RelaySpec(events=EVENTS, per_aggregate=PER_AGGREGATE, shards=SHARDS)


@pytest.fixture
def document(aws_offline: None) -> Iterator[dict[str, Any]]:
    with mock_aws():
        # No emulator endpoints: the calls are the ones the relays' own clients sent.
        yield measure_relay(
            {}, EVENTS, per_aggregate=PER_AGGREGATE, shards=SHARDS, lease_seconds=600, run=RUN
        )


def shards_with_work() -> int:
    """Shards holding at least one of the measured relay's aggregates."""
    return len({shard_of(r.aggregate_id, SHARDS) for r in make_records(RUN, "flashsale", SPEC)})


def test_make_records__numbers_each_aggregates_events_from_one_in_creation_order() -> None:
    records = make_records("run", "x", SPEC)

    assert len(records) == EVENTS and len({r.aggregate_id for r in records}) == 10
    assert [r.sequence for r in records if r.aggregate_id == "run-x-order-4"] == [1, 2, 3]
    assert [r.created_at for r in records] == sorted(r.created_at for r in records)


def test_measure_relay__both_relays_deliver_and_mark_every_event_exactly_once(
    document: dict[str, Any],
) -> None:
    assert document["ok"] is True
    assert document["counts_exact"] is False  # no emulator counters to check against
    for relay in ("flashsale", "baseline"):
        result = document[relay]
        assert (result["marked"], result["marked_once"], result["messages_on_queue"]) == (
            EVENTS,
            EVENTS,
            EVENTS,
        )


def test_measure_relay__counts_the_baselines_calls_exactly(document: dict[str, Any]) -> None:
    # Per event a Query, a SendMessage and an UpdateItem; one empty Query ends each shard.
    assert document["baseline"]["calls"] == {
        "dynamodb.Query": EVENTS + SHARDS,
        "dynamodb.UpdateItem": EVENTS,
        "sqs.SendMessage": EVENTS,
    }
    assert document["baseline"]["aws_calls_per_event"] == round((3 * EVENTS + SHARDS) / EVENTS, 4)


def test_measure_relay__counts_our_relays_calls_exactly(document: dict[str, Any]) -> None:
    work = shards_with_work()
    assert 1 < work < SHARDS  # the count below tells shards with and without work apart
    rounds = PER_AGGREGATE  # one event per aggregate per round
    assert document["flashsale"]["calls"] == {
        # joining: heartbeat, membership, one lease per shard
        "dynamodb.PutItem": 1,
        "dynamodb.UpdateItem": SHARDS,
        # each round: every shard's pending Query (plus the membership Query at the start),
        # then per shard with work one BatchGetItem, one SendMessageBatch and one transaction
        "dynamodb.Query": 1 + rounds * SHARDS,
        "dynamodb.BatchGetItem": rounds * work,
        "dynamodb.TransactWriteItems": rounds * work,
        "sqs.SendMessageBatch": rounds * work,
    }


def test_figures_and_ratios__per_event_per_service_and_times_fewer() -> None:
    check = {"messages_on_queue": 100, "marked_once": 100}
    ours = figures(100, 100, 0.5, {"sqs.SendMessageBatch": 10, "dynamodb.Query": 10}, check)
    base = figures(100, 100, 2.0, {"sqs.SendMessage": 100, "dynamodb.UpdateItem": 200}, check)

    assert (ours["events_per_s"], ours["aws_calls_per_event"]) == (200.0, 0.2)
    assert (base["sqs_calls_per_event"], base["dynamodb_calls_per_event"]) == (1.0, 2.0)
    assert ratios(ours, base) == {
        "events_per_s": 4.0,
        "aws_calls_per_event": 15.0,
        "sqs_calls_per_event": 10.0,
        "dynamodb_calls_per_event": 20.0,
    }
