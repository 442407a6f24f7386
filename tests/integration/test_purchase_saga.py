"""The purchase saga end to end on its own local stack: real workers on every queue, a real
relay, the sweeper and the payment provider as separate processes; SES and SNS read back.

Every count is exact: orders and sagas from DynamoDB, charges from the provider's own ledger,
e-mails and SMS from LocalStack's records.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from local_stacks import running_stack
from polling import wait_until
from sale_harness import PURCHASES, Sale
from scenarios import Scenario

from flashsale.messages import Fulfilment, OrderStatus, PurchaseRequest
from flashsale.names import QueueRole
from flashsale.settings import Settings
from infra.local.fleet import AppProcess, Fleet, provider_url
from infra.local.ports import free_port
from infra.local.sent_messages import sent_emails, sent_sms
from notifications import NotificationKind
from notifications.dedup import Claim, DeliveryRecords
from payments.control import ProviderControl
from payments.provider import declines
from saga import SagaState, SagaStatus, SagaStore
from tasks import dlq

pytestmark = pytest.mark.integration

DECLINE_RATE = 0.3
STEP_TIMEOUT = "20"
SAGA_QUEUES = [
    QueueRole.PAYMENTS.celery_queue,
    QueueRole.TICKETS.celery_queue,
]
NOTIFY_QUEUES = [QueueRole.NOTIFICATIONS.celery_queue, QueueRole.NOTIFICATIONS_LOW.celery_queue]
# The lease of a claim whose worker died: long enough that the queue's own redeliveries (1, 2,
# 4 s after each failed receive) would have dead-lettered the notice, short for a test.
DEAD_CLAIM_LEASE = 12.0


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Its own stack: the provider's ledger, SES and the queues are counted whole."""
    yield from running_stack(tmp_path_factory)


@pytest.fixture(scope="module")
def provider_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def pipeline_env(environ: dict[str, str], provider_port: int) -> dict[str, str]:
    return environ | {
        "FLASHSALE_PAYMENT_PROVIDER_URL": provider_url(provider_port),
        "FLASHSALE_SAGA_STEP_TIMEOUT_SECONDS": STEP_TIMEOUT,
        "FLASHSALE_SAGA_BACKOFF_SECONDS": "0.5",
        "FLASHSALE_SAGA_BACKOFF_CAP_SECONDS": "2",
    }


