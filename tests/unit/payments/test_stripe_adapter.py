"""The Stripe adapter against a fake ``StripeClient`` that keeps Stripe's idempotency rules.

The fake returns the SDK's own objects and raises its own errors, so only the network is fake.
"""

from __future__ import annotations

import itertools
import re
from types import SimpleNamespace
from typing import Any

import pytest
import stripe

from payments.client import CHARGE_VOIDED, Charge, Refund, RefundStatus
from payments.exceptions import IdempotencyMismatch, InvalidPaymentRequest, ProviderUnavailable
from payments.stripe_adapter import KEY_FIELD, VOID_FIELD, StripePaymentProvider

DECLINED_AMOUNT = 666


class FakeStripe:
    """``client.v1`` with payment intents, search and refunds, in memory.

    A request with an idempotency key that was seen replays the first answer (a snapshot, or
    the same error) if the parameters are equal, and raises ``IdempotencyError`` otherwise.
    ``searchable = False`` stands for the Search API's lag.
    """

    def __init__(self) -> None:
        self.intents: dict[str, dict[str, Any]] = {}
        self.refunds: list[dict[str, Any]] = []
        self.searchable = True
        self.fail_next: Exception | None = None
        self._keys: dict[str, tuple[Any, Any]] = {}
        self._ids = itertools.count(1)
        self.v1 = SimpleNamespace(
            payment_intents=SimpleNamespace(
                create=self._create, search=self._search, cancel=self._cancel
            ),
            refunds=SimpleNamespace(create=self._refund),
        )

    def _idempotent(self, options: dict[str, str] | None, params: Any, action: Any) -> Any:
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        key = (options or {})["idempotency_key"]
        if key in self._keys:
            seen_params, outcome = self._keys[key]
            if seen_params != params:
                raise stripe.IdempotencyError(
                    "Keys for idempotent requests can only be used with the same parameters",
                    http_status=400,
                )
        else:
            try:
                outcome = action()
            except stripe.CardError as exc:
                outcome = exc
            self._keys[key] = (params, outcome)
        if isinstance(outcome, Exception):
            raise outcome
        return stripe.StripeObject.construct_from(dict(outcome), "sk_test")

    def _create(self, params: dict[str, Any], options: dict[str, str]) -> Any:
        def action() -> dict[str, Any]:
            intent = {
                "id": f"pi_{next(self._ids)}",
                "object": "payment_intent",
                "amount": params["amount"],
                "status": "succeeded" if params.get("confirm") else "requires_payment_method",
                "metadata": dict(params["metadata"]),
            }
            self.intents[intent["id"]] = intent
            if params.get("confirm") and params["amount"] == DECLINED_AMOUNT:
                intent["status"] = "requires_payment_method"
                error = {
                    "type": "card_error",
                    "code": "card_declined",
                    "decline_code": "insufficient_funds",
                    "payment_intent": dict(intent),
                }
                raise stripe.CardError(
                    "Your card has insufficient funds.",
                    None,
                    "card_declined",
                    http_status=402,
                    json_body={"error": error},
                )
            return dict(intent)

        return self._idempotent(options, params, action)

    def _search(self, params: dict[str, Any]) -> Any:
        match = re.fullmatch(rf"metadata\['{KEY_FIELD}'\]:'(.*)'", params["query"])
        assert match, params
        key = match.group(1).replace("\\'", "'").replace("\\\\", "\\")
        found = [
            intent
            for intent in self.intents.values()
            if self.searchable and intent["metadata"].get(KEY_FIELD) == key
        ]
        return stripe.SearchResultObject.construct_from(
            {"object": "search_result", "data": found}, "sk_test"
        )

    def _cancel(self, intent_id: str, options: dict[str, str]) -> Any:
        def action() -> dict[str, Any]:
            intent = self.intents[intent_id]
            if intent["status"] in {"succeeded", "canceled"}:
                raise stripe.InvalidRequestError(f"cannot cancel a {intent['status']}", None)
            intent["status"] = "canceled"
            return dict(intent)

        return self._idempotent(options, intent_id, action)

    def _refund(self, params: dict[str, Any], options: dict[str, str]) -> Any:
        def action() -> dict[str, Any]:
            assert self.intents[params["payment_intent"]]["status"] == "succeeded"
            refund = {"id": f"re_{next(self._ids)}", "payment_intent": params["payment_intent"]}
            self.refunds.append(refund)
            return refund

        return self._idempotent(options, params, action)


@pytest.fixture
def fake() -> FakeStripe:
    return FakeStripe()


@pytest.fixture
def adapter(fake: FakeStripe) -> StripePaymentProvider:
    return StripePaymentProvider(fake)


def _charge(adapter: StripePaymentProvider, key: str, amount: int = 900) -> Charge:
    return adapter.charge(key=key, amount=amount, currency="usd", description=f"order {key}")


