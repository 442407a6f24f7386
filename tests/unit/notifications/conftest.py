"""moto's SES, SNS and DynamoDB in process, with the idempotency table as Pulumi declares it
and the sender identity verified, as the local stack's provisioner does."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws
from notification_fakes import REGION, SENDER, FakeClock, Recording, record_operations

from flashsale.names import Table
from infra.components.tables import TABLE_SPECS
from notifications.notifier import Notifier
from notifications.ratelimit import TokenBucket

TABLE = Table.IDEMPOTENCY.physical_name("unit")


@dataclass
class Aws:
    dynamodb: Any
    ses: Recording  # send_email recorded
    sns: Recording  # publish recorded
    clock: FakeClock
    dynamodb_calls: list[str]  # every DynamoDB operation from the fixture on, in order

    def notifier(self, **overrides: Any) -> Notifier:
        """A notifier on these clients whose rate limiters run on the fake clock."""
        values: dict[str, Any] = {
            "idempotency_table": TABLE,
            "sender": SENDER,
            "email_rate": 1000.0,
            "sms_rate": 1000.0,
            "lease_seconds": 60.0,
            "clock": self.clock,
        }
        notifier = Notifier(self.dynamodb, self.ses, self.sns, **(values | overrides))
        for name, bucket in notifier.limiters.items():
            notifier.limiters[name] = TokenBucket(
                bucket.rate, name=bucket.name, clock=self.clock, sleep=self.clock.sleep
            )
        return notifier

    def sent_email_count(self) -> int:
        """What SES itself counts as sent (not our wrapper): its 24-hour send statistic."""
        return int(self.ses.get_send_quota()["SentLast24Hours"])


@pytest.fixture
def aws(aws_offline: None) -> Iterator[Aws]:
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name=REGION)
        ddb.create_table(
            TableName=TABLE, **TABLE_SPECS[Table.IDEMPOTENCY].create_table_parameters()
        )
        ses = boto3.client("ses", region_name=REGION)
        ses.verify_email_identity(EmailAddress=SENDER)
        sns = boto3.client("sns", region_name=REGION)
        calls = record_operations(ddb)
        yield Aws(ddb, Recording(ses, "send_email"), Recording(sns, "publish"), FakeClock(), calls)
