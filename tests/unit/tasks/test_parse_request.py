"""``parse_request``: the intake's edge refuses a bad request with an error naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from flashsale.messages import PurchaseRequest
from tasks.exceptions import InvalidPurchaseRequest
from tasks.intake import parse_request

GOOD: dict[str, Any] = {"event_id": "gig", "buyer_id": "ann", "quantity": 2, "request_id": "r1"}


def test_parse_request__accepts_a_valid_request() -> None:
    assert parse_request(GOOD) == PurchaseRequest(**GOOD)


def test_parse_request__passes_an_already_parsed_request_through() -> None:
    request = PurchaseRequest(**GOOD)

    assert parse_request(request) is request


def test_parse_request__trims_whitespace_around_identifiers() -> None:
    assert parse_request(GOOD | {"buyer_id": "  ann "}).buyer_id == "ann"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("event_id", ""),
        ("event_id", "-starts-with-a-dash"),
        ("event_id", "x" * 65),
        ("buyer_id", "ann\x00"),
        ("buyer_id", "ann smith"),
        ("buyer_id", 42),
        ("request_id", None),
        ("request_id", "r/1"),
        ("quantity", 0),
        ("quantity", -3),
        ("quantity", 101),
        ("quantity", 10**9),
        ("quantity", "two"),
        ("quantity", 1.5),
        ("quantity", None),
    ],
)
def test_parse_request__names_the_bad_field(field: str, value: object) -> None:
    with pytest.raises(InvalidPurchaseRequest, match=rf"\b{field}: "):
        parse_request(GOOD | {field: value})


@pytest.mark.parametrize("field", sorted(GOOD))
def test_parse_request__names_a_missing_field(field: str) -> None:
    raw = {k: v for k, v in GOOD.items() if k != field}

    with pytest.raises(InvalidPurchaseRequest, match=rf"{field}: Field required"):
        parse_request(raw)


def test_parse_request__refuses_an_unexpected_field_by_name() -> None:
    with pytest.raises(InvalidPurchaseRequest, match=r"admin: Extra inputs are not permitted"):
        parse_request(GOOD | {"admin": True})


def test_parse_request__names_every_bad_field_at_once() -> None:
    with pytest.raises(InvalidPurchaseRequest) as refused:
        parse_request({"event_id": "", "quantity": 0})

    for field in ("event_id", "buyer_id", "quantity", "request_id"):
        assert f"{field}: " in str(refused.value)


@pytest.mark.parametrize("raw", [None, "gig", 3, ["gig", "ann", 1, "r1"]])
def test_parse_request__refuses_what_is_not_an_object(raw: Any) -> None:
    with pytest.raises(InvalidPurchaseRequest, match="a purchase request is an object"):
        parse_request(raw)


def test_parse_request__is_a_value_error_for_callers_that_catch_those() -> None:
    with pytest.raises(ValueError, match="quantity"):
        parse_request(GOOD | {"quantity": 0})


def test_parse_request__the_same_request_is_always_the_same_order() -> None:
    retry = parse_request(dict(GOOD))

    assert retry.order_id == parse_request(GOOD).order_id
    assert parse_request(GOOD | {"buyer_id": "bob"}).order_id != retry.order_id
    assert parse_request(GOOD | {"event_id": "gig2"}).order_id != retry.order_id
