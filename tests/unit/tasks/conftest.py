"""Factories for the purchase path: requests, batches, moto-backed tables, a faked intake edge."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from intake_fakes import FakeClock, FakeSqs
from moto import mock_aws
from moto_tables import REGION, Tables

import tasks.intake as intake_module
from flashsale.messages import AcceptedRequest, PurchaseBatch, PurchaseRequest
from tasks.intake import Intake

MakeRequest = Callable[..., AcceptedRequest]
MakeBatch = Callable[..., PurchaseBatch]

QUEUE_URL = "https://sqs.unit.invalid/0/flashsale-unit-purchases.fifo"


@pytest.fixture
def make_request() -> MakeRequest:
    """``make_request(quantity, buyer=..., request=..., event=...)``: an accepted request whose
    place in line follows the previous one's."""
    seq = itertools.count(1)

    def make(
        quantity: int = 1,
        *,
        buyer: str | None = None,
        request: str | None = None,
        event: str = "gig",
        accepted_seq: int | None = None,
    ) -> AcceptedRequest:
        n = next(seq)
        buyer_id = buyer or f"buyer-{n}"
        request_id = request or f"req-{buyer_id}"
        order_id = PurchaseRequest(
            event_id=event, buyer_id=buyer_id, quantity=quantity, request_id=request_id
        ).order_id
        return AcceptedRequest(
            order_id=order_id,
            buyer_id=buyer_id,
            request_id=request_id,
            quantity=quantity,
            accepted_seq=n if accepted_seq is None else accepted_seq,
            accepted_at_ms=1_700_000_000_000 + n,
        )

    return make


@pytest.fixture
def make_batch(make_request: MakeRequest) -> MakeBatch:
    """``make_batch(event, [2, 1, ...])``: one request per quantity, in that order."""

    def make(event: str, quantities: list[int]) -> PurchaseBatch:
        return PurchaseBatch(
            event_id=event, requests=[make_request(q, event=event) for q in quantities]
        )

    return make


@pytest.fixture
def tables(aws_offline: None) -> Iterator[Tables]:
    """The inventory and orders tables in moto's in-process DynamoDB, for one test."""
    with mock_aws():
        yield Tables(boto3.client("dynamodb", region_name=REGION))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The intake's clock, frozen: nothing lingers long enough to flush unless a test says so."""
    fake = FakeClock()
    monkeypatch.setattr(intake_module, "time", fake)
    return fake


@pytest.fixture
def sqs() -> FakeSqs:
    return FakeSqs()


@pytest.fixture
def make_intake(clock: FakeClock, sqs: FakeSqs) -> Iterator[Callable[..., Intake]]:
    """``make_intake(batch_size=..., linger_ms=..., max_per_request=...)`` over the fake SQS
    and clock; every intake made is closed (flushed, linger thread stopped) after the test."""
    made: list[Intake] = []

    def make(*, batch_size: int = 40, linger_ms: int = 20, max_per_request: int = 8) -> Intake:
        intake = Intake(sqs, QUEUE_URL, batch_size=batch_size, linger_ms=linger_ms,
                        max_per_request=max_per_request)  # fmt: skip
        made.append(intake)
        return intake

    yield make
    for intake in made:
        intake.close()


@pytest.fixture
def buyer_request() -> Callable[..., dict[str, Any]]:
    """``buyer_request(n, quantity=1, event="gig")``: buyer n's raw request, as JSON decodes it."""

    def make(n: int, *, quantity: int = 1, event: str = "gig") -> dict[str, Any]:
        return {"event_id": event, "buyer_id": f"buyer-{n}", "quantity": quantity,
                "request_id": f"req-{n}"}  # fmt: skip

    return make
