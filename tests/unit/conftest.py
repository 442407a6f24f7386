"""Unit tests run on a fresh machine: no stack, no outputs file, no network.

Importing ``tasks`` builds the Celery app, whose config reads ``Settings`` once at import
(``tasks.celeryconfig``). The values below satisfy it; nothing in the unit tests sends to these
URLs (clients are fakes or moto's in-process mocks). ``setdefault`` leaves a developer's own
values alone, but the outputs file is pointed at a path that does not exist so a running
local stack's outputs never leak in.

``aws_offline`` is for tests that use moto's in-process mocks: it removes the endpoints a
developer's shell may export for the local stack, so boto3 never leaves the process.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_UNIT_SETTINGS = {
    "FLASHSALE_OUTPUTS_FILE": "/nonexistent/flashsale-unit-tests/outputs.json",
    "FLASHSALE_PURCHASES_QUEUE_URL": "https://sqs.unit.invalid/0/flashsale-unit-purchases.fifo",
    "FLASHSALE_PURCHASES_DLQ_URL": "https://sqs.unit.invalid/0/flashsale-unit-purchases-dlq.fifo",
    "FLASHSALE_PAYMENTS_QUEUE_URL": "https://sqs.unit.invalid/0/flashsale-unit-payments",
    "FLASHSALE_PAYMENTS_DLQ_URL": "https://sqs.unit.invalid/0/flashsale-unit-payments-dlq",
    "FLASHSALE_NOTIFICATIONS_QUEUE_URL": "https://sqs.unit.invalid/0/flashsale-unit-notifications",
    "FLASHSALE_NOTIFICATIONS_DLQ_URL": "https://sqs.unit.invalid/0/flashsale-unit-notifications-dlq",
    "FLASHSALE_INVENTORY_TABLE": "flashsale-unit-inventory",
    "FLASHSALE_ORDERS_TABLE": "flashsale-unit-orders",
    "FLASHSALE_IDEMPOTENCY_TABLE": "flashsale-unit-idempotency",
    "FLASHSALE_OUTBOX_TABLE": "flashsale-unit-outbox",
    "FLASHSALE_SAGAS_TABLE": "flashsale-unit-sagas",
}

os.environ["FLASHSALE_OUTPUTS_FILE"] = _UNIT_SETTINGS["FLASHSALE_OUTPUTS_FILE"]
for _key, _value in _UNIT_SETTINGS.items():
    os.environ.setdefault(_key, _value)


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
