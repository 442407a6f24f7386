"""Notification steps: the purchase confirmation (the saga's last, retriable step) and the
cancellation notice sent once a purchase has been undone.

Both go through ``notifications.Notifier``, which sends at most once per order, kind and
channel. The confirmation is a retriable saga step: a transient failure is re-raised, so SQS
redelivers it with backoff and finally dead-letters it, and the purchase stands meanwhile. Its
delivery record's mark is an effect record of the step (``StepResult.effect_records``): it
commits in the saga's transaction, so a confirmed order usually costs two writes after the
seat (the claim, and the transaction that runs ahead from the charge to the confirmation).
The cancellation notice writes its own mark (``Notifier.send``); a claim another worker still
holds (one that died after sending, say) is waited out by sending the notice's message again,
delayed past the claim's lease (``defer_cancellation``), since the queue's own redeliveries
(1, 2, 4 s) would dead-letter it long before the lease ends.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import structlog

from flashsale import aws
from flashsale.names import QueueRole
from flashsale.settings import get_settings
from flashsale.task_messages import task_message_body
from notifications import (
    DeliveryInProgress,
    Notification,
    NotificationKind,
    Notifier,
    TransientNotificationError,
    notifier_from_settings,
)
from outbox.records import MAX_DELAY_SECONDS
from saga import Command, RetryAfter, SagaNotFound, SagaState, StepResult
from tasks.app import app
from tasks.purchase_saga import STEPS, orchestrator

log = structlog.get_logger(__name__)

CANCELLATION_TASK = "tasks.notify.cancellation"


def notification(state: SagaState, kind: NotificationKind) -> Notification:
    """The saga's notification of ``kind`` to the buyer's addresses; a cancellation mentions
    money only if a charge was refunded."""
    data = state.data
    charged = kind is NotificationKind.CONFIRMATION or data.get("refund") == "refunded"
    return Notification(
        order_id=state.saga_id,
        kind=kind,
        event_id=str(data["event_id"]),
        quantity=int(str(data["quantity"])),
        email=str(data["email"]) if data.get("email") else None,
        phone=str(data["phone"]) if data.get("phone") else None,
        ticket_code=str(data["ticket_code"]) if data.get("ticket_code") else None,
        amount_cents=int(str(data["amount_cents"])) if charged else None,
        currency=str(data["currency"]),
        reason=state.reason[:200] or None,
    )


def confirm_buyer(notifier: Notifier, state: SagaState) -> StepResult:
    """Send the confirmation; its mark goes with the result, to commit with the transition (a
    mark refused there because another worker took the claim over raises ``ClaimLost``). A
    claim another worker still holds is ``RetryAfter`` its lease."""
    try:
        outcome = notifier.deliver(notification(state, NotificationKind.CONFIRMATION))
    except DeliveryInProgress as exc:
        # Another worker's claim (often one that died after sending) holds for up to a lease,
        # longer than the queue's redeliveries last: wait it out as a delayed command.
        raise RetryAfter(exc.retry_after + 1, str(exc)) from exc
    mark = outcome.mark
    return StepResult(
        data={"confirmation": [d.status.value for d in outcome.deliveries]},
        effect_records=[(mark.entry, mark.lost)] if mark is not None else [],
    )


@STEPS.action("notify_buyer", transient=(TransientNotificationError,))
def confirm(state: SagaState) -> StepResult:
    return confirm_buyer(notifier_from_settings(), state)


@app.task(name="tasks.notify.confirmation", acks_late=True)
def confirmation(event: dict[str, Any]) -> str:
    return orchestrator().handle(event)


def notify_cancellation(notifier: Notifier, state: SagaState, defer: Callable[[int], None]) -> str:
    """Send the cancellation notice; a claim another worker still holds is waited out by
    ``defer``-ring the notice by the rest of its lease (plus a second), not by failing."""
    try:
        deliveries = notifier.send(notification(state, NotificationKind.CANCELLATION))
    except DeliveryInProgress as exc:
        delay = min(MAX_DELAY_SECONDS, math.ceil(exc.retry_after) + 1)
        defer(delay)
        log.info("notify.cancellation_deferred", order_id=state.saga_id, delay_s=delay)
        return "deferred"
    return ",".join(d.status.value for d in deliveries)


def defer_cancellation(event: dict[str, Any], delay_seconds: int) -> None:
    """Send the cancellation's message again, visible in ``delay_seconds`` (SQS
    ``DelaySeconds``, on the standard notifications-low queue); the message being handled is
    then acked. A crash in between leaves two messages, and the delivery record sends once."""
    role = QueueRole.NOTIFICATIONS_LOW
    aws.client("sqs").send_message(
        QueueUrl=get_settings().queue_url(role),
        MessageBody=task_message_body(
            CANCELLATION_TASK, {"event": event}, routing_key=role.celery_queue
        ),
        DelaySeconds=delay_seconds,
    )


@app.task(name=CANCELLATION_TASK, acks_late=True)
def cancellation(event: dict[str, Any]) -> str:
    """Tell the buyer their purchase was undone; sent by the saga when it is compensated."""
    command = Command.model_validate(event["payload"])
    state = orchestrator().store.get(command.saga_id)
    if state is None:
        raise SagaNotFound(command.saga_id)
    return notify_cancellation(
        notifier_from_settings(), state, lambda delay: defer_cancellation(event, delay)
    )
