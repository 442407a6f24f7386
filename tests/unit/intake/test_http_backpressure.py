"""Backpressure: past the backlog, buffer or in-flight bound the intake answers 503 with
``Retry-After`` at once; what it holds never grows past its bounds; nothing accepted is lost."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from intake_http_fakes import FakeQueue, eventually, run_async
from intake_http_stack import MakeHarness, order_id_of, purchase

from flashsale.messages import PurchaseRequest
from intake.enqueue import Enqueuer


def refused(answer: Any, reason: str) -> bool:
    return (
        answer.status_code == 503
        and answer.headers["retry-after"] == "1"
        and answer.json()["reason"] == reason
    )


def test_backlog__past_the_bound_new_buyers_get_503_with_retry_after(
    make_harness: MakeHarness,
) -> None:
    h = make_harness(intake_backlog_limit=100)
    h.queue.depth = 101
    h.run(h.services.backlog.poll)

    over = h.buy(1)
    h.queue.depth = 100  # the workers drained a little: at the bound is not past it
    h.run(h.services.backlog.poll)
    at_bound = h.buy(2)

    assert refused(over, "backlog")
    assert "101 purchase messages are waiting (limit 100)" in over.json()["detail"]
    assert at_bound.status_code == 202
    assert h.queue.order_ids == [order_id_of(purchase(2))]
    assert h.client.get("/stats").json()["overloaded"] == {"backlog": 1}


def test_backlog__a_sold_out_event_is_still_answered_sold_out(make_harness: MakeHarness) -> None:
    h = make_harness(seats=2, sold=2, intake_backlog_limit=100)
    h.queue.depth = 5000
    h.run(h.services.backlog.poll)

    assert h.buy(1).json()["status"] == "sold_out"  # the cheap, final answer comes first


def test_buffer__full_buffer_gets_503_and_never_holds_more_than_its_bound(
    make_harness: MakeHarness,
) -> None:
    h = make_harness(seats=100, intake_buffer_limit=5)
    h.queue.hold()  # SQS is slow: sends do not come back

    with ThreadPoolExecutor(30) as pool:
        pending = [pool.submit(h.buy, n) for n in range(30)]
        eventually(lambda: sum(f.done() for f in pending) == 25, "25 refusals")
        assert h.services.enqueuer.buffered == 5
        h.queue.release()
        answers = [f.result() for f in pending]

    accepted = [a for a in answers if a.status_code == 202]
    assert len(accepted) == 5
    assert sum(refused(a, "buffer") for a in answers) == 25
    assert sorted(h.queue.order_ids) == sorted(a.json()["order_id"] for a in accepted)
    assert h.services.enqueuer.buffered == 0


def test_enqueue__not_on_the_queue_in_time_is_503_then_sent_and_a_retry_is_not_sent_again(
    make_harness: MakeHarness,
) -> None:
    h = make_harness(intake_enqueue_timeout_seconds=0.3)
    h.queue.fail()

    late = h.buy(1)
    h.queue.heal()
    eventually(lambda: h.queue.order_ids == [order_id_of(purchase(1))], "the late send")
    retry = h.buy(1)

    assert refused(late, "enqueue_timeout")
    assert "retry with the same request_id" in late.json()["detail"]
    assert retry.status_code == 202
    assert retry.json()["order_id"] == order_id_of(purchase(1))
    assert h.queue.order_ids == [order_id_of(purchase(1))]  # the late send was the one


def test_in_flight__past_the_bound_requests_get_503_at_once_and_health_still_answers(
    make_harness: MakeHarness,
) -> None:
    h = make_harness(seats=100, intake_max_in_flight=3)
    h.queue.hold()

    with ThreadPoolExecutor(3) as pool:
        pending = [pool.submit(h.buy, n) for n in range(3)]
        eventually(lambda: h.services.enqueuer.buffered == 3, "three requests in flight")
        over = h.buy(99)
        health = h.client.get("/health")
        h.queue.release()
        answers = [f.result() for f in pending]

    assert refused(over, "in_flight")
    assert health.status_code == 200
    assert [a.status_code for a in answers] == [202] * 3
    stats = h.client.get("/stats").json()
    assert stats["peak_in_flight"] == 3
    assert stats["overloaded"] == {"in_flight": 1}


def test_shutdown__flushes_the_buffer_and_answers_who_was_waiting() -> None:
    async def scenario() -> tuple[Any, FakeQueue]:
        queue = FakeQueue()
        # A linger no request would outlive: only closing sends the buffer.
        enqueuer = Enqueuer(queue, "https://sqs.invalid/q.fifo", batch_size=32, linger_ms=60_000,
                            max_per_request=8, buffer_limit=100, timeout=30)  # fmt: skip
        waiting = [
            asyncio.create_task(enqueuer.enqueue(PurchaseRequest.model_validate(purchase(n))))
            for n in range(3)
        ]
        while enqueuer.buffered < 3:
            await asyncio.sleep(0)  # let the three reach the buffer; nothing is sent yet
        await enqueuer.close()
        return await asyncio.gather(*waiting), queue

    accepted, queue = run_async(scenario())

    assert [a.order_id for a in accepted] == [order_id_of(purchase(n)) for n in range(3)]
    assert queue.order_ids == [order_id_of(purchase(n)) for n in range(3)]
    assert queue.calls == 1
