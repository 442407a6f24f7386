"""Purchase sagas over moto's in-process DynamoDB, driven without a relay or workers."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import boto3
import pytest
from moto import mock_aws
from moto_tables import REGION, Tables
from saga_driver import Clock, Driver, FakeProvider

from saga import Orchestrator, RetryPolicy


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def tables(aws_offline: None) -> Iterator[Tables]:
    with mock_aws():
        yield Tables(boto3.client("dynamodb", region_name=REGION))


@pytest.fixture
def driver(tables: Tables, clock: Clock) -> Driver:
    built = tables.orchestrator()
    orchestrator = Orchestrator(
        built.definition,
        built.store,
        outbox_table=built.outbox_table,
        outbox_shards=built.outbox_shards,
        policy=RetryPolicy(attempts=3, backoff_seconds=1, cap_seconds=4),
        clock=clock,
    )
    return Driver(tables, orchestrator, FakeProvider(), clock)


@pytest.fixture
def sell(driver: Driver) -> Callable[..., list[str]]:
    """``sell(capacity, buyers, first=1, phone=False)``: see ``Driver.sell``."""
    return driver.sell
