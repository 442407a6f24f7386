"""``notifications.dedup.DeliveryRecords``: one record per (order, kind) for every channel —
claim, mark, settle, release with what settled, and take over stale claims."""

from __future__ import annotations

import pytest
from conftest import TABLE, Aws

from flashsale.dynamo import from_item
from flashsale.names import IDEMPOTENCY_PK, TTL_ATTRIBUTE
from notifications.dedup import (
    DEFAULT_LEASE_SECONDS,
    ChannelOutcome,
    Claim,
    DeliveryRecords,
    Settled,
    delivery_key,
)
from notifications.exceptions import ClaimLost, DeliveryInProgress
from notifications.messages import ChannelName, NotificationKind

CONFIRMATION = NotificationKind.CONFIRMATION
EMAIL, SMS = ChannelName.EMAIL, ChannelName.SMS


def records(aws: Aws, lease: float = 60.0) -> DeliveryRecords:
    return DeliveryRecords(aws.dynamodb, TABLE, lease_seconds=lease, clock=aws.clock)


def stored(aws: Aws, key: str) -> dict[str, object]:
    item = aws.dynamodb.get_item(
        TableName=TABLE, Key={IDEMPOTENCY_PK: {"S": key}}, ConsistentRead=True
    )["Item"]
    return from_item(item)


def claimed(store: DeliveryRecords, order_id: str = "o-1") -> Claim:
    claim = store.claim(order_id, CONFIRMATION)
    assert isinstance(claim, Claim), claim
    return claim


def test_default_lease__outlasts_the_notification_task_time_limit() -> None:
    assert DEFAULT_LEASE_SECONDS == 60.0


def test_key__differs_per_order_and_kind_and_is_shared_by_the_channels() -> None:
    keys = {delivery_key(order, kind) for order in ("o-1", "o-2") for kind in NotificationKind}
    assert len(keys) == 4


def test_claim_then_mark__a_second_claim_finds_every_channel_settled(aws: Aws) -> None:
    store = records(aws)
    claim = claimed(store)
    assert claim.attempt == 1 and claim.settled == {}
    outcomes = {EMAIL: ChannelOutcome.sent("ses-42"), SMS: ChannelOutcome.sent("sns-7")}
    assert store.write(store.mark(claim, outcomes)) is True

    again = store.claim("o-1", CONFIRMATION)

    assert again == Settled(claim.key, outcomes)
    item = stored(aws, claim.key)
    assert item["status"] == "settled" and item["attempts"] == 1 and "lease_until" not in item
    assert item["outcome_email"] == {"status": "sent", "message_id": "ses-42"}
    assert item["outcome_sms"] == {"status": "sent", "message_id": "sns-7"}
    assert item[TTL_ATTRIBUTE] == int(aws.clock.now) + 30 * 24 * 3600


def test_claim_and_mark__one_write_each_for_all_channels(aws: Aws) -> None:
    store = records(aws)
    claim = claimed(store)
    assert aws.dynamodb_calls == ["UpdateItem"]
    mark = store.mark(claim, {EMAIL: ChannelOutcome.sent("e"), SMS: ChannelOutcome.sent("s")})
    assert aws.dynamodb_calls == ["UpdateItem"]  # a mark is an entry: nothing written yet
    store.write(mark)
    assert aws.dynamodb_calls == ["UpdateItem", "UpdateItem"]


def test_mark__commits_inside_a_transaction(aws: Aws) -> None:
    store = records(aws)
    claim = claimed(store)
    mark = store.mark(claim, {EMAIL: ChannelOutcome.sent("ses-1")})

    aws.dynamodb.transact_write_items(TransactItems=[mark.entry])

    assert store.claim("o-1", CONFIRMATION) == Settled(
        claim.key, {EMAIL: ChannelOutcome.sent("ses-1")}
    )


def test_claim__while_another_worker_holds_the_lease__is_in_progress(aws: Aws) -> None:
    store = records(aws)
    claimed(store)
    aws.clock.advance(59)
    with pytest.raises(DeliveryInProgress, match="being sent by another worker") as busy:
        store.claim("o-1", CONFIRMATION)
    assert busy.value.retry_after == pytest.approx(1.0)  # the lease's last second


def test_claim__stale_after_the_lease__is_taken_over_and_the_old_owner_cannot_mark(
    aws: Aws,
) -> None:
    store = records(aws)
    crashed = claimed(store)
    aws.clock.advance(60)

    taken = claimed(store)

    assert taken.attempt == 2 and taken.token != crashed.token
    late = store.mark(crashed, {EMAIL: ChannelOutcome.sent("late")})
    assert store.write(late) is False
    assert isinstance(late.lost(), ClaimLost)
    assert store.write(store.mark(taken, {EMAIL: ChannelOutcome.sent("ses-2")})) is True
    assert stored(aws, taken.key)["outcome_email"] == {"status": "sent", "message_id": "ses-2"}


def test_mark_of_a_lost_claim__cancels_the_transaction_carrying_it(aws: Aws) -> None:
    store = records(aws)
    crashed = claimed(store)
    aws.clock.advance(60)
    claimed(store)  # another worker takes it over
    late = store.mark(crashed, {EMAIL: ChannelOutcome.sent("late")})

    with pytest.raises(aws.dynamodb.exceptions.TransactionCanceledException):
        aws.dynamodb.transact_write_items(TransactItems=[late.entry])

    assert "outcome_email" not in stored(aws, crashed.key)


def test_release__records_what_settled_and_lets_the_next_claim_in_at_once(aws: Aws) -> None:
    store = records(aws)
    first = claimed(store)
    store.release(first, {EMAIL: ChannelOutcome.sent("ses-1")})  # the SMS failed for now

    second = claimed(store)

    assert second.attempt == 2
    assert second.settled == {EMAIL: ChannelOutcome.sent("ses-1")}
    store.write(store.mark(second, {SMS: ChannelOutcome.sent("sns-1")}))
    assert store.claim("o-1", CONFIRMATION) == Settled(
        first.key, {EMAIL: ChannelOutcome.sent("ses-1"), SMS: ChannelOutcome.sent("sns-1")}
    )


def test_release__after_a_mark__changes_nothing(aws: Aws) -> None:
    store = records(aws)
    claim = claimed(store)
    store.write(store.mark(claim, {EMAIL: ChannelOutcome.sent("ses-1")}))
    store.release(claim, {SMS: ChannelOutcome.sent("sns-late")})
    assert store.claim("o-1", CONFIRMATION) == Settled(
        claim.key, {EMAIL: ChannelOutcome.sent("ses-1")}
    )


def test_undeliverable__settles_the_channel_for_good(aws: Aws) -> None:
    store = records(aws)
    claim = claimed(store)
    refused = ChannelOutcome.undeliverable("MessageRejected " + "x" * 2000)
    assert len(refused.reason or "") == 1000
    assert store.write(store.mark(claim, {EMAIL: refused})) is True
    aws.clock.advance(3600)
    assert store.claim("o-1", CONFIRMATION) == Settled(claim.key, {EMAIL: refused})
