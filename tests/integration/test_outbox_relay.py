"""The outbox relay as real processes (``python -m outbox.relay``) against the local stack.

Events are written with the unit of work, exactly as a purchase transaction writes them, and
read back raw from the payments queue (a standard queue): each message body is decoded to the
Celery task's ``event`` argument. Counts are exact; waits poll a condition with a deadline.
"""

from __future__ import annotations

import base64
import json
import random
import signal
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from polling import wait_until

from flashsale.dynamo import from_item
from flashsale.names import OUTBOX_PENDING_SHARD, OUTBOX_PK, QueueRole
from flashsale.settings import Settings
from infra.local.fleet import Fleet
from outbox.leases import LEASE_PREFIX, OWNER, lease_key
from outbox.records import OutboxRecord
from outbox.store import UnitOfWork

pytestmark = pytest.mark.integration

FAST_RELAY = {
    "FLASHSALE_RELAY_LEASE_SECONDS": "3",
    "FLASHSALE_RELAY_POLL_INTERVAL": "0.1",
    "FLASHSALE_RELAY_METRICS_INTERVAL": "2",
}


@pytest.fixture
def fleet(environ: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = Fleet(environ | FAST_RELAY, tmp_path_factory.mktemp("relay-logs"))
    yield fleet
    fleet.stop_all()


class Outbox:
    """Writes events for a run's aggregates and reads back what the relay did with them."""

    def __init__(self, settings: Settings, clients: dict[str, Any]) -> None:
        self.settings = settings
        self.ddb = clients["dynamodb"]
        self.sqs = clients["sqs"]
        self.run = uuid.uuid4().hex[:8]
        self.records: list[OutboxRecord] = []

    def write(self, aggregates: int, per_aggregate: int, **fields: Any) -> list[OutboxRecord]:
        """``per_aggregate`` events for each of ``aggregates`` orders, committed 25 at a time
        interleaved across aggregates (sequence k of every order before k + 1)."""
        made = [
            OutboxRecord(
                aggregate_id=f"{self.run}-order-{a}",
                sequence=s,
                type="order.confirmed",
                destination=fields.get("destination", QueueRole.PAYMENTS),
                task="tasks.payment.charge",
                payload={"order": a, "step": s},
            )
            for s in range(1, per_aggregate + 1)
            for a in range(aggregates)
        ]
        for start in range(0, len(made), 25):
            uow = UnitOfWork(
                outbox_table=self.settings.outbox_table, shards=self.settings.outbox_shards
            )
            for record in made[start : start + 25]:
                uow.add_event(record)
            uow.commit(self.ddb)
        self.records += made
        return made

    def add(self, record: OutboxRecord) -> None:
        uow = UnitOfWork(
            outbox_table=self.settings.outbox_table, shards=self.settings.outbox_shards
        )
        uow.add_event(record)
        uow.commit(self.ddb)
        self.records.append(record)

    def stored_by_sequence(self) -> dict[int, dict[str, Any]]:
        return {int(i["sequence"]): i for i in self.stored()}

    def stored(self) -> list[dict[str, Any]]:
        items = []
        for aggregate in {r.aggregate_id for r in self.records}:
            response = self.ddb.query(
                TableName=self.settings.outbox_table,
                KeyConditionExpression="#pk = :a",
                ExpressionAttributeNames={"#pk": OUTBOX_PK},
                ExpressionAttributeValues={":a": {"S": aggregate}},
                ConsistentRead=True,
            )
            items += [from_item(i) for i in response["Items"]]
        return items

    def receive(self, expected: set[str], timeout: float) -> Counter[str]:
        """Event ids received (with repeats) from the payments queue until ``expected`` all
        arrived; messages of other runs are deleted and ignored."""
        url = self.settings.queue_url(QueueRole.PAYMENTS)
        seen: Counter[str] = Counter()

        def more() -> bool:
            response = self.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            messages = response.get("Messages", [])
            for message in messages:
                envelope = json.loads(base64.b64decode(message["Body"]))
                event = json.loads(base64.b64decode(envelope["body"]))[1]["event"]
                assert envelope["headers"]["id"] == event["event_id"]
                if event["aggregate_id"].startswith(self.run):
                    seen[event["event_id"]] += 1
            if messages:
                self.sqs.delete_message_batch(
                    QueueUrl=url,
                    Entries=[
                        {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]}
                        for n, m in enumerate(messages)
                    ],
                )
            return expected <= set(seen)

        wait_until(more, timeout, f"{len(expected)} events on the payments queue")
        # Whatever a killed relay sent twice is on the queue by now: count it too.
        while self._waiting(url):
            more()
        return seen

    def _waiting(self, url: str) -> bool:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        return attributes["ApproximateNumberOfMessages"] != "0"

    def assert_marked_once_in_order(self) -> None:
        items = self.stored()
        assert len(items) == len(self.records)
        assert [i["event_id"] for i in items if i.get("dispatches") != 1] == []
        assert [i["event_id"] for i in items if OUTBOX_PENDING_SHARD in i] == []
        by_aggregate: dict[str, list[dict[str, Any]]] = {}
        for item in items:
            by_aggregate.setdefault(item[OUTBOX_PK], []).append(item)
        for aggregate, events in by_aggregate.items():
            events.sort(key=lambda i: i["sequence"])
            dispatched = [float(i["dispatched_at"]) for i in events]
            assert dispatched == sorted(dispatched), f"{aggregate} dispatched out of order"

    def all_marked(self) -> bool:
        return all(i.get("dispatches") == 1 for i in self.stored())


@pytest.fixture
def outbox(settings: Settings, clients: dict[str, Any]) -> Outbox:
    return Outbox(settings, clients)


