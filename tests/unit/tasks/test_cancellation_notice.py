"""The cancellation notice waits out a claim another worker holds by sending itself again,
delayed past the claim's lease, instead of failing into the queue's short redeliveries (1, 2,
4 s) and the DLQ. The claim itself is tested in ``tests/unit/notifications``."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace
from typing import Any

import pytest

import tasks.notify as notify
from flashsale.names import QueueRole
from notifications import DeliveryInProgress
from saga import SagaState, SagaStatus


def undone_purchase() -> SagaState:
    return SagaState(
        saga_id="order-1",
        saga="purchase",
        status=SagaStatus.COMPENSATED,
        step=0,
        data={"event_id": "gig", "quantity": 2, "currency": "eur", "email": "a@example.com"},
        reason="card declined",
    )


class Notifier:
    """``send`` raises ``error`` if given, else answers one delivery per channel."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.sent: list[Any] = []

    def send(self, notification: Any) -> list[Any]:
        if self.error is not None:
            raise self.error
        self.sent.append(notification)
        return [SimpleNamespace(status=SimpleNamespace(value="sent"))]


@pytest.mark.parametrize(("retry_after", "delay"), [(42.2, 44), (0.0, 1), (5000.0, 900)])
def test_a_claim_held_elsewhere__defers_the_notice_past_its_lease(
    retry_after: float, delay: int
) -> None:
    deferred: list[int] = []
    notifier = Notifier(DeliveryInProgress("being sent by another worker", retry_after=retry_after))

    outcome = notify.notify_cancellation(notifier, undone_purchase(), deferred.append)  # type: ignore[arg-type]

    assert outcome == "deferred"
    assert deferred == [delay]  # at most SQS's 15-minute DelaySeconds


def test_a_free_claim__sends_the_notice_and_defers_nothing() -> None:
    deferred: list[int] = []
    notifier = Notifier()

    outcome = notify.notify_cancellation(notifier, undone_purchase(), deferred.append)  # type: ignore[arg-type]

    assert outcome == "sent"
    assert deferred == []
    assert [n.order_id for n in notifier.sent] == ["order-1"]


def test_defer_cancellation__sends_the_same_task_and_event_delayed_to_notifications_low(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(
        notify.aws,
        "client",
        lambda service: SimpleNamespace(send_message=lambda **kw: sent.append(kw)),
    )
    monkeypatch.setattr(
        notify,
        "get_settings",
        lambda: SimpleNamespace(queue_url=lambda role: f"url-of-{role.value}"),
    )
    event = {"event_id": "e-1", "payload": {"saga_id": "order-1"}}

    notify.defer_cancellation(event, 61)

    (call,) = sent
    assert call["QueueUrl"] == f"url-of-{QueueRole.NOTIFICATIONS_LOW.value}"
    assert call["DelaySeconds"] == 61
    envelope = json.loads(base64.b64decode(call["MessageBody"]))
    args, kwargs, _ = json.loads(base64.b64decode(envelope["body"]))
    assert envelope["headers"]["task"] == "tasks.notify.cancellation"
    assert (args, kwargs) == ([], {"event": event})