def test_charge__creates_and_confirms_one_intent_per_key(
    adapter: StripePaymentProvider, fake: FakeStripe
) -> None:
    first = _charge(adapter, "o-1:charge")
    again = _charge(adapter, "o-1:charge")

    assert first == Charge("o-1:charge", "pi_1", 900, "usd", True, None)
    assert again == first
    [intent] = fake.intents.values()
    assert intent["metadata"] == {KEY_FIELD: "o-1:charge"}


def test_charge__card_decline_is_a_declined_charge(adapter: StripePaymentProvider) -> None:
    declined = _charge(adapter, "o-2:charge", amount=DECLINED_AMOUNT)

    assert declined == Charge(
        "o-2:charge", "pi_1", DECLINED_AMOUNT, "usd", False, "insufficient_funds"
    )
    assert _charge(adapter, "o-2:charge", amount=DECLINED_AMOUNT) == declined


def test_charge__same_key_other_amount_is_a_mismatch(adapter: StripePaymentProvider) -> None:
    _charge(adapter, "o-3:charge")

    with pytest.raises(IdempotencyMismatch, match="o-3:charge"):
        _charge(adapter, "o-3:charge", amount=901)


def test_refund__succeeded_charge_is_refunded_once(
    adapter: StripePaymentProvider, fake: FakeStripe
) -> None:
    _charge(adapter, "o-4:charge")

    first = adapter.refund(key="o-4:charge")
    again = adapter.refund(key="o-4:charge")

    assert first == again == Refund("o-4:charge", RefundStatus.REFUNDED, first.refund_id)
    assert [refund["id"] for refund in fake.refunds] == [first.refund_id]


def test_refund__declined_charge_has_nothing_to_refund_and_is_cancelled(
    adapter: StripePaymentProvider, fake: FakeStripe
) -> None:
    _charge(adapter, "o-5:charge", amount=DECLINED_AMOUNT)

    assert adapter.refund(key="o-5:charge").status is RefundStatus.NOTHING_TO_REFUND
    assert adapter.refund(key="o-5:charge").status is RefundStatus.NOTHING_TO_REFUND
    assert [intent["status"] for intent in fake.intents.values()] == ["canceled"]
    assert fake.refunds == []


def test_refund__before_the_charge_voids_the_key_and_the_late_charge_is_refused(
    adapter: StripePaymentProvider, fake: FakeStripe
) -> None:
    assert adapter.refund(key="o-6:charge") == Refund("o-6:charge", RefundStatus.VOIDED)
    fake.searchable = False
    with pytest.raises(ProviderUnavailable, match="not yet searchable"):
        _charge(adapter, "o-6:charge")  # cannot tell a void from a real mismatch yet
    fake.searchable = True

    late = _charge(adapter, "o-6:charge")

    assert late == Charge("o-6:charge", None, 900, "usd", False, CHARGE_VOIDED)
    assert adapter.refund(key="o-6:charge").status is RefundStatus.VOIDED
    [placeholder] = fake.intents.values()
    assert placeholder["status"] == "canceled"
    assert placeholder["metadata"] == {KEY_FIELD: "o-6:charge", VOID_FIELD: "true"}


def test_refund__waits_for_search_to_see_the_charge(
    adapter: StripePaymentProvider, fake: FakeStripe
) -> None:
    _charge(adapter, "o-7:charge")
    fake.searchable = False

    with pytest.raises(ProviderUnavailable, match="not yet searchable"):
        adapter.refund(key="o-7:charge")
    fake.searchable = True
    refund = adapter.refund(key="o-7:charge")

    assert refund.status is RefundStatus.REFUNDED
    assert len(fake.intents) == 1  # the void attempt created nothing


@pytest.mark.parametrize(
    ("error", "mapped"),
    [
        (stripe.APIConnectionError("connection reset"), ProviderUnavailable),
        (stripe.RateLimitError("slow down", http_status=429), ProviderUnavailable),
        (stripe.APIError("in flight", http_status=409), ProviderUnavailable),
        (stripe.APIError("boom", http_status=500), ProviderUnavailable),
        (stripe.AuthenticationError("bad key", http_status=401), InvalidPaymentRequest),
        (stripe.InvalidRequestError("bad currency", "currency"), InvalidPaymentRequest),
    ],
)
def test_errors__are_translated(
    adapter: StripePaymentProvider,
    fake: FakeStripe,
    error: stripe.StripeError,
    mapped: type[Exception],
) -> None:
    fake.fail_next = error

    with pytest.raises(mapped) as raised:
        _charge(adapter, "o-8:charge")
    assert raised.value.__cause__ is error


def test_from_api_key__builds_a_client_without_network() -> None:
    adapter = StripePaymentProvider.from_api_key("sk_test_unit")

    assert hasattr(adapter._v1, "payment_intents")
