"""The confirmation's delivery record commits in the saga's transaction: the orchestrator over
moto with the real notifier (moto's SES and SNS). A confirmed order costs the claim and the
transaction; a commit that fails (a lost race, a DynamoDB error) still leaves the record
marked, so the retry sends nothing twice."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError
from moto_tables import REGION, Tables
from notification_fakes import SENDER, Recording, client_error, record_operations, writes
from saga_driver import Clock, Driver

from flashsale.dynamo import from_item
from flashsale.names import IDEMPOTENCY_PK, SAGAS_PK, Table
from notifications import ClaimLost, NotificationKind, Notifier, TransientNotificationError
from notifications.dedup import delivery_key
from outbox import TransactionFailed
from saga import SagaStatus

Sell = Callable[..., list[str]]


@dataclass
class Mail:
    notifier: Notifier
    ses: Recording  # send_email recorded
    sns: Recording  # publish recorded

    def provider_calls(self) -> tuple[int, int]:
        return len(self.ses.calls), len(self.sns.calls)


@pytest.fixture
def mail(tables: Tables, driver: Driver, clock: Clock) -> Mail:
    """The real notifier confirms the driver's sagas (moto's SES and SNS)."""
    ses = Recording(boto3.client("ses", region_name=REGION), "send_email")
    ses.verify_email_identity(EmailAddress=SENDER)
    sns = Recording(boto3.client("sns", region_name=REGION), "publish")
    driver.notifier = Notifier(
        tables.ddb, ses, sns,
        idempotency_table=tables.names[Table.IDEMPOTENCY], sender=SENDER,
        email_rate=1000.0, sms_rate=1000.0, clock=clock,
    )  # fmt: skip
    return Mail(driver.notifier, ses, sns)


def confirmation_record(tables: Tables, order_id: str) -> dict[str, Any]:
    key = delivery_key(order_id, NotificationKind.CONFIRMATION)
    item = tables.ddb.get_item(
        TableName=tables.names[Table.IDEMPOTENCY],
        Key={IDEMPOTENCY_PK: {"S": key}},
        ConsistentRead=True,
    )["Item"]
    return from_item(item)


def assert_marked_sent(tables: Tables, order_id: str) -> None:
    record = confirmation_record(tables, order_id)
    assert record["status"] == "settled" and "lease_until" not in record, record
    for channel in ("email", "sms"):
        assert record[f"outcome_{channel}"]["status"] == "sent", record
        assert record[f"outcome_{channel}"]["message_id"], record


class BeforeFirstTransaction:
    """A DynamoDB client that calls ``interfere`` just before its first ``TransactWriteItems``
    (another writer's move, a fault); the rest goes to the real client."""

    def __init__(self, ddb: Any, interfere: Callable[[], None]) -> None:
        self._ddb = ddb
        self._interfere: Callable[[], None] | None = interfere
        self.transactions = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ddb, name)

    def transact_write_items(self, **kwargs: Any) -> Any:
        self.transactions += 1
        interfere, self._interfere = self._interfere, None
        if interfere is not None:
            interfere()
        return self._ddb.transact_write_items(**kwargs)


def test_confirmation__mark_commits_in_the_saga_transaction(
    tables: Tables, driver: Driver, mail: Mail, sell: Sell
) -> None:
    (order,) = sell(capacity=1, buyers=1, phone=True)
    (charge,) = driver.pending()
    calls = record_operations(tables.ddb)

    outcome = driver.deliver(charge)  # charge, ticket and confirmation: run ahead
    handled = list(calls)

    assert outcome == "completed" and driver.status(order) is SagaStatus.COMPLETED
    # The saga's read, the notification's one claim (e-mail and SMS), one transaction.
    assert handled == ["GetItem", "UpdateItem", "TransactWriteItems"]
    assert writes(handled) == ["UpdateItem", "TransactWriteItems"]
    assert_marked_sent(tables, order)
    assert mail.provider_calls() == (1, 1)
    assert driver.pending() == []  # no confirmation command left to run