def stats(environ: dict[str, str], variable: str, *, reset: bool = False) -> dict[str, Any]:
    path = "/_flashsale/stats/reset" if reset else "/_flashsale/stats"
    request = urllib.request.Request(environ[variable] + path, method="POST" if reset else "GET")
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.loads(response.read()))


def test_relay__delivers_every_event_once_per_aggregate_in_order(
    fleet: Fleet, outbox: Outbox
) -> None:
    records = outbox.write(aggregates=20, per_aggregate=5)
    fleet.start_relay("relay-1")

    seen = outbox.receive({r.event_id for r in records}, timeout=120)

    assert set(seen) == {r.event_id for r in records}
    assert max(seen.values()) == 1  # no crash, no duplicate
    wait_until(outbox.all_marked, 30, "every record marked")
    outbox.assert_marked_once_in_order()


def test_relay__started_after_an_outage_drains_the_backlog(
    fleet: Fleet, outbox: Outbox, environ: dict[str, str]
) -> None:
    records = outbox.write(aggregates=300, per_aggregate=1)
    stats(environ, "AWS_ENDPOINT_URL_DYNAMODB", reset=True)
    stats(environ, "AWS_ENDPOINT_URL_SQS", reset=True)
    started = time.monotonic()
    fleet.start_relay("relay-backlog", args=["--no-metrics"])

    wait_until(outbox.all_marked, 180, "the backlog to be marked dispatched")
    elapsed = time.monotonic() - started
    dynamodb = stats(environ, "AWS_ENDPOINT_URL_DYNAMODB")["calls"]
    sqs = stats(environ, "AWS_ENDPOINT_URL_SQS")["calls"]
    seen = outbox.receive({r.event_id for r in records}, timeout=60)

    assert set(seen) == {r.event_id for r in records}
    outbox.assert_marked_once_in_order()
    print(
        f"\nrelay backlog: {len(records)} events in {elapsed:.1f} s "
        f"(incl. start) = {len(records) / elapsed:.0f} events/s; "
        f"DynamoDB calls/event {sum(dynamodb.values()) / len(records):.3f} {dynamodb}; "
        f"SQS calls/event {sum(sqs.values()) / len(records):.3f} {sqs}"
    )


def test_relay__sigkilled_again_and_again_still_delivers_everything_and_marks_exactly_once(
    fleet: Fleet, outbox: Outbox
) -> None:
    records = outbox.write(aggregates=60, per_aggregate=5)
    rng = random.Random(7)
    for kill in range(6):
        fleet.start_relay(f"relay-k{kill}")
        # Chaos timing, not a wait for a condition: the kill lands anywhere in a round
        # (after read, after send, before mark).
        time.sleep(rng.uniform(0.2, 1.2))
        fleet.kill(f"relay-k{kill}", signal.SIGKILL)
    fleet.start_relay("relay-final")

    seen = outbox.receive({r.event_id for r in records}, timeout=180)

    assert set(seen) == {r.event_id for r in records}
    wait_until(outbox.all_marked, 60, "every record marked")
    outbox.assert_marked_once_in_order()
    print(f"\nafter 6 SIGKILLs: {sum(seen.values()) - len(seen)} duplicate deliveries")


def test_two_relays__split_the_shards_and_deliver_every_event_in_order(
    fleet: Fleet, outbox: Outbox, settings: Settings, clients: dict[str, Any]
) -> None:
    fleet.start_relay("relay-a")
    fleet.start_relay("relay-b")
    records = outbox.write(aggregates=40, per_aggregate=5)

    seen = outbox.receive({r.event_id for r in records}, timeout=120)
    wait_until(outbox.all_marked, 60, "every record marked")

    assert set(seen) == {r.event_id for r in records}
    outbox.assert_marked_once_in_order()
    owners = {
        from_item(
            clients["dynamodb"].get_item(
                TableName=settings.outbox_table, Key=lease_key(s), ConsistentRead=True
            )["Item"]
        )[OWNER]
        for s in range(settings.outbox_shards)
    }
    assert owners == {"relay-a", "relay-b"}, f"{LEASE_PREFIX}* owners: {owners}"


def test_relay__parks_an_undeliverable_record_after_n_attempts_and_carries_on(
    fleet: Fleet, outbox: Outbox, environ: dict[str, str]
) -> None:
    missing = environ["AWS_ENDPOINT_URL_SQS"] + "/000000000000/flashsale-no-such-queue"
    fleet.start_relay(
        "relay-park",
        extra_env={
            "FLASHSALE_NOTIFICATIONS_QUEUE_URL": missing,
            "FLASHSALE_RELAY_MAX_ATTEMPTS": "3",
            "FLASHSALE_RELAY_RETRY_BASE_SECONDS": "0.2",
        },
    )
    (doomed,) = outbox.write(aggregates=1, per_aggregate=1, destination=QueueRole.NOTIFICATIONS)
    follower = doomed.model_copy(
        update={"event_id": str(uuid.uuid4()), "sequence": 2, "destination": QueueRole.PAYMENTS}
    )
    outbox.add(follower)

    def parked() -> bool:
        return bool(outbox.stored_by_sequence()[1].get("parked"))

    wait_until(parked, 60, "the undeliverable record to be parked")
    item = outbox.stored_by_sequence()[1]
    assert item["attempts"] == 3
    assert OUTBOX_PENDING_SHARD not in item
    assert (
        "NonExistentQueue" in item["parked_reason"] or "QueueDoesNotExist" in item["parked_reason"]
    )
    log = fleet.processes["relay-park"].log.read_text()
    assert '"relay.parked"' in log and doomed.event_id in log
    # A parked record no longer holds its aggregate back.
    assert set(outbox.receive({follower.event_id}, timeout=60)) == {follower.event_id}
