"""Fakes for the notification tests (here and in the saga's): a settable clock, a client
wrapper that records and fails calls, around moto's in-process SES, SNS and DynamoDB, and a
record of the DynamoDB operations a client makes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from notifications.messages import Notification, NotificationKind

REGION = "us-east-1"
SENDER = "tickets@flashsale.example.com"
BUYER_EMAIL = "buyer@example.com"
BUYER_PHONE = "+14155550100"


class FakeClock:
    """Time that moves only when a test says so; ``sleep`` advances it."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def client_error(code: str, message: str = "", status: int = 400) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "Call",
    )


class Recording:
    """Wraps a boto3 client: every call of ``method`` is recorded; queued errors are raised
    (one per call, in order) before the real call is made."""

    def __init__(self, client: Any, method: str) -> None:
        self._client = client
        self._method = method
        self.calls: list[dict[str, Any]] = []
        self.errors: list[Exception] = []
        self.succeeded = 0

    def fail_next(self, *errors: Exception) -> None:
        self.errors.extend(errors)

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._client, name)
        if name != self._method:
            return real

        def call(**kwargs: Any) -> Any:
            self.calls.append(kwargs)
            if self.errors:
                raise self.errors.pop(0)
            response = real(**kwargs)
            self.succeeded += 1
            return response

        return call


WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})


def record_operations(client: Any) -> list[str]:
    """The names of the operations ``client`` calls from now on (every call that reaches
    DynamoDB, moto included, whatever wraps the client), in order."""
    operations: list[str] = []

    def before_call(model: Any, **_: Any) -> None:
        operations.append(model.name)

    client.meta.events.register("before-call.dynamodb", before_call)
    return operations


def writes(operations: list[str]) -> list[str]:
    """The write calls among ``operations``."""
    return [op for op in operations if op in WRITES]


MakeNotification = Callable[..., Notification]


def make_notification(
    order_id: str = "order-1",
    kind: NotificationKind = NotificationKind.CONFIRMATION,
    **fields: Any,
) -> Notification:
    values: dict[str, Any] = {
        "order_id": order_id,
        "kind": kind,
        "event_id": "gig-2025",
        "quantity": 2,
        "email": BUYER_EMAIL,
        "phone": BUYER_PHONE,
        "amount_cents": 10000,
    }
    if kind is NotificationKind.CONFIRMATION:
        values["ticket_code"] = f"T-{order_id}"
    return Notification(**(values | fields))