def test_confirmation__lost_race__mark_still_written_and_no_second_send(
    tables: Tables, driver: Driver, mail: Mail, sell: Sell
) -> None:
    (order,) = sell(capacity=1, buyers=1, phone=True)
    (charge,) = driver.pending()

    def another_writer_moves_the_saga() -> None:
        tables.ddb.update_item(
            TableName=tables.names[Table.SAGAS],
            Key={SAGAS_PK: {"S": order}},
            UpdateExpression="SET #v = #v + :one",
            ExpressionAttributeNames={"#v": "version"},
            ExpressionAttributeValues={":one": {"N": "1"}},
        )

    racing = BeforeFirstTransaction(tables.ddb, another_writer_moves_the_saga)
    driver.orchestrator.store.dynamodb = racing

    assert driver.deliver(charge) == "completed"  # lost the race, re-read, did it again

    assert racing.transactions == 2
    assert mail.provider_calls() == (1, 1)  # the retry found the record marked
    assert_marked_sent(tables, order)
    state = driver.orchestrator.store.get(order)
    assert state is not None and state.status is SagaStatus.COMPLETED
    assert state.data["confirmation"] == ["already_sent", "already_sent"]


@pytest.mark.parametrize(
    ("fault", "raised"),
    [
        (client_error("ThrottlingException", "Rate exceeded"), TransactionFailed),
        (EndpointConnectionError(endpoint_url="https://dynamodb.invalid"), EndpointConnectionError),
    ],
)
def test_confirmation__commit_failing__still_writes_the_mark(
    tables: Tables,
    driver: Driver,
    mail: Mail,
    sell: Sell,
    fault: Exception,
    raised: type[Exception],
) -> None:
    (order,) = sell(capacity=1, buyers=1, phone=True)
    (charge,) = driver.pending()

    def fail() -> None:
        raise fault

    driver.orchestrator.store.dynamodb = BeforeFirstTransaction(tables.ddb, fail)

    with pytest.raises(raised):
        driver.deliver(charge)

    assert driver.status(order) is SagaStatus.RUNNING  # the transition did not commit...
    assert_marked_sent(tables, order)  # ...the e-mail and the SMS are recorded all the same
    assert driver.deliver(charge) == "completed"  # the queue's redelivery
    assert mail.provider_calls() == (1, 1)


def test_confirmation__claim_taken_over_before_the_commit__is_transient(
    tables: Tables, driver: Driver, mail: Mail, clock: Clock, sell: Sell
) -> None:
    (order,) = sell(capacity=1, buyers=1)
    (charge,) = driver.pending()

    def another_worker_takes_the_claim_over() -> None:
        clock.now += 60  # our lease runs out (a pause, say)
        mail.notifier.records.claim(order, NotificationKind.CONFIRMATION)

    driver.orchestrator.store.dynamodb = BeforeFirstTransaction(
        tables.ddb, another_worker_takes_the_claim_over
    )

    with pytest.raises(ClaimLost) as raised:
        driver.deliver(charge)

    assert isinstance(raised.value, TransientNotificationError)  # the queue redelivers
    assert driver.status(order) is SagaStatus.RUNNING
    record = confirmation_record(tables, order)
    assert record["status"] == "sending" and record["attempts"] == 2  # the other worker's
    assert "outcome_email" not in record


def test_confirmation__a_claim_held_by_a_dead_worker_is_waited_out_as_a_delayed_command(
    tables: Tables, driver: Driver, mail: Mail, clock: Clock, sell: Sell
) -> None:
    (order,) = sell(capacity=1, buyers=1)
    # A worker claimed the confirmation and died (after sending, maybe): its lease holds.
    mail.notifier.records.claim(order, NotificationKind.CONFIRMATION)
    (charge,) = driver.pending()
    driver.deliver(charge)  # runs ahead to the confirmation, which must wait
    (confirm,) = driver.pending()

    assert driver.deliver(confirm) == "retrying"  # not raised: no receive spent on a wait
    (again,) = driver.pending()
    assert again["task"] == "tasks.notify.confirmation"
    assert int(again["delay_seconds"]) >= 61  # the lease (60 s) and a second
    assert driver.status(order) is SagaStatus.RUNNING and mail.provider_calls() == (0, 0)

    clock.now += 61
    assert driver.deliver(again) == "completed"
    assert mail.provider_calls() == (1, 0)  # taken over and sent once
    assert_marked_sent_email_only(tables, order)


def assert_marked_sent_email_only(tables: Tables, order_id: str) -> None:
    record = confirmation_record(tables, order_id)
    assert record["status"] == "settled" and record["outcome_email"]["status"] == "sent", record
