"""The outbox relay as real processes (``python -m outbox.relay``) against the local stack.

Events are written with the unit of work, exactly as a purchase transaction writes them, and
read back raw from the payments queue (a standard queue, in the order it hands messages out):
each message body is decoded to the Celery task's ``event`` argument. Record and lease state is
read with BatchGetItem. Counts are exact; waits poll a condition with a deadline.
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
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from local_stacks import running_stack
from polling import wait_until
from scenarios import Scenario

from flashsale.dynamo import from_item
from flashsale.names import OUTBOX_PENDING_SHARD, OUTBOX_PK, OUTBOX_SK, QueueRole
from flashsale.settings import Settings
from infra.local.fleet import AppProcess, Fleet
from outbox.leases import LEASE_UNTIL, OWNER, assign, lease_key
from outbox.records import OutboxRecord
from outbox.relay import CrashPoint
from outbox.store import UnitOfWork

pytestmark = pytest.mark.integration

LEASE_SECONDS = 3.0
# A dead relay's heartbeat and leases expire within one lease duration; the survivors notice at
# their next membership check (every third of one) and may need one more to hand shards over
# among themselves: two durations bound the takeover (``outbox/leases.py``).
TAKEOVER_BOUND_SECONDS = 2 * LEASE_SECONDS
FAST_RELAY = {
    "FLASHSALE_RELAY_LEASE_SECONDS": str(LEASE_SECONDS),
    "FLASHSALE_RELAY_POLL_INTERVAL": "0.1",
    "FLASHSALE_RELAY_METRICS_INTERVAL": "2",
}


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Its own stack: the queues are read whole, so no other module's outbox records (the
    purchase sagas' commands) may be relayed into them."""
    yield from running_stack(tmp_path_factory)


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
        self.stream: list[tuple[str, int, str]] = []  # (aggregate, sequence, event id) received

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
        """Every record of this run, read consistently with BatchGetItem (100 keys a call)."""
        keys = [
            {OUTBOX_PK: {"S": r.aggregate_id}, OUTBOX_SK: {"N": str(r.sequence)}}
            for r in self.records
        ]
        return [from_item(i) for i in batch_get(self.ddb, self.settings.outbox_table, keys)]

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
                    self.stream.append(
                        (event["aggregate_id"], event["sequence"], event["event_id"])
                    )
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

    def assert_delivered_in_order(self) -> None:
        """Per aggregate, the delivered stream never goes back: first deliveries in sequence
        order, a redelivery only of the latest event (1, 2, 2, 3 — never 1, 2, 1)."""
        by_aggregate: dict[str, list[int]] = {}
        for aggregate, sequence, _ in self.stream:
            by_aggregate.setdefault(aggregate, []).append(sequence)
        expected = {r.aggregate_id for r in self.records}
        assert set(by_aggregate) == expected
        for aggregate, sequences in by_aggregate.items():
            assert sequences == sorted(sequences), f"{aggregate} delivered as {sequences}"
            assert sorted(set(sequences)) == list(range(1, len(set(sequences)) + 1))

    def all_marked(self) -> bool:
        return all(i.get("dispatches") == 1 for i in self.stored())


