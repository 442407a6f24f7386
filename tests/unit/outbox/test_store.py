"""``outbox.store.UnitOfWork``: one transaction, limits checked first, errors mapped back."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import TABLE, MakeRecord

from flashsale.dynamo import from_item
from flashsale.names import OUTBOX_PENDING_SHARD, OUTBOX_PK, OUTBOX_SK
from outbox.exceptions import DuplicateEvent, TransactionTooLarge
from outbox.records import shard_of
from outbox.store import MAX_TRANSACTION_ITEMS, UnitOfWork


class SeatsGone(Exception):
    """Stands in for a business error a caller registers."""


class RecordingClient:
    """Counts calls: limits must be refused before DynamoDB is called."""

    def __init__(self) -> None:
        self.calls = 0

    def transact_write_items(self, **_: Any) -> None:
        self.calls += 1


def seats_guard(event: str, expected: int) -> dict[str, Any]:
    return {
        "ConditionCheck": {
            "TableName": TABLE,
            "Key": {OUTBOX_PK: {"S": f"seats-{event}"}, OUTBOX_SK: {"N": "0"}},
            "ConditionExpression": "#n = :n",
            "ExpressionAttributeNames": {"#n": "n"},
            "ExpressionAttributeValues": {":n": {"N": str(expected)}},
        }
    }


def business_put(name: str, **values: Any) -> dict[str, Any]:
    item = {OUTBOX_PK: {"S": name}, OUTBOX_SK: {"N": "0"}}
    item |= {k: {"N": str(v)} for k, v in values.items()}
    return {"Put": {"TableName": TABLE, "Item": item}}


def read(ddb: Any, aggregate: str, sequence: int) -> dict[str, Any] | None:
    key = {OUTBOX_PK: {"S": aggregate}, OUTBOX_SK: {"N": str(sequence)}}
    item = ddb.get_item(TableName=TABLE, Key=key, ConsistentRead=True).get("Item")
    return from_item(item) if item else None


def test_commit__writes_business_items_and_pending_records_together(
    aws: dict[str, Any], make_record: MakeRecord
) -> None:
    uow = UnitOfWork(outbox_table=TABLE, shards=8)
    uow.add(business_put("seats-gig", n=3))
    first, second = make_record("order-7"), make_record("order-7")
    uow.add_event(first)
    uow.add_event(second)

    uow.commit(aws["dynamodb"])

    assert read(aws["dynamodb"], "seats-gig", 0) is not None
    stored = read(aws["dynamodb"], "order-7", 2)
    assert stored is not None and stored["event_id"] == second.event_id
    assert stored[OUTBOX_PENDING_SHARD] == shard_of("order-7", 8)
    assert uow.items == [] and uow.records == []


def test_commit__raises_the_error_registered_for_the_failed_condition_and_writes_nothing(
    aws: dict[str, Any], make_record: MakeRecord
) -> None:
    aws["dynamodb"].transact_write_items(TransactItems=[business_put("seats-gig", n=3)])
    uow = UnitOfWork(outbox_table=TABLE, shards=8)
    uow.add(seats_guard("gig", expected=2), on_failure=lambda: SeatsGone("gig"))
    uow.add_event(make_record("order-8"))

    with pytest.raises(SeatsGone):
        uow.commit(aws["dynamodb"])

    assert read(aws["dynamodb"], "order-8", 1) is None
    assert len(uow.items) == 2  # kept on the session for the caller to inspect


def test_commit__an_event_written_before_is_a_duplicate_event(
    aws: dict[str, Any], make_record: MakeRecord
) -> None:
    record = make_record("order-9", 1)
    first = UnitOfWork(outbox_table=TABLE, shards=8)
    first.add_event(record)
    first.commit(aws["dynamodb"])
    again = UnitOfWork(outbox_table=TABLE, shards=8)
    again.add_event(make_record("order-9", 1))

    with pytest.raises(DuplicateEvent, match="order-9#1"):
        again.commit(aws["dynamodb"])


def test_add_event__refuses_the_same_aggregate_and_sequence_twice(make_record: MakeRecord) -> None:
    uow = UnitOfWork(outbox_table=TABLE, shards=8)
    uow.add_event(make_record("order-1", 1))

    with pytest.raises(DuplicateEvent):
        uow.add_event(make_record("order-1", 1))


def test_commit__refuses_more_than_100_items_before_calling_dynamodb(
    make_record: MakeRecord,
) -> None:
    uow = UnitOfWork(outbox_table=TABLE, shards=8)
    for n in range(MAX_TRANSACTION_ITEMS + 1):
        uow.add_event(make_record(f"order-{n}"))
    client = RecordingClient()

    with pytest.raises(TransactionTooLarge, match="101 items"):
        uow.commit(client)
    assert client.calls == 0


def test_commit__refuses_more_than_4_mb_before_calling_dynamodb(make_record: MakeRecord) -> None:
    uow = UnitOfWork(outbox_table=TABLE, shards=8)
    for n in range(30):  # each record is fine alone (~140 KB), 30 of them are not
        uow.add_event(make_record(f"order-{n}", payload={"blob": "x" * 140_000}))
    client = RecordingClient()

    with pytest.raises(TransactionTooLarge, match="bytes in one transaction"):
        uow.commit(client)
    assert client.calls == 0


def test_commit__refuses_an_item_twice_in_one_transaction() -> None:
    uow = UnitOfWork(outbox_table=TABLE, shards=8)
    uow.add(seats_guard("gig", 1))
    uow.add(seats_guard("gig", 2))

    with pytest.raises(TransactionTooLarge, match="twice"):
        uow.commit(RecordingClient())