@pytest.fixture(scope="module")
def fleet(
    pipeline_env: dict[str, str], provider_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    """The whole pipeline: purchase, saga and notification workers, relay, sweeper, provider."""
    logs = tmp_path_factory.mktemp("pipeline-logs")
    fleet = Fleet(pipeline_env, logs)
    try:
        fleet.start_provider(
            "provider", port=provider_port, ledger=logs / "ledger.db",
            args=["--decline-rate", str(DECLINE_RATE)],
        )  # fmt: skip
        fleet.start_worker("purchase", [PURCHASES])
        fleet.start_worker("saga", SAGA_QUEUES, concurrency=2)
        fleet.start_worker("notify", NOTIFY_QUEUES)
        fleet.start_relay("relay")
        fleet.start_sweeper("sweeper")
        yield fleet
    finally:
        fleet.stop_all()


@pytest.fixture(scope="module")
def provider(fleet: Fleet, provider_port: int) -> Iterator[ProviderControl]:
    with ProviderControl(provider_url(provider_port)) as control:
        yield control


@pytest.fixture(scope="module")
def sagas(settings: Settings) -> SagaStore:
    return SagaStore(
        boto3.client("dynamodb"), table=settings.sagas_table, shards=settings.saga_shards
    )


def buyers(event_id: str, first: int, count: int) -> list[dict[str, Any]]:
    """Single-seat requests with an e-mail address; every third buyer gives a phone too."""
    return [
        {"event_id": event_id, "buyer_id": f"b{n}", "quantity": 1, "request_id": f"r{n}",
         "email": f"b{n}.{event_id}@example.com"}
        | ({"phone": f"+1555{n:07d}"} if n % 3 == 0 else {})
        for n in range(first, first + count)
    ]  # fmt: skip


def settled(
    sale: Sale, sagas: SagaStore, event_id: str, expected_orders: int, timeout: float
) -> tuple[list[dict[str, Any]], dict[str, SagaState]]:
    """The event's orders and the sagas of its confirmed seats, once every saga is final."""
    sale.decided(event_id, expected_orders, timeout)
    found: dict[str, SagaState] = {}

    def all_final() -> bool:
        confirmed = [
            o["order_id"] for o in sale.orders(event_id) if o["status"] == OrderStatus.CONFIRMED
        ]
        found.clear()
        found.update(sagas.get_many(confirmed))
        return len(found) == len(confirmed) and all(s.status.final for s in found.values())

    wait_until(all_final, timeout, f"every saga of {event_id} final")
    return sale.orders(event_id), found


@pytest.mark.scenario(
    "external side effects: contested sale with declines",
    injected=f"{DECLINE_RATE:.0%} of cards declined; seats resold in waves",
    unit="orders",
)
def test_contested_sale_with_declines__every_declined_seat_is_resold(
    sale: Sale, sagas: SagaStore, provider: ProviderControl, scenario: Scenario
) -> None:
    before = provider.summary()
    capacity = 40
    event_id = sale.new_event(capacity)
    first, wave = 0, 80
    for _ in range(8):  # waves until the released seats are sold too
        sale.fire(buyers(event_id, first, wave))
        first += wave
        orders, states = settled(sale, sagas, event_id, first, timeout=180)
        ticketed = [o for o in orders if o.get("fulfilment") == Fulfilment.TICKETED]
        if len(ticketed) == capacity:
            break
    else:
        pytest.fail("the seats were not all sold after 8 waves")

    released = [o for o in orders if o.get("fulfilment") == Fulfilment.RELEASED]
    ledger = sale.ledger(event_id, orders)
    record_sagas(scenario, first, orders, states, provider, before, waves=first // wave)
    charges = {c["key"]: c for c in provider.charges() if c["key"] in states}
    captured = {k for k, c in charges.items() if c["status"] == "succeeded" and not c["refund_id"]}
    assert released, "the decline rate gave no declines: the test proved nothing"
    assert ledger.sold_counter == ledger.seats_taken == capacity == len(ticketed)
    assert ledger.oversold == 0
    assert ledger.fcfs_inversions == 0
    assert {o["order_id"] for o in ticketed} == captured  # charges = confirmed orders
    assert all(states[o["order_id"]].status is SagaStatus.COMPENSATED for o in released)
    assert all(charges[o["order_id"]]["status"] == "declined" for o in released)
    assert len(states) == len(ticketed) + len(released)  # every saga ended one way or the other
    for order in ticketed:  # exactly one confirmation per confirmed order, per channel
        email = f"{order['buyer_id']}.{event_id}@example.com"
        subjects = [m["Subject"] for m in sent_emails(to=email)]
        assert subjects == [f"Your 1 ticket for {event_id}"], email
    cancelled = [f"{o['buyer_id']}.{event_id}@example.com" for o in released]
    wait_until(  # low priority: it may still be on its way
        lambda: all(len(sent_emails(to=email)) == 1 for email in cancelled), 30, "cancellations"
    )
    phones = [
        f"+1555{int(o['buyer_id'][1:]):07d}" for o in ticketed if int(o["buyer_id"][1:]) % 3 == 0
    ]
    assert all(len(sent_sms(phone)) == 1 for phone in phones)


def restart(fleet: Fleet, name: str, queues: list[str], **env: str) -> None:
    """Restart a worker with ``env`` added (fault drills, a short hold), or without it."""
    fleet.stop(name)
    fleet.start_worker(name, queues, concurrency=2 if name == "saga" else 1, extra_env=env)


def paying_buyers(event_id: str, count: int) -> list[dict[str, Any]]:
    """Buyers whose card the provider accepts (its declines are a function of the order id)."""
    chosen = []
    for request in buyers(event_id, 0, count * 4):
        order_id = PurchaseRequest.model_validate(request).order_id
        if not declines(order_id, DECLINE_RATE):
            chosen.append(request)
    return chosen[:count]


def history(sagas: SagaStore, order_id: str) -> list[tuple[str, str]]:
    state = sagas.get(order_id)
    assert state is not None, order_id
    return [(h.step, h.event) for h in state.history]


@pytest.mark.slow  # over a minute: make scenarios runs it
@pytest.mark.scenario(
    "crash after the side effect: saga workers and provider kill -9",
    injected="saga/notify workers SIGKILL after work and after commit (p=0.15); "
    "provider dies after charging (p=0.2)",
    unit="orders",
)
def test_crashes_at_every_step_boundary__no_duplicate_charge_no_lost_order(
    fleet: Fleet,
    sale: Sale,
    sagas: SagaStore,
    provider: ProviderControl,
    provider_port: int,
    scenario: Scenario,
) -> None:
    """Saga workers SIGKILL themselves after a step's effect and after its commit; the provider
    dies after recording a charge, before answering. Everything is restarted until done."""
    drill = {"FLASHSALE_SAGA_CRASH_AT": "after_work,after_commit",
             "FLASHSALE_SAGA_CRASH_PROBABILITY": "0.15"}  # fmt: skip
    restart(fleet, "saga", SAGA_QUEUES, **drill)
    restart(fleet, "notify", NOTIFY_QUEUES, **drill)
    provider.set_faults(crash_after_charge_rate=0.2)
    before = provider.summary()
    provider_crashes = 0
    event_id = sale.new_event(60)
    sale.fire(buyers(event_id, 0, 120))
    sale.decided(event_id, 120, timeout=60)

    def settled_while_restarting() -> bool:
        nonlocal provider_crashes
        if not fleet.processes["provider"].alive():
            provider_crashes += 1
            fleet.start_provider(
                "provider", port=provider_port, ledger=fleet.log_dir / "ledger.db",
                args=["--decline-rate", str(DECLINE_RATE)],
            )  # fmt: skip
            if provider_crashes < 4:
                provider.set_faults(crash_after_charge_rate=0.2)
        confirmed = [o["order_id"] for o in sale.orders(event_id) if o["status"] == "confirmed"]
        states = sagas.get_many(confirmed)
        return len(states) == len(confirmed) and all(s.status.final for s in states.values())

    wait_until(settled_while_restarting, 300, "every saga final through the crashes")
    provider.set_faults(crash_after_charge_rate=0)
    crashes = sum(
        fleet.processes[name].log.read_text().count("drill.crash") for name in ("saga", "notify")
    )
    restart(fleet, "saga", SAGA_QUEUES)
    restart(fleet, "notify", NOTIFY_QUEUES)

    orders = sale.orders(event_id)
    held = {o["order_id"] for o in orders if o["status"] == "confirmed"}
    ticketed = {o["order_id"] for o in orders if o.get("fulfilment") == Fulfilment.TICKETED}
    charges = [c for c in provider.charges() if c["key"] in held]
    captured = {c["key"] for c in charges if c["status"] == "succeeded" and not c["refund_id"]}
    ledger = sale.ledger(event_id, orders)
    record_sagas(
        scenario,
        120,
        orders,
        sagas.get_many(list(held)),
        provider,
        before,
        worker_sigkills=crashes,
        provider_crashes=provider_crashes,
    )
    assert provider_crashes > 0 and crashes > 0, "no crash happened: the test proved nothing"
    assert len(charges) == len({c["key"] for c in charges})  # one charge per order at most
    assert captured == ticketed  # no order charged without a ticket, none lost
    assert ledger.oversold == 0 and ledger.sold_counter == ledger.seats_taken
    assert {sagas.get(o).status for o in held} <= {SagaStatus.COMPLETED, SagaStatus.COMPENSATED}


@pytest.mark.scenario(
    "saga compensation: ticketing fails after the charge",
    injected="every ticket step fails",
    unit="orders",
)
def test_ticketing_failing__refunds_then_releases(
    fleet: Fleet, sale: Sale, sagas: SagaStore, provider: ProviderControl, scenario: Scenario
) -> None:
    before = provider.summary()
    restart(fleet, "saga", SAGA_QUEUES, FLASHSALE_TICKET_FAULT_RATE="1")
    event_id = sale.new_event(3)
    requests = paying_buyers(event_id, 3)
    sale.fire(requests)
    orders, states = settled(sale, sagas, event_id, 3, timeout=120)
    restart(fleet, "saga", SAGA_QUEUES)
    record_sagas(scenario, 3, orders, states, provider, before)

    refunded = {c["key"] for c in provider.charges() if c["refund_id"]}
    for order in orders:
        steps = history(sagas, order["order_id"])
        assert steps[-3:] == [
            ("issue_ticket", "failed"),
            ("charge_payment", "compensated"),
            ("reserve_seat", "compensated"),
        ], steps
        assert order["fulfilment"] == Fulfilment.RELEASED
    assert refunded >= set(states) and len(states) == 3
    assert sale.ledger(event_id, orders).sold_counter == 0


@pytest.mark.scenario(
    "hold expiry: payments down, the sweeper undoes the saga",
    injected="saga workers stopped; 3 s hold",
    unit="orders",
)
def test_hold_expiring__releases_the_seat_and_voids_the_charge(
    fleet: Fleet, sale: Sale, sagas: SagaStore, provider: ProviderControl, scenario: Scenario
) -> None:
    """Payments stop; the hold (3 s) runs out; the sweeper undoes the saga."""
    before = provider.summary()
    restart(fleet, "purchase", [PURCHASES], FLASHSALE_HOLD_SECONDS="3")
    fleet.stop("saga")
    event_id = sale.new_event(2)
    sale.fire(paying_buyers(event_id, 2))
    orders = sale.decided(event_id, 2, timeout=60)
    ids = [o["order_id"] for o in orders]
    wait_until(
        lambda: all(s.status is SagaStatus.COMPENSATING for s in sagas.get_many(ids).values()),
        60, "the sweeper to expire both holds",
    )  # fmt: skip
    fleet.start_worker("saga", SAGA_QUEUES, concurrency=2)
    restart(fleet, "purchase", [PURCHASES])
    orders, states = settled(sale, sagas, event_id, 2, timeout=120)
    record_sagas(scenario, 2, orders, states, provider, before)

    assert {s.status for s in states.values()} == {SagaStatus.COMPENSATED}
    assert all(("charge_payment", "failed") in history(sagas, i) for i in ids)
    assert set(ids) <= set(provider.voided_keys())  # the late charges cannot happen any more
    assert not [c for c in provider.charges() if c["key"] in ids]
    assert {o["fulfilment"] for o in orders} == {Fulfilment.RELEASED}
    assert sale.ledger(event_id, orders).sold_counter == 0


@pytest.mark.scenario(
    "stuck saga resumed by the sweeper",
    injected="the charge command deleted from the queue (lost)",
    unit="orders",
)
def test_stuck_saga__is_resumed_by_the_sweeper(
    fleet: Fleet,
    sale: Sale,
    sagas: SagaStore,
    settings: Settings,
    provider: ProviderControl,
    scenario: Scenario,
) -> None:
    """The charge command is lost (taken off the queue while no worker runs): after the step
    timeout the sweeper sends it again and the saga completes, charged once."""
    before = provider.summary()
    fleet.stop("saga")
    event_id = sale.new_event(1)
    sale.fire(paying_buyers(event_id, 1))
    (order,) = sale.decided(event_id, 1, timeout=60)
    sqs = sale.sqs
    lost: list[str] = []

    def take_the_command() -> bool:
        messages = sqs.receive_message(
            QueueUrl=settings.payments_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", [])
        for message in messages:
            sqs.delete_message(
                QueueUrl=settings.payments_queue_url, ReceiptHandle=message["ReceiptHandle"]
            )
            lost.append(message["MessageId"])
        return bool(lost)

    wait_until(take_the_command, 30, "the charge command on the payments queue")
    fleet.start_worker("saga", SAGA_QUEUES, concurrency=2)
    orders, states = settled(sale, sagas, event_id, 1, timeout=120)
    record_sagas(scenario, 1, orders, states, provider, before, commands_lost=len(lost))

    assert states[order["order_id"]].status is SagaStatus.COMPLETED
    assert ("charge_payment", "retrying") in history(sagas, order["order_id"])
    assert [c["key"] for c in provider.charges()].count(order["order_id"]) == 1


@pytest.mark.scenario(
    "DLQ redrive after a fix: notifications unreachable",
    injected="SES and SNS unreachable from the notification worker, then fixed",
    unit="confirmations",
)
def test_notification_failing__the_purchase_stands_and_the_message_is_dead_lettered(
    fleet: Fleet,
    sale: Sale,
    sagas: SagaStore,
    settings: Settings,
    provider: ProviderControl,
    scenario: Scenario,
) -> None:
    """SES and SNS unreachable from the notification worker: the confirmation is retried by
    the queue and dead-lettered; the purchase stands. After the fix, a DLQ redrive sends
    exactly one confirmation and completes the saga."""
    unreachable = f"http://127.0.0.1:{free_port()}"
    away = {"AWS_ENDPOINT_URL_SES": unreachable, "AWS_ENDPOINT_URL_SNS": unreachable}
    restart(fleet, "saga", SAGA_QUEUES, **away)  # it runs the confirmation ahead, if it can
    restart(fleet, "notify", NOTIFY_QUEUES, **away)
    event_id = sale.new_event(1)
    (buyer,) = paying_buyers(event_id, 1)
    sale.fire([buyer])
    (order,) = sale.decided(event_id, 1, timeout=60)
    order_id = order["order_id"]
    dlq_url = settings.dlq_url(QueueRole.NOTIFICATIONS)

    def dead_lettered() -> int:
        attributes = sale.sqs.get_queue_attributes(
            QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"])

    # An earlier drill may have left a command there (a task whose process was killed on every
    # receive ends in the DLQ): this test's confirmation is the one more.
    earlier = dead_lettered()
    wait_until(
        lambda: dead_lettered() >= earlier + 1, 120, "the confirmation in the notifications DLQ"
    )
    state = sagas.get(order_id)
    assert state is not None and state.status is SagaStatus.RUNNING
    assert state.data["ticket_code"] and sale.orders(event_id)[0]["fulfilment"] == "ticketed"
    assert order_id in {c["key"] for c in provider.charges() if c["status"] == "succeeded"}
    assert sent_emails(to=buyer["email"]) == []

    restart(fleet, "saga", SAGA_QUEUES)
    restart(fleet, "notify", NOTIFY_QUEUES)
    assert dlq.main(["redrive", QueueRole.NOTIFICATIONS.value]) == 0
    wait_until(
        lambda: (s := sagas.get(order_id)) is not None and s.status is SagaStatus.COMPLETED,
        120, "the saga completed after the redrive",
    )  # fmt: skip
    emails = [m["Subject"] for m in sent_emails(to=buyer["email"])]
    scenario.record(
        sent=1,
        processed=len(emails),
        dead_lettered=dead_lettered(),
        dead_lettered_before_redrive=1,
        left_by_earlier_tests=earlier,
    )
    assert emails == [f"Your 1 ticket for {event_id}"]


def declining_buyer(event_id: str) -> dict[str, Any]:
    """A buyer whose card the provider declines (a function of the order id)."""
    return next(
        request
        for request in buyers(event_id, 0, 200)
        if declines(PurchaseRequest.model_validate(request).order_id, DECLINE_RATE)
    )


@pytest.mark.scenario(
    "cancellation notice waits out a dead worker's claim",
    injected=f"its claim held by a worker that died before sending ({DEAD_CLAIM_LEASE:.0f} s)",
    unit="notices",
)
def test_cancellation_claimed_by_a_dead_worker__is_deferred_past_the_lease_then_sent_once(
    fleet: Fleet, sale: Sale, settings: Settings, scenario: Scenario
) -> None:
    """A worker claimed the buyer's cancellation notice and died before sending it. The
    notice's own delivery finds the claim leased: instead of spending its three receives in
    seconds (1, 2, 4 s) and landing in the DLQ, it is sent again with SQS ``DelaySeconds``
    past the lease, and then sent exactly once."""
    event_id = sale.new_event(1)
    buyer = declining_buyer(event_id)
    order_id = PurchaseRequest.model_validate(buyer).order_id
    dead_worker = DeliveryRecords(
        boto3.client("dynamodb"), settings.idempotency_table, lease_seconds=DEAD_CLAIM_LEASE
    )
    claimed = time.monotonic()
    assert isinstance(dead_worker.claim(order_id, NotificationKind.CANCELLATION), Claim)
    sale.fire([buyer])
    sale.decided(event_id, 1, timeout=60)
    notify_log = fleet.processes["notify"].log

    def deferred() -> bool:
        return any(
            "notify.cancellation_deferred" in line and f"order_id={order_id}" in line
            for line in notify_log.read_text(errors="replace").splitlines()
        )

    wait_until(deferred, 60, "the notice deferred behind the dead worker's claim")
    deferred_after = time.monotonic() - claimed
    wait_until(
        lambda: len(sent_emails(to=buyer["email"])) >= 1, 60 + DEAD_CLAIM_LEASE, "the notice"
    )
    sent_after = time.monotonic() - claimed
    emails = sent_emails(to=buyer["email"])
    scenario.record(
        sent=1, processed=len(emails), deferred_after_s=deferred_after, sent_after_s=sent_after
    )
    assert deferred_after < DEAD_CLAIM_LEASE < sent_after  # waited for the lease, not the DLQ
    assert [m["Subject"] for m in emails] == [f"Your order for {event_id} was cancelled"]


def record_sagas(
    scenario: Scenario,
    sent: int,
    orders: list[dict[str, Any]],
    states: dict[str, SagaState],
    provider: ProviderControl,
    before: dict[str, int],
    duplicated: int | None = None,
    **observed: Any,
) -> None:
    """A saga scenario's row. An order is processed once it is final: refused a seat, or held
    with its saga completed or compensated. Duplicates, unless given: the charge and refund
    requests the provider answered from its idempotency record (a repeated step, never a
    second effect)."""
    after = provider.summary()
    final = sum(
        1
        for o in orders
        if o["status"] != OrderStatus.CONFIRMED
        or (o["order_id"] in states and states[o["order_id"]].status.final)
    )
    scenario.record(
        sent=sent,
        processed=final,
        duplicated=(
            duplicated
            if duplicated is not None
            else sum(after[k] - before.get(k, 0) for k in ("replays", "refund_replays"))
        ),
        **observed,
    )


def command_event(body: str) -> dict[str, Any]:
    """The outbox event a relayed saga command carries (the Celery task's ``event``)."""
    envelope = json.loads(base64.b64decode(body))
    return dict(json.loads(base64.b64decode(envelope["body"]))[1]["event"])


_STALE = re.compile(r"saga\.stale_command\s.*saga_id=(\S+)")


def stale_commands(logs: list[AppProcess], saga_ids: set[str]) -> int:
    """Commands the saga workers found superseded, for these sagas (from their own logs)."""
    return sum(
        1
        for process in logs
        for saga_id in _STALE.findall(process.log.read_text(errors="replace"))
        if saga_id in saga_ids
    )


@pytest.mark.scenario(
    "out-of-order delivery reconciled by the saga's state and version",
    injected="a saga's first command delivered again after the saga completed",
    unit="commands",
)
def test_a_command_delivered_after_the_saga_moved_on__is_stale_and_changes_nothing(
    fleet: Fleet,
    sale: Sale,
    sagas: SagaStore,
    settings: Settings,
    provider: ProviderControl,
    scenario: Scenario,
) -> None:
    """Standard queues keep no order and deliver at least once: a saga's charge command can
    arrive after the commands that followed it. The saga reconciles by its own state: a
    command is applied only if the saga waits for exactly that step in that direction, and
    every transition is a put conditioned on the version it read. Here the charge command is
    copied off the payments queue before it runs, the saga completes, and the copy is
    delivered last: it is recognised as stale, never reaches the provider, changes no
    version."""
    before = provider.summary()
    fleet.stop("saga")
    event_id = sale.new_event(1)
    (buyer,) = paying_buyers(event_id, 1)
    sale.fire([buyer])
    (order,) = sale.decided(event_id, 1, timeout=60)
    order_id = order["order_id"]
    url = settings.payments_queue_url
    copies: list[str] = []

    def copy_the_command() -> bool:
        messages = sale.sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", [])
        for message in messages:
            if command_event(message["Body"])["aggregate_id"] == order_id:
                copies.append(message["Body"])
            sale.sqs.change_message_visibility(  # left where it was, for the saga worker
                QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )
        return bool(copies)

    wait_until(copy_the_command, 30, "the charge command on the payments queue")
    saga_worker = fleet.start_worker("saga", SAGA_QUEUES, concurrency=2)
    _, states = settled(sale, sagas, event_id, 1, timeout=120)
    completed = states[order_id]
    assert completed.status is SagaStatus.COMPLETED

    sale.sqs.send_message(QueueUrl=url, MessageBody=copies[0])
    wait_until(
        lambda: stale_commands([saga_worker], {order_id}) >= 1,
        60,
        "the late command to be handled",
    )
    wait_until(lambda: sale.queue_drained() and drained(sale, url), 30, "the payments queue")
    after = sagas.get(order_id)
    charges = [c for c in provider.charges() if c["key"] == order_id]
    summary = provider.summary()
    scenario.record(
        sent=2,
        processed=2,
        duplicated=stale_commands([saga_worker], {order_id}),
        saga_version=completed.version,
    )

    assert command_event(copies[0])["payload"]["step"] == "charge_payment"
    assert stale_commands([saga_worker], {order_id}) == 1
    assert after is not None and after.version == completed.version  # nothing moved
    assert after.history == completed.history and after.status is SagaStatus.COMPLETED
    assert len(charges) == 1 and charges[0]["status"] == "succeeded"
    assert summary["replays"] == before["replays"]  # the provider never saw it again


def drained(sale: Sale, queue_url: str) -> bool:
    attributes = sale.sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(v) for v in attributes.values()) == 0


@pytest.mark.slow
@pytest.mark.scenario(
    "kill -9 of the outbox relay during a contested sale with sagas",
    injected="relay crash drill (after_send / before_mark, p=0.3) + 3 SIGKILLs from outside",
    unit="orders",
)
def test_relay_killed_again_and_again_during_a_contested_sale__no_lost_order_no_double_charge(
    fleet: Fleet,
    sale: Sale,
    sagas: SagaStore,
    provider: ProviderControl,
    scenario: Scenario,
) -> None:
    """The relay carries every saga command. Here it SIGKILLs itself after sending a round
    and before marking it (so those commands go out twice), and is SIGKILLed from outside after
    each of the sale's first three waves of buyers is decided, as that wave's first commands
    are being relayed (the sagas run ahead, so later commands rarely need the relay); a
    supervisor (this test) restarts it each time under the same owner. No order may be lost
    (every saga ends), no card charged twice, and every ticket paid for."""
    before = provider.summary()
    fleet.stop("relay")
    points = ["after_send", "before_mark"]
    relays: list[AppProcess] = []

    def start_relay() -> AppProcess:
        point = points[len(relays) % len(points)]
        process = fleet.start_relay(
            f"relay-drill-{len(relays)}",
            args=["--owner", "relay-drill", "--crash-at", point, "--crash-probability", "0.3"],
        )
        relays.append(process)
        return process

    current = start_relay()
    capacity, count, waves = 40, 100, 4
    event_id = sale.new_event(capacity)
    outside_kills: list[int] = []
    per_wave = count // waves
    for wave in range(waves):
        sale.fire(buyers(event_id, wave * per_wave, per_wave))
        sale.decided(event_id, (wave + 1) * per_wave, timeout=90)
        if wave < waves - 1:  # killed while this wave's commands are on their way
            if not current.alive():  # the drill got there first
                current = start_relay()
            fleet.kill(current.name, signal.SIGKILL)
            outside_kills.append(wave)
            current = start_relay()
    held = [o["order_id"] for o in sale.orders(event_id) if o["status"] == OrderStatus.CONFIRMED]

    def settled_while_restarting() -> bool:
        nonlocal current
        if not current.alive():
            current = start_relay()
        states = sagas.get_many(held)
        return sum(s.status.final for s in states.values()) == len(held)

    wait_until(settled_while_restarting, 400, "every saga final through the relay's deaths")
    fleet.stop(current.name)
    fleet.start_relay("relay")  # the module's relay, for the tests after this one
    drills = sum(p.log.read_text().count('"relay.crash_drill"') for p in relays)
    named = sum(
        len(json.loads(line).get("event_ids", []))
        for p in relays
        for line in p.log.read_text().splitlines()
        if '"relay.crash_drill"' in line
    )
    orders = sale.orders(event_id)
    states = sagas.get_many(held)
    workers = [p for n, p in fleet.processes.items() if n in ("saga", "notify")]
    after = provider.summary()
    record_sagas(
        scenario,
        count,
        orders,
        states,
        provider,
        before,
        # Each command sent twice was recognised as stale by the saga (or repeated its step
        # idempotently: a provider replay).
        duplicated=stale_commands(workers, set(held)) + after["replays"] - before["replays"],
        relay_sigkills=drills + len(outside_kills),
        commands_the_drill_sent_twice=named,
    )
    ticketed = {o["order_id"] for o in orders if o.get("fulfilment") == Fulfilment.TICKETED}
    charges = [c for c in provider.charges() if c["key"] in set(held)]
    captured = {c["key"] for c in charges if c["status"] == "succeeded" and not c["refund_id"]}
    ledger = sale.ledger(event_id, orders)

    assert drills > 0, "the drill never fired: the relay was not killed mid-round"
    assert len(orders) == len({o["order_id"] for o in orders}) == count
    assert all(s.status.final for s in states.values()) and len(states) == len(held)
    assert len(charges) == len({c["key"] for c in charges})  # one charge per order at most
    assert captured == ticketed  # every ticket paid for, no payment without a ticket
    assert ledger.oversold == 0 and ledger.sold_counter == ledger.seats_taken
