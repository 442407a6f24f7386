"""Unit tests run on a fresh machine: no stack, no outputs file, no network.

Every unit test sees the settings below (the Celery config reads ``Settings`` when the app is
first configured); nothing sends to these URLs (clients are fakes or moto's in-process mocks).
The outputs file is pointed at a path that does not exist so a running local stack's outputs
never leak in. They are set per test and removed after it, so integration tests that run in
the same session see only their own stack.

``aws_offline`` is for tests that use moto's in-process mocks: it removes the endpoints a
developer's shell may export for the local stack, so boto3 never leaves the process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from flashsale.settings import get_settings

_UNIT_SETTINGS = {
    "FLASHSALE_OUTPUTS_FILE": "/nonexistent/flashsale-unit-tests/outputs.json",
    "FLASHSALE_PURCHASES_QUEUE_URL": "https://sqs.unit.invalid/0/flashsale-unit-purchases.fifo",
    "FLASHSALE_PURCHASES_DLQ_URL": "https://sqs.unit.invalid/0/flashsale-unit-purchases-dlq.fifo",
    "FLASHSALE_PAYMENTS_QUEUE_URL": "https://sqs.unit.invalid/0/flashsale-unit-payments",
    "FLASHSALE_PAYMENTS_DLQ_URL": "https://sqs.unit.invalid/0/flashsale-unit-payments-dlq",
    "FLASHSALE_TICKETS_QUEUE_URL": "https://sqs.unit.invalid/0/flashsale-unit-tickets",
    "FLASHSALE_TICKETS_DLQ_URL": "https://sqs.unit.invalid/0/flashsale-unit-tickets-dlq",
    "FLASHSALE_NOTIFICATIONS_LOW_QUEUE_URL": "https://sqs.unit.invalid/0/flashsale-unit-notifications-low",
    "FLASHSALE_NOTIFICATIONS_LOW_DLQ_URL": (
        "https://sqs.unit.invalid/0/flashsale-unit-notifications-low-dlq"
    ),
    "FLASHSALE_NOTIFICATIONS_QUEUE_URL": "https://sqs.unit.invalid/0/flashsale-unit-notifications",
    "FLASHSALE_NOTIFICATIONS_DLQ_URL": "https://sqs.unit.invalid/0/flashsale-unit-notifications-dlq",
    "FLASHSALE_INVENTORY_TABLE": "flashsale-unit-inventory",
    "FLASHSALE_ORDERS_TABLE": "flashsale-unit-orders",
    "FLASHSALE_IDEMPOTENCY_TABLE": "flashsale-unit-idempotency",
    "FLASHSALE_OUTBOX_TABLE": "flashsale-unit-outbox",
    "FLASHSALE_SAGAS_TABLE": "flashsale-unit-sagas",
}


@pytest.fixture(autouse=True)
def unit_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key, value in _UNIT_SETTINGS.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def aws_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials, and no endpoint from the developer's shell (``eval "$(python -m
    infra.local env)"`` exports ``AWS_ENDPOINT_URL_*``): moto must answer, not the local stack."""
    for key in list(os.environ):
        if key.startswith("AWS_ENDPOINT_URL") or key in {"AWS_PROFILE", "AWS_SESSION_TOKEN"}:
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
