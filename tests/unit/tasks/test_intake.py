"""``Intake``: accepted requests leave in order, many per message, ten messages per call."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from intake_fakes import FakeClock, FakeSqs, batch_of, fail, task_of

from flashsale.messages import PurchaseBatch, PurchaseRequest
from tasks.exceptions import EnqueueFailed, InvalidPurchaseRequest
from tasks.intake import PURCHASE_TASK, SEND_ATTEMPTS, Intake

MakeIntake = Callable[..., Intake]
BuyerRequest = Callable[..., dict[str, Any]]


def buyers(entries: list[dict[str, Any]]) -> list[str]:
    return [r["buyer_id"] for e in entries for r in batch_of(e)["requests"]]


def seqs(entries: list[dict[str, Any]]) -> list[int]:
    return [r["accepted_seq"] for e in entries for r in batch_of(e)["requests"]]


def test_intake__puts_many_requests_in_one_message(
    make_intake: MakeIntake, sqs: FakeSqs, buyer_request: BuyerRequest
) -> None:
    intake = make_intake(batch_size=3)
    for n in range(7):
        intake.submit(buyer_request(n))

    assert intake.flush() == 3

    assert len(sqs.calls) == 1
    assert [len(batch_of(e)["requests"]) for e in sqs.entries] == [3, 3, 1]
    assert intake.messages_sent == 3


def test_intake__sends_by_itself_once_ten_messages_are_buffered(
    make_intake: MakeIntake, sqs: FakeSqs, buyer_request: BuyerRequest
) -> None:
    intake = make_intake(batch_size=2)
    for n in range(19):
        intake.submit(buyer_request(n))
    assert sqs.calls == []

    intake.submit(buyer_request(19))

    assert [len(call.entries) for call in sqs.calls] == [10]
    assert buyers(sqs.entries) == [f"buyer-{n}" for n in range(20)]


def test_intake__each_message_is_the_purchase_task_for_its_events_fifo_group(
    make_intake: MakeIntake, sqs: FakeSqs, buyer_request: BuyerRequest
) -> None:
    intake = make_intake(batch_size=2)
    for n in range(5):
        intake.submit(buyer_request(n, event="gig-a" if n % 2 else "gig-b"))

    intake.flush()

    for entry in sqs.entries:
        headers, kwargs = task_of(entry)
        batch = PurchaseBatch.model_validate(kwargs["batch"])
        assert headers["task"] == PURCHASE_TASK
        assert entry["MessageGroupId"] == batch.event_id
        assert entry["MessageDeduplicationId"] == batch.batch_id
    groups = [(e["MessageGroupId"], buyers([e])) for e in sqs.entries]
    assert sorted(groups) == [
        ("gig-a", ["buyer-1", "buyer-3"]),
        ("gig-b", ["buyer-0", "buyer-2"]),
        ("gig-b", ["buyer-4"]),
    ]
    assert {c.queue_url for c in sqs.calls} == {
        "https://sqs.unit.invalid/0/flashsale-unit-purchases.fifo"
    }


def test_intake__never_mixes_events_in_one_call(
    make_intake: MakeIntake, sqs: FakeSqs, buyer_request: BuyerRequest
) -> None:
    intake = make_intake(batch_size=1)
    for n in range(12):
        intake.submit(buyer_request(n, event=f"gig-{n % 2}"))

    intake.flush()

    assert [len({e["MessageGroupId"] for e in call.entries}) for call in sqs.calls] == [1, 1]


def test_intake__the_same_requests_get_the_same_dedup_ids(
    clock: FakeClock, buyer_request: BuyerRequest
) -> None:
    """A resent batch must be dropped by the FIFO queue: its dedup id depends only on its
    orders, not on when or by which intake process it was sent."""
    dedup_ids = []
    for _ in range(2):
        sqs = FakeSqs()
        intake = Intake(sqs, "q", batch_size=2, linger_ms=20, max_per_request=8)
        for n in range(5):
            intake.submit(buyer_request(n))
        intake.close()
        dedup_ids.append([e["MessageDeduplicationId"] for e in sqs.entries])
        clock.advance(60)

    assert dedup_ids[0] == dedup_ids[1]
    assert len(set(dedup_ids[0])) == 3


def test_intake__keeps_acceptance_order_across_messages(
    make_intake: MakeIntake, sqs: FakeSqs, buyer_request: BuyerRequest
) -> None:
    intake = make_intake(batch_size=4)
    accepted = [intake.submit(buyer_request(n)) for n in range(30)]

    intake.flush()

    assert [e["Id"] for e in sqs.entries] == [str(n) for n in range(8)]
    assert buyers(sqs.entries) == [f"buyer-{n}" for n in range(30)]
    assert seqs(sqs.entries) == [a.accepted_seq for a in accepted]
    assert seqs(sqs.entries) == sorted(set(seqs(sqs.entries)))


def test_intake__answers_with_the_order_id_and_the_place_in_line(
    make_intake: MakeIntake, buyer_request: BuyerRequest
) -> None:
    intake = make_intake()
    first = intake.submit(buyer_request(1))
    second = intake.submit(PurchaseRequest(**buyer_request(2)))

    assert first.order_id == PurchaseRequest(**buyer_request(1)).order_id
    assert first.event_id == "gig"
    assert second.accepted_seq > first.accepted_seq


@pytest.mark.parametrize("first_failed", [0, 3, 9])
def test_intake__resends_from_the_first_failed_entry_on(
    make_intake: MakeIntake, sqs: FakeSqs, buyer_request: BuyerRequest, first_failed: int
) -> None:
    sqs.script = [fail(str(first_failed), str(min(first_failed + 2, 9)))]
    sqs.max_calls = 5
    intake = make_intake(batch_size=1)

    for n in range(10):  # the tenth fills ten messages: sent from submit
        intake.submit(buyer_request(n))

    first, resent = sqs.calls
    assert len(first.entries) == 10
    assert resent.entries == first.entries[first_failed:]  # same bodies, same dedup ids
    assert intake.messages_sent == 10


def test_intake__resends_again_after_a_second_partial_failure(
    make_intake: MakeIntake, sqs: FakeSqs, buyer_request: BuyerRequest
) -> None:
    sqs.script = [fail("3"), fail("6")]
    sqs.max_calls = 5
    intake = make_intake(batch_size=1)
    for n in range(10):
        intake.submit(buyer_request(n))

    assert [[e["Id"] for e in call.entries] for call in sqs.calls] == [
        [str(n) for n in range(10)],
        [str(n) for n in range(3, 10)],
        [str(n) for n in range(6, 10)],
    ]


def test_intake__raises_when_sqs_says_the_sender_is_at_fault(
    make_intake: MakeIntake, sqs: FakeSqs, buyer_request: BuyerRequest
) -> None:
    sqs.script = [fail("1", sender_fault=True)]
    intake = make_intake(batch_size=1)
    for n in range(3):
        intake.submit(buyer_request(n))

    with pytest.raises(EnqueueFailed, match="SQS refused purchase messages"):
        intake.flush()

    assert len(sqs.calls) == 1


def test_intake__keeps_unsent_requests_buffered_in_order_after_a_failure(
    make_intake: MakeIntake, sqs: FakeSqs, buyer_request: BuyerRequest
) -> None:
    sqs.script = [fail("0", sender_fault=True)]
    intake = make_intake(batch_size=1)
    for n in range(3):
        intake.submit(buyer_request(n))
    with pytest.raises(EnqueueFailed):
        intake.flush()

    assert intake.flush() == 3  # nothing accepted was dropped
    assert buyers(sqs.calls[-1].entries) == buyers(sqs.calls[0].entries)


def test_intake__gives_up_after_repeated_partial_failures_and_keeps_the_requests(
    make_intake: MakeIntake, sqs: FakeSqs, buyer_request: BuyerRequest
) -> None:
    sqs.script = [fail("0")] * SEND_ATTEMPTS
    sqs.max_calls = SEND_ATTEMPTS + 1
    intake = make_intake(batch_size=1)
    for n in range(2):
        intake.submit(buyer_request(n))

    with pytest.raises(EnqueueFailed, match="kept failing"):
        intake.flush()
    assert len(sqs.calls) == SEND_ATTEMPTS
    assert intake.flush() == 2


def test_intake__refuses_more_tickets_than_the_limit_and_sends_nothing(
    make_intake: MakeIntake, sqs: FakeSqs, buyer_request: BuyerRequest
) -> None:
    intake = make_intake(max_per_request=4)

    with pytest.raises(InvalidPurchaseRequest, match="quantity: at most 4 tickets"):
        intake.submit(buyer_request(1, quantity=5))
    intake.submit(buyer_request(2, quantity=4))

    intake.flush()
    assert buyers(sqs.entries) == ["buyer-2"]


def test_intake__never_enqueues_an_invalid_request(
    make_intake: MakeIntake, sqs: FakeSqs, buyer_request: BuyerRequest
) -> None:
    intake = make_intake()

    with pytest.raises(InvalidPurchaseRequest, match="buyer_id"):
        intake.submit(buyer_request(1) | {"buyer_id": "x\x00"})

    assert intake.flush() == 0
    assert sqs.calls == []


def test_intake__close_sends_what_is_buffered(
    make_intake: MakeIntake, sqs: FakeSqs, buyer_request: BuyerRequest
) -> None:
    intake = make_intake(linger_ms=1000)
    for n in range(3):
        intake.submit(buyer_request(n))
    assert sqs.calls == []

    intake.close()

    assert buyers(sqs.entries) == ["buyer-0", "buyer-1", "buyer-2"]


def test_intake__sends_a_lingering_request_once_its_wait_is_over(
    make_intake: MakeIntake, sqs: FakeSqs, clock: FakeClock, buyer_request: BuyerRequest
) -> None:
    intake = make_intake(linger_ms=50)
    intake.submit(buyer_request(1))

    clock.advance(0.06)

    assert sqs.sent.wait(timeout=10), "the linger thread never flushed"
    assert buyers(sqs.entries) == ["buyer-1"]


def test_intake__places_in_line_strictly_increase_under_concurrent_submits(
    buyer_request: BuyerRequest,
) -> None:
    """Real clock, eight threads: no two buyers share a place, and each event's requests reach
    SQS in the order of their places, however the flushes interleave."""
    sqs = FakeSqs()
    intake = Intake(sqs, "q", batch_size=5, linger_ms=1, max_per_request=8)
    per_thread: dict[int, list[int]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def buy(t: int) -> None:
        start.wait()
        try:
            per_thread[t] = [
                intake.submit(buyer_request(t * 1000 + n, event=f"gig-{n % 2}")).accepted_seq
                for n in range(150)
            ]
        except BaseException as exc:  # surfaced below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=buy, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    intake.close()

    assert errors == []
    assert all(s == sorted(set(s)) for s in per_thread.values())
    every = [s for ss in per_thread.values() for s in ss]
    assert len(set(every)) == len(every) == 1200
    for event in ("gig-0", "gig-1"):
        sent = seqs([e for e in sqs.entries if e["MessageGroupId"] == event])
        assert sent == sorted(sent)
        assert len(sent) == 600
