"""Factories for the outbox: records, and the outbox table in moto's in-process DynamoDB."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from flashsale.names import QueueRole, Table
from infra.components.tables import TABLE_SPECS
from outbox.records import OutboxRecord

REGION = "us-east-1"
TABLE = Table.OUTBOX.physical_name("unit")
MakeRecord = Callable[..., OutboxRecord]


def create_outbox_table(ddb: Any, name: str = TABLE) -> str:
    """The outbox table as ``infra.components.tables`` declares it (keys and sparse index)."""
    ddb.create_table(TableName=name, **TABLE_SPECS[Table.OUTBOX].create_table_parameters())
    return name


@pytest.fixture
def make_record() -> MakeRecord:
    """``make_record(aggregate="order-1", sequence=None, **fields)``: sequences count up per
    aggregate unless given."""
    counters: dict[str, Iterator[int]] = {}

    def make(
        aggregate: str = "order-1", sequence: int | None = None, **fields: Any
    ) -> OutboxRecord:
        seq = (
            sequence
            if sequence is not None
            else next(counters.setdefault(aggregate, itertools.count(1)))
        )
        values: dict[str, Any] = {
            "aggregate_id": aggregate,
            "sequence": seq,
            "type": "order.confirmed",
            "destination": QueueRole.PAYMENTS,
            "task": "tasks.payment.charge",
            "payload": {"order_id": aggregate, "amount_cents": 4200},
        }
        return OutboxRecord(**(values | fields))

    return make


@pytest.fixture
def aws(aws_offline: None) -> Iterator[dict[str, Any]]:
    """moto's DynamoDB (with the outbox table) and SQS, in process, for one test."""
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name=REGION)
        create_outbox_table(ddb)
        yield {"dynamodb": ddb, "sqs": boto3.client("sqs", region_name=REGION)}
