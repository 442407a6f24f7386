"""``notifications.dedup.DeliveryRecords``: claim, mark, settle, and take over stale claims."""

from __future__ import annotations

import pytest
from conftest import TABLE, Aws

from flashsale.dynamo import from_item
from flashsale.names import IDEMPOTENCY_PK, TTL_ATTRIBUTE
from notifications.dedup import (
    DEFAULT_LEASE_SECONDS,
    Claim,
    DeliveryRecords,
    RecordStatus,
    Settled,
    delivery_key,
)
from notifications.exceptions import DeliveryInProgress
from notifications.messages import ChannelName, NotificationKind

CONFIRMATION, EMAIL = NotificationKind.CONFIRMATION, ChannelName.EMAIL


def records(aws: Aws, lease: float = 60.0) -> DeliveryRecords:
    return DeliveryRecords(aws.dynamodb, TABLE, lease_seconds=lease, clock=aws.clock)


def stored(aws: Aws, key: str) -> dict[str, object]:
    item = aws.dynamodb.get_item(
        TableName=TABLE, Key={IDEMPOTENCY_PK: {"S": key}}, ConsistentRead=True
    )["Item"]
    return from_item(item)


def test_default_lease__outlasts_the_notification_task_time_limit() -> None:
    assert DEFAULT_LEASE_SECONDS == 60.0


def test_key__differs_per_order_kind_and_channel() -> None:
    keys = {
        delivery_key(order, kind, channel)
        for order in ("o-1", "o-2")
        for kind in NotificationKind
        for channel in ChannelName
    }
    assert len(keys) == 8


def test_claim_then_mark_sent__a_second_claim_finds_it_settled(aws: Aws) -> None:
    store = records(aws)
    claim = store.claim("o-1", CONFIRMATION, EMAIL)
    assert isinstance(claim, Claim) and claim.attempt == 1
    assert store.mark_sent(claim, "ses-42") is True

    again = store.claim("o-1", CONFIRMATION, EMAIL)

    assert again == Settled(claim.key, RecordStatus.SENT, "ses-42")
    item = stored(aws, claim.key)
    assert item["status"] == "sent" and item["attempts"] == 1 and "lease_until" not in item
    assert item[TTL_ATTRIBUTE] == int(aws.clock.now) + 30 * 24 * 3600


def test_claim__while_another_worker_holds_the_lease__is_in_progress(aws: Aws) -> None:
    store = records(aws)
    store.claim("o-1", CONFIRMATION, EMAIL)
    aws.clock.advance(59)
    with pytest.raises(DeliveryInProgress, match="being sent by another worker"):
        store.claim("o-1", CONFIRMATION, EMAIL)


def test_claim__stale_after_the_lease__is_taken_over_and_the_old_owner_cannot_mark(
    aws: Aws,
) -> None:
    store = records(aws)
    crashed = store.claim("o-1", CONFIRMATION, EMAIL)
    assert isinstance(crashed, Claim)
    aws.clock.advance(60)

    taken = store.claim("o-1", CONFIRMATION, EMAIL)

    assert isinstance(taken, Claim) and taken.attempt == 2 and taken.token != crashed.token
    assert store.mark_sent(crashed, "late") is False
    assert store.mark_sent(taken, "ses-2") is True
    assert stored(aws, taken.key)["message_id"] == "ses-2"


def test_release__lets_the_next_claim_in_without_waiting_for_the_lease(aws: Aws) -> None:
    store = records(aws)
    first = store.claim("o-1", CONFIRMATION, EMAIL)
    assert isinstance(first, Claim)
    store.release(first)

    second = store.claim("o-1", CONFIRMATION, EMAIL)

    assert isinstance(second, Claim) and second.attempt == 2


def test_release__after_a_mark__changes_nothing(aws: Aws) -> None:
    store = records(aws)
    claim = store.claim("o-1", CONFIRMATION, EMAIL)
    assert isinstance(claim, Claim)
    store.mark_sent(claim, "ses-1")
    store.release(claim)
    assert store.claim("o-1", CONFIRMATION, EMAIL) == Settled(claim.key, RecordStatus.SENT, "ses-1")


def test_mark_undeliverable__settles_the_delivery_for_good(aws: Aws) -> None:
    store = records(aws)
    claim = store.claim("o-1", CONFIRMATION, EMAIL)
    assert isinstance(claim, Claim)
    assert store.mark_undeliverable(claim, "MessageRejected") is True
    aws.clock.advance(3600)
    assert store.claim("o-1", CONFIRMATION, EMAIL) == Settled(claim.key, RecordStatus.UNDELIVERABLE)
