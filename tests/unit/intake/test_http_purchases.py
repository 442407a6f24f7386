"""``POST /v1/purchases``: 202 once on the queue, the same order id for a retry, 4xx for bad
input, sold out and unknown events answered at the edge from a cached view."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from intake_http_fakes import eventually
from intake_http_stack import EVENT, MakeHarness, order_id_of, purchase

from intake.events import Inventory


def test_purchase__is_accepted_with_its_order_id_once_on_the_queue(
    make_harness: MakeHarness,
) -> None:
    h = make_harness()

    answer = h.buy(1)

    assert answer.status_code == 202
    order_id = order_id_of(purchase(1))
    assert answer.json() == {
        "order_id": order_id,
        "event_id": EVENT,
        "status": "accepted",
        "status_url": f"/v1/orders/{order_id}",
    }
    assert answer.headers["location"] == f"/v1/orders/{order_id}"
    assert h.queue.order_ids == [order_id]  # 202 is given only after the send
    assert h.services.enqueuer.buffered == 0


def test_purchase__a_retry_or_double_click_gets_the_same_order_id_and_is_queued_once(
    make_harness: MakeHarness,
) -> None:
    h = make_harness()

    first, again, other = h.buy(7), h.buy(7), h.buy(7, request="another-click")

    assert first.status_code == again.status_code == other.status_code == 202
    assert first.json() == again.json()
    assert first.json()["order_id"] == order_id_of(purchase(7))
    assert other.json()["order_id"] != first.json()["order_id"]
    assert h.queue.order_ids == [first.json()["order_id"], other.json()["order_id"]]
    assert h.client.get("/stats").json()["repeats"] == 1


def test_purchase__a_repeat_while_its_copy_waits_in_the_buffer_shares_its_send(
    make_harness: MakeHarness,
) -> None:
    h = make_harness()
    h.queue.hold()  # SQS is slow: the first copy waits in the buffer

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(h.buy, 7)
        eventually(lambda: h.services.enqueuer.buffered == 1, "the first copy buffered")
        again = pool.submit(h.buy, 7)
        eventually(lambda: h.services.enqueuer.repeats == 1, "the repeat to join it")
        assert not first.done() and not again.done()  # neither is answered before the send
        h.queue.release()

    assert first.result().status_code == again.result().status_code == 202
    assert h.queue.order_ids == [order_id_of(purchase(7))]


def test_purchase__a_repeat_of_a_queued_request_is_202_even_after_the_sell_out(
    make_harness: MakeHarness,
) -> None:
    h = make_harness(seats=1)
    assert h.buy(1).status_code == 202
    h.inventory.events[EVENT] = Inventory(capacity=1, sold=1)
    h.clock.advance(120)  # the intake's view of the event expires: it reads the sell-out

    assert h.buy(2).json()["status"] == "sold_out"
    again = h.buy(1)

    assert again.status_code == 202  # it is on the queue: its decision is the worker's
    assert h.queue.order_ids == [order_id_of(purchase(1))]


def test_purchase__a_repeat_forgotten_past_the_bound_is_queued_again_and_stays_one_order_id(
    make_harness: MakeHarness,
) -> None:
    h = make_harness(intake_recent_orders=1)

    answers = [h.buy(1), h.buy(2), h.buy(1)]

    assert [a.status_code for a in answers] == [202] * 3
    assert answers[0].json() == answers[2].json()
    # Forgotten (1 remembered): queued again, and the allocation makes the copies one order.
    assert h.queue.order_ids == [order_id_of(purchase(n)) for n in (1, 2, 1)]


MALFORMED: list[tuple[Any, int, str]] = [
    ({**purchase(1), "event_id": ""}, 422, "event_id"),
    ({**purchase(1), "quantity": 0}, 422, "quantity"),
    ({**purchase(1), "quantity": -3}, 422, "quantity"),
    ({**purchase(1), "quantity": "two"}, 422, "quantity"),
    ({**purchase(1), "quantity": "2"}, 422, "quantity"),  # strict: a string is not a quantity
    ({**purchase(1), "quantity": 2.0}, 422, "quantity"),
    ({**purchase(1), "quantity": True}, 422, "quantity"),
    ({**purchase(1), "quantity": 10**9}, 422, "quantity"),
    ({**purchase(1), "quantity": 9}, 422, "at most 8 tickets"),  # above max_tickets_per_request
    ({**purchase(1), "buyer_id": "b\x00"}, 422, "buyer_id"),
    ({k: v for k, v in purchase(1).items() if k != "request_id"}, 422, "request_id"),
    ({**purchase(1), "admin": True}, 422, "admin"),
    ({**purchase(1), "email": "not an address"}, 422, "email"),
    ({**purchase(1), "phone": "12345"}, 422, "phone"),
    ([purchase(1)], 422, "request"),
    ("a purchase", 422, "request"),
    (None, 422, "request"),
]


@pytest.mark.parametrize(("body", "status", "named"), MALFORMED)
def test_purchase__invalid_input_is_4xx_naming_the_field_and_never_queued(
    make_harness: MakeHarness, body: Any, status: int, named: str
) -> None:
    h = make_harness()

    answer = h.client.post("/v1/purchases", content=json.dumps(body))

    assert answer.status_code == status
    assert answer.headers["content-type"] == "application/json"
    assert named in answer.json()["detail"]
    assert answer.json()["reason"] == "invalid"
    assert h.queue.calls == 0
    assert h.inventory.reads == []  # refused before anything is read


@pytest.mark.parametrize("raw", [b"{", b"", b"\xff\xfe", b'{"event_id": "gig",}'])
def test_purchase__a_body_that_is_not_json_is_400(make_harness: MakeHarness, raw: bytes) -> None:
    h = make_harness()

    answer = h.client.post(
        "/v1/purchases", content=raw, headers={"content-type": "application/json"}
    )

    assert answer.status_code == 400
    assert answer.json()["detail"].startswith("invalid purchase request: request: Invalid JSON")
    assert h.queue.calls == 0


def test_purchase__a_body_too_large_is_413_before_it_is_read(make_harness: MakeHarness) -> None:
    h = make_harness()
    padded = {**purchase(1), "email": "a@" + "b" * 20_000}

    answer = h.client.post("/v1/purchases", json=padded)

    assert answer.status_code == 413
    assert answer.json()["reason"] == "too_large"
    assert h.queue.calls == 0


def test_purchase__an_unknown_event_is_404_read_once(make_harness: MakeHarness) -> None:
    h = make_harness()

    answers = [h.buy(n, event="no-such-gig") for n in range(5)]

    assert [a.status_code for a in answers] == [404] * 5
    assert answers[0].json()["reason"] == "unknown_event"
    assert h.inventory.reads == [["no-such-gig"]]
    assert h.queue.calls == 0


def test_purchase__a_sold_out_event_is_answered_at_the_edge_without_queuing(
    make_harness: MakeHarness,
) -> None:
    h = make_harness(seats=5, sold=5)

    answers = [h.buy(n) for n in range(20)]

    assert [a.status_code for a in answers] == [200] * 20
    assert answers[3].json() == {
        "order_id": order_id_of(purchase(3)),
        "event_id": EVENT,
        "status": "sold_out",
        "status_url": f"/v1/orders/{order_id_of(purchase(3))}",
        "detail": "the event is sold out; this request was not queued",
    }
    assert h.queue.calls == 0
    assert h.inventory.reads == [[EVENT]]  # one read for twenty buyers
    assert h.client.get("/stats").json()["sold_out_at_edge"] == 20


def test_purchase__many_buyers_of_a_hot_event_cost_one_read_and_one_backlog_poll(
    make_harness: MakeHarness,
) -> None:
    h = make_harness(seats=1000)

    answers = [h.buy(n) for n in range(40)]

    assert [a.status_code for a in answers] == [202] * 40
    assert h.inventory.reads == [[EVENT]]
    assert h.queue.attribute_calls == 1  # the poll at startup, none per request
    assert len(set(h.queue.order_ids)) == 40


def test_purchase__seats_released_after_a_sell_out_are_sold_again_once_the_ttl_passes(
    make_harness: MakeHarness,
) -> None:
    h = make_harness(seats=3, sold=3, intake_sold_out_ttl_seconds=1.0)
    assert h.buy(1).status_code == 200
    h.inventory.events[EVENT] = Inventory(capacity=3, sold=2)  # a declined payment released one

    h.clock.advance(0.9)
    within_ttl = h.buy(2)
    h.clock.advance(0.2)
    after_ttl = h.buy(3)

    assert within_ttl.json()["status"] == "sold_out"
    assert after_ttl.status_code == 202
    assert h.queue.order_ids == [order_id_of(purchase(3))]
    assert h.inventory.reads == [[EVENT], [EVENT]]


def test_purchase__fails_open_when_the_inventory_cannot_be_read(make_harness: MakeHarness) -> None:
    h = make_harness()
    h.inventory.failing = True

    answers = [h.buy(n) for n in range(3)]

    # The cache only refuses early what the worker would refuse; unread, the worker decides.
    assert [a.status_code for a in answers] == [202] * 3
    assert h.inventory.reads == [[EVENT]]  # a failed read is remembered for one TTL too


def test_event__shows_the_same_cached_view_the_purchases_get(make_harness: MakeHarness) -> None:
    h = make_harness(seats=3, sold=2, intake_sold_out_ttl_seconds=1.0)

    on_sale = h.client.get(f"/v1/events/{EVENT}")
    h.inventory.events[EVENT] = Inventory(capacity=3, sold=3)
    h.clock.advance(1.0)
    sold_out = h.client.get(f"/v1/events/{EVENT}")
    unknown = h.client.get("/v1/events/no-such-gig")
    invalid = h.client.get("/v1/events/-bad")
    h.inventory.failing = True
    unreadable = h.client.get("/v1/events/other")

    assert (on_sale.status_code, on_sale.json()) == (200, {"event_id": EVENT, "status": "on_sale"})
    assert sold_out.json() == {"event_id": EVENT, "status": "sold_out"}
    assert unknown.status_code == 404
    assert invalid.status_code == 422
    assert unreadable.status_code == 503
    assert unreadable.headers["retry-after"] == "1"
    assert h.inventory.reads == [[EVENT], [EVENT], ["no-such-gig"], ["other"]]


def test_purchase__with_ack_buffered_the_202_comes_before_the_send(
    make_harness: MakeHarness,
) -> None:
    h = make_harness(intake_ack="buffered")
    h.queue.hold()  # SQS is slow

    answer = h.buy(1)

    assert answer.status_code == 202
    assert h.services.enqueuer.buffered == 1
    assert h.queue.order_ids == []
    h.queue.release()
    eventually(lambda: h.queue.order_ids == [order_id_of(purchase(1))], "the send")