def batch_get(ddb: Any, table: str, keys: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Items for ``keys``, consistently, 100 keys per BatchGetItem (unprocessed keys retried)."""
    items: list[dict[str, Any]] = []
    for start in range(0, len(keys), 100):
        request: dict[str, Any] = {
            table: {"Keys": list(keys[start : start + 100]), "ConsistentRead": True}
        }
        while request:
            response = ddb.batch_get_item(RequestItems=request)
            items += response["Responses"].get(table, [])
            request = response.get("UnprocessedKeys") or {}
    return items


def lease_owners(ddb: Any, settings: Settings) -> dict[int, str | None]:
    """Each shard's owner while its lease runs (None: free, released or expired)."""
    keys = [lease_key(s) for s in range(settings.outbox_shards)]
    now = time.time()
    owners: dict[int, str | None] = dict.fromkeys(range(settings.outbox_shards))
    for item in map(from_item, batch_get(ddb, settings.outbox_table, keys)):
        if float(item[LEASE_UNTIL]) > now:
            owners[int(str(item[OUTBOX_PK]).split("#")[1])] = str(item[OWNER])
    return owners


def split_as_assigned(ddb: Any, settings: Settings, relays: Sequence[str]) -> bool:
    """Every shard leased to the relay the membership assigns it to."""
    wanted = {s: r for r, shards in assign(settings.outbox_shards, relays).items() for s in shards}
    return lease_owners(ddb, settings) == wanted


def log_events(process: AppProcess, name: str) -> list[dict[str, Any]]:
    """A relay process's structured log lines of one event (``relay.dispatched``, ...)."""
    events = []
    for line in process.log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # not one of the relay's JSON lines
        if isinstance(entry, dict) and entry.get("event") == name:
            events.append(entry)
    return events


def dispatched_by(process: AppProcess) -> int:
    """Records a relay process marked dispatched, from its ``relay.dispatched`` lines."""
    return sum(int(e["count"]) for e in log_events(process, "relay.dispatched"))


@pytest.fixture
def outbox(settings: Settings, clients: dict[str, Any]) -> Outbox:
    return Outbox(settings, clients)


def stats(environ: dict[str, str], variable: str, *, reset: bool = False) -> dict[str, Any]:
    path = "/_flashsale/stats/reset" if reset else "/_flashsale/stats"
    request = urllib.request.Request(environ[variable] + path, method="POST" if reset else "GET")
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.loads(response.read()))


@pytest.mark.scenario(
    "outbox relay: every event once, in order",
    injected="none: 100 events, 20 aggregates, 1 relay",
    unit="events",
)
def test_relay__delivers_every_event_once_per_aggregate_in_order(
    fleet: Fleet, outbox: Outbox, scenario: Scenario
) -> None:
    records = outbox.write(aggregates=20, per_aggregate=5)
    fleet.start_relay("relay-1")

    seen = outbox.receive({r.event_id for r in records}, timeout=120)
    record_delivery(scenario, records, seen)

    assert set(seen) == {r.event_id for r in records}
    assert max(seen.values()) == 1  # no crash, no duplicate
    wait_until(outbox.all_marked, 30, "every record marked")
    outbox.assert_marked_once_in_order()
    outbox.assert_delivered_in_order()


