"""``flashsale.messages``: the ids that make retries, double clicks and resends harmless."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from flashsale.messages import AcceptedRequest, PurchaseBatch, PurchaseRequest


def request(**changes: Any) -> PurchaseRequest:
    fields: dict[str, Any] = {"event_id": "gig", "buyer_id": "ann", "quantity": 1,
                              "request_id": "r1"}  # fmt: skip
    return PurchaseRequest(**(fields | changes))


def accepted(order: PurchaseRequest, seq: int) -> AcceptedRequest:
    return AcceptedRequest(order_id=order.order_id, buyer_id=order.buyer_id,
                           request_id=order.request_id, quantity=order.quantity,
                           accepted_seq=seq, accepted_at_ms=seq)  # fmt: skip


def test_order_id__is_the_same_for_a_retried_request_whatever_the_quantity() -> None:
    assert request().order_id == request(quantity=3).order_id


@pytest.mark.parametrize("changed", [{"event_id": "gig2"}, {"buyer_id": "bob"},
                                     {"request_id": "r2"}])  # fmt: skip
def test_order_id__differs_for_another_event_buyer_or_request(changed: dict[str, str]) -> None:
    assert request(**changed).order_id != request().order_id


def test_order_id__does_not_collide_when_fields_run_into_each_other() -> None:
    assert (
        request(buyer_id="a", request_id="b.c").order_id
        != request(buyer_id="a.b", request_id="c").order_id
    )


def test_batch_id__depends_only_on_the_orders_in_the_batch() -> None:
    a, b = request(buyer_id="ann"), request(buyer_id="bob")
    first = PurchaseBatch(event_id="gig", requests=[accepted(a, 1), accepted(b, 2)])
    resent = PurchaseBatch(event_id="gig", requests=[accepted(a, 7), accepted(b, 8)])
    reordered = PurchaseBatch(event_id="gig", requests=[accepted(b, 1), accepted(a, 2)])

    assert first.batch_id == resent.batch_id
    assert first.batch_id != reordered.batch_id
    assert len(first.batch_id) <= 128  # SQS's limit for a MessageDeduplicationId


@pytest.mark.parametrize("size", [0, 91])
def test_purchase_batch__holds_one_to_ninety_requests(size: int) -> None:
    requests = [accepted(request(request_id=f"r{n}"), n) for n in range(size)]

    with pytest.raises(ValidationError, match="requests"):
        PurchaseBatch(event_id="gig", requests=requests)
