"""Fuzzing the intake's edge: whatever a client sends, ``parse_request`` answers with a valid
request or ``InvalidPurchaseRequest`` — never any other exception (a 500 instead of a 400)."""

from __future__ import annotations

import re
import uuid
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from flashsale.messages import PurchaseRequest
from tasks.exceptions import InvalidPurchaseRequest
from tasks.intake import parse_request

FIELDS = ("event_id", "buyer_id", "quantity", "request_id")
IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")

identifiers = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}", fullmatch=True)
lone_surrogates = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1)
strings = st.one_of(
    st.text(),
    lone_surrogates,
    st.builds(lambda a, s, b: a + s + b, identifiers, lone_surrogates, identifiers),
    st.builds(lambda a: a + "\x00", identifiers),
    st.builds(lambda c, n: c * n, st.sampled_from("a \x00é"), st.integers(60, 20_000)),
    st.builds(lambda a: f"  {a}\n", identifiers),
)
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True),
    st.sampled_from([0, 1, 8, 100, 101, -1, True, False, 1.0, 2.5, "3", " 4 ", "1e3", "0x10"]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, strings, st.binary(max_size=64))
json_like = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def raw_requests(draw: st.DrawFn) -> Any:
    """Mostly request-shaped objects with some fields wrong, missing or extra; sometimes not an
    object at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_like)
    raw: dict[Any, Any] = {}
    for field in FIELDS:
        kind = draw(st.sampled_from(["valid", "valid", "junk", "missing"]))
        if kind == "missing":
            continue
        if kind == "junk":
            raw[field] = draw(json_like)
        elif field == "quantity":
            raw[field] = draw(st.integers(1, 100))
        else:
            raw[field] = draw(identifiers)
    extra = draw(st.dictionaries(st.one_of(st.text(max_size=8), lone_surrogates, st.integers()),
                                 json_like, max_size=2))  # fmt: skip
    return raw | {k: v for k, v in extra.items() if k not in FIELDS}


@settings(max_examples=300, deadline=None)
@given(raw=raw_requests())
def test_parse_request__returns_a_valid_request_or_refuses_it_never_anything_else(
    raw: Any,
) -> None:
    try:
        request = parse_request(raw)
    except InvalidPurchaseRequest as refused:
        event("refused")
        assert str(refused).startswith(("invalid purchase request: ", "a purchase request is"))
        return

    event("accepted")
    assert isinstance(request, PurchaseRequest)
    assert 1 <= request.quantity <= 100
    for field in ("event_id", "buyer_id", "request_id"):
        value = getattr(request, field)
        assert 1 <= len(value) <= 64 and IDENTIFIER.fullmatch(value), (field, value)
    uuid.UUID(request.order_id)
    assert parse_request(request.model_dump()) == request


@given(
    event_id=identifiers, buyer_id=identifiers, request_id=identifiers,
    quantity=st.integers(1, 100),
)  # fmt: skip
def test_parse_request__accepts_every_well_formed_request(
    event_id: str, buyer_id: str, request_id: str, quantity: int
) -> None:
    raw = {"event_id": event_id, "buyer_id": buyer_id, "quantity": quantity,
           "request_id": request_id}  # fmt: skip

    assert parse_request(raw).model_dump(exclude_none=True) == raw