@pytest.mark.scenario(
    "outbox relay outage: backlog drained",
    injected="relay down while 300 events were committed",
    unit="events",
)
def test_relay__started_after_an_outage_drains_the_backlog(
    fleet: Fleet, outbox: Outbox, environ: dict[str, str], scenario: Scenario
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
    record_delivery(scenario, records, seen, drained_s=elapsed)

    assert set(seen) == {r.event_id for r in records}
    outbox.assert_marked_once_in_order()
    print(
        f"\nrelay backlog: {len(records)} events in {elapsed:.1f} s "
        f"(incl. start) = {len(records) / elapsed:.0f} events/s; "
        f"DynamoDB calls/event {sum(dynamodb.values()) / len(records):.3f} {dynamodb}; "
        f"SQS calls/event {sum(sqs.values()) / len(records):.3f} {sqs}"
    )


@pytest.mark.scenario(
    "outbox relay SIGKILLed 6 times at random",
    injected="6 SIGKILLs anywhere in a round",
    unit="events",
)
def test_relay__sigkilled_again_and_again_still_delivers_everything_and_marks_exactly_once(
    fleet: Fleet, outbox: Outbox, scenario: Scenario
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
    record_delivery(scenario, records, seen, sigkills=6)

    assert set(seen) == {r.event_id for r in records}
    wait_until(outbox.all_marked, 60, "every record marked")
    outbox.assert_marked_once_in_order()
    print(f"\nafter 6 SIGKILLs: {sum(seen.values()) - len(seen)} duplicate deliveries")


@pytest.mark.scenario(
    "two outbox relays",
    injected="2 relays sharing 8 shards",
    unit="events",
)
def test_two_relays__split_the_shards_and_deliver_every_event_in_order(
    fleet: Fleet, outbox: Outbox, settings: Settings, clients: dict[str, Any], scenario: Scenario
) -> None:
    fleet.start_relay("relay-a")
    fleet.start_relay("relay-b")
    records = outbox.write(aggregates=40, per_aggregate=5)

    seen = outbox.receive({r.event_id for r in records}, timeout=120)
    record_delivery(scenario, records, seen)
    wait_until(outbox.all_marked, 60, "every record marked")

    assert set(seen) == {r.event_id for r in records}
    outbox.assert_marked_once_in_order()
    outbox.assert_delivered_in_order()
    owners = set(lease_owners(clients["dynamodb"], settings).values())
    assert owners == {"relay-a", "relay-b"}, f"lease owners: {owners}"


class IdempotentConsumer:
    """A downstream effect keyed by event id, as the Celery tasks do it: a redelivered event
    is seen again and skipped."""

    def __init__(self) -> None:
        self.effects: Counter[str] = Counter()

    def handle(self, event_id: str) -> bool:
        if event_id in self.effects:
            return False
        self.effects[event_id] += 1
        return True


def relay_until_all_marked(
    fleet: Fleet, outbox: Outbox, point: CrashPoint, probability: float, deadline: float
) -> list[AppProcess]:
    """Run one relay with the crash drill armed, restarting it (same owner, as a supervisor
    would) every time it kills itself, until every record is marked. Returns every process."""
    owner = f"drill-{point.value}-{outbox.run}"
    processes: list[AppProcess] = []
    stop_at = time.monotonic() + deadline
    while True:
        process = fleet.start_relay(
            f"{owner}-{len(processes)}",
            # --owner again: the last one wins, one owner for every restart (own log each).
            args=["--owner", owner, "--no-metrics", "--crash-at", point.value,
                  "--crash-probability", str(probability)],
        )  # fmt: skip
        processes.append(process)
        wait_until(
            lambda p=process: not p.alive() or outbox.all_marked(),
            max(stop_at - time.monotonic(), 0.0),
            f"relay #{len(processes)} to die or every record to be marked ({point.value} drill)",
        )
        if process.alive():
            return processes


@pytest.mark.scenario(
    "outbox relay kill -9 at {point}",
    injected="crash drill: SIGKILL at {point}, p=0.3, restarted each time",
    unit="events",
)
@pytest.mark.slow
@pytest.mark.parametrize("point", list(CrashPoint), ids=[p.value for p in CrashPoint])
def test_relay__sigkilled_at_each_point_many_times_delivers_all_and_effects_happen_once(
    fleet: Fleet, outbox: Outbox, point: CrashPoint, scenario: Scenario
) -> None:
    records = outbox.write(aggregates=60, per_aggregate=5)

    processes = relay_until_all_marked(fleet, outbox, point, probability=0.3, deadline=300)

    dead, survivor = processes[:-1], processes[-1]
    drills = [e for p in dead for e in log_events(p, "relay.crash_drill")]
    # Each dead relay killed itself with SIGKILL at the drill's point, and only there.
    assert [p.popen.returncode for p in dead] == [-signal.SIGKILL] * len(dead)
    assert len(drills) == len(dead) >= 3, f"{len(dead)} crashes"
    assert {d["point"] for d in drills} == {point.value}
    assert log_events(survivor, "relay.crash_drill") == []
    seen = outbox.receive({r.event_id for r in records}, timeout=120)
    consumer = IdempotentConsumer()
    applied = [consumer.handle(event_id) for _, _, event_id in outbox.stream]
    record_delivery(scenario, records, seen, sigkills=len(dead), effects=len(consumer.effects))

    assert len(seen) == len(records) == 300
    assert sum(applied) == len(consumer.effects) == 300  # every effect exactly once
    assert max(consumer.effects.values()) == 1
    duplicates = sum(seen.values()) - len(records)
    if point is CrashPoint.AFTER_READ:
        assert duplicates == 0  # killed before sending: nothing went out twice
    else:
        # Killed after sending, before marking: exactly what the drill named was sent again.
        unmarked = Counter(event_id for d in drills for event_id in d["event_ids"])
        assert duplicates == sum(unmarked.values()) > 0
        assert seen == Counter({r.event_id: 1 for r in records}) + unmarked
    outbox.assert_marked_once_in_order()
    outbox.assert_delivered_in_order()
    print(f"\n{point.value}: {len(dead)} SIGKILLs, {duplicates} redeliveries, 300 effects")


def start_three(fleet: Fleet, clients: dict[str, Any], settings: Settings) -> list[str]:
    names = ["relay-x", "relay-y", "relay-z"]
    for name in names:
        fleet.start_relay(name)
    wait_until(
        lambda: split_as_assigned(clients["dynamodb"], settings, names),
        30,
        "the three relays to split the shards",
        interval=0.1,
    )
    return names


@pytest.mark.scenario(
    "three outbox relays",
    injected="3 relays sharing 8 shards",
    unit="events",
)
def test_three_relays__split_the_shards_and_deliver_every_event_once_in_order(
    fleet: Fleet, outbox: Outbox, settings: Settings, clients: dict[str, Any], scenario: Scenario
) -> None:
    names = start_three(fleet, clients, settings)
    records = outbox.write(aggregates=60, per_aggregate=5)

    seen = outbox.receive({r.event_id for r in records}, timeout=120)
    record_delivery(scenario, records, seen)
    wait_until(outbox.all_marked, 60, "every record marked")

    assert seen == Counter({r.event_id: 1 for r in records})  # no crash, no duplicate
    outbox.assert_marked_once_in_order()
    outbox.assert_delivered_in_order()
    assert split_as_assigned(clients["dynamodb"], settings, names)  # 3 + 3 + 2 shards
    shares = {n: dispatched_by(fleet.processes[n]) for n in names}
    assert sum(shares.values()) == 300 and min(shares.values()) > 0, shares


@pytest.mark.scenario(
    "outbox relay takeover after SIGKILL",
    injected="SIGKILL of 1 of 3 relays",
    unit="events",
)
def test_three_relays__survivors_take_a_killed_relays_shards_over_within_the_lease_bound(
    fleet: Fleet, outbox: Outbox, settings: Settings, clients: dict[str, Any], scenario: Scenario
) -> None:
    names = start_three(fleet, clients, settings)
    orphaned = assign(settings.outbox_shards, names)["relay-y"]

    fleet.kill("relay-y", signal.SIGKILL)
    killed = time.monotonic()
    records = outbox.write(aggregates=60, per_aggregate=2)  # the dead relay's shards too
    survivors = ["relay-x", "relay-z"]
    wait_until(
        lambda: split_as_assigned(clients["dynamodb"], settings, survivors),
        4 * TAKEOVER_BOUND_SECONDS,
        "the survivors to lease every shard",
        interval=0.05,
    )
    takeover = time.monotonic() - killed
    seen = outbox.receive({r.event_id for r in records}, timeout=120)
    record_delivery(scenario, records, seen, takeover_s=takeover)
    wait_until(outbox.all_marked, 60, "every record marked")

    assert takeover < TAKEOVER_BOUND_SECONDS, f"takeover took {takeover:.2f} s"
    assert seen == Counter({r.event_id: 1 for r in records})
    outbox.assert_marked_once_in_order()
    outbox.assert_delivered_in_order()
    owners = lease_owners(clients["dynamodb"], settings)
    assert {owners[s] for s in orphaned} <= set(survivors)
    print(f"\ntakeover of {orphaned}: {takeover:.2f} s (bound {TAKEOVER_BOUND_SECONDS} s)")


@pytest.mark.scenario(
    "outbox: undeliverable record parked",
    injected="destination queue does not exist",
    unit="events",
)
def test_relay__parks_an_undeliverable_record_after_n_attempts_and_carries_on(
    fleet: Fleet, outbox: Outbox, environ: dict[str, str], scenario: Scenario
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
    parked_lines = log_events(fleet.processes["relay-park"], "relay.parked")
    assert [e["event_id"] for e in parked_lines] == [doomed.event_id]
    # A parked record no longer holds its aggregate back.
    delivered = outbox.receive({follower.event_id}, timeout=60)
    scenario.record(sent=2, processed=len(delivered), dead_lettered=1, attempts=item["attempts"])
    assert set(delivered) == {follower.event_id}


def record_delivery(
    scenario: Scenario, records: Sequence[OutboxRecord], seen: Counter[str], **observed: Any
) -> None:
    """A relay scenario's row: events committed, distinct events delivered, redeliveries."""
    scenario.record(
        sent=len(records),
        processed=len(set(seen) & {r.event_id for r in records}),
        duplicated=sum(seen.values()) - len(seen),
        **observed,
    )
