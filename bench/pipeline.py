"""The purchase saga's side of a sale: its processes, waiting for every saga to settle, and
what it did — charges, refunds, releases, notifications — counted exactly.

Charges come from the payment provider's own ledger (one provider process and ledger file per
run), e-mails and SMS from what LocalStack recorded as sent, the rest from DynamoDB.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rich.progress import Progress

from flashsale import aws
from flashsale.messages import Fulfilment, OrderStatus
from flashsale.names import QueueRole
from flashsale.settings import get_settings
from infra.local.fleet import Fleet, provider_url
from infra.local.ports import free_port
from infra.local.sent_messages import sent_emails, sent_sms
from payments.control import ProviderControl
from saga import SagaState, SagaStatus, SagaStore

SAGA_QUEUES = [QueueRole.PAYMENTS.celery_queue, QueueRole.TICKETS.celery_queue]


@dataclass(frozen=True)
class PipelineSpec:
    decline_rate: float = 0.1
    saga_concurrency: int = 4
    resale_waves: int = 3  # late buyers offered the seats that declined payments released
    # The relay's and the sweeper's polling are index queries, and the local DynamoDB emulator
    # answers an index query by scanning the whole table (moto: about 40 us per item, so 0.9 s
    # for one shard's pending query over 22,000 outbox records). Both poll one query per shard
    # (8): the sweeper every second would keep the serialized emulator busy on its own once the
    # sagas table holds a few thousand sagas. It is a safety net for steps silent for 120 s,
    # so a pass every 15 s loses nothing; the relay reads up to 1,000 records per shard and
    # round, so a round's queries cover ten times the records (its defaults: 100, 0.5 s idle).
    sweeper_interval_s: float = 15.0
    relay_page_size: int = 1000
    relay_poll_interval_s: float = 1.0


def start_pipeline(fleet: Fleet, spec: PipelineSpec, run_id: str) -> ProviderControl:
    """Provider, saga and notification workers, relay and sweeper; the provider's control.

    Confirmations and cancellation notices get a worker each, so a backlog of low-priority
    notices never delays a confirmation.
    """
    port = free_port()
    fleet.environment["FLASHSALE_PAYMENT_PROVIDER_URL"] = provider_url(port)
    fleet.start_provider(
        f"provider-{run_id}",
        port=port,
        ledger=fleet.log_dir / f"provider-{run_id}.db",
        args=["--decline-rate", str(spec.decline_rate)],
    )
    fleet.start_worker(f"saga-{run_id}", SAGA_QUEUES, concurrency=spec.saga_concurrency)
    fleet.start_worker(f"notify-{run_id}", [QueueRole.NOTIFICATIONS.celery_queue])
    fleet.start_worker(f"notify-low-{run_id}", [QueueRole.NOTIFICATIONS_LOW.celery_queue])
    fleet.start_relay(
        f"relay-{run_id}",
        args=[
            "--page-size",
            str(spec.relay_page_size),
            "--poll-interval",
            str(spec.relay_poll_interval_s),
        ],
    )
    fleet.start_sweeper(f"sweeper-{run_id}", interval=spec.sweeper_interval_s)
    return ProviderControl(provider_url(port))


def saga_store() -> SagaStore:
    settings = get_settings()
    return SagaStore(
        aws.client("dynamodb"), table=settings.sagas_table, shards=settings.saga_shards
    )


def wait_for_sagas(
    order_ids: Iterable[str], progress: Progress, timeout_s: float
) -> dict[str, SagaState]:
    """Every saga of ``order_ids`` once all are final (or what they are at the timeout)."""
    store, ids = saga_store(), list(order_ids)
    task = progress.add_task("purchases settled", total=len(ids))
    deadline = time.monotonic() + timeout_s
    states: dict[str, SagaState] = {}
    while True:
        pending = [i for i in ids if i not in states or not states[i].status.final]
        states.update(store.get_many(pending))
        done = sum(1 for s in states.values() if s.status.final)
        progress.update(task, completed=done)
        if done == len(ids) or time.monotonic() > deadline:
            return states
        time.sleep(1)


def confirmed_ids(orders: Iterable[dict[str, Any]]) -> list[str]:
    return [o["order_id"] for o in orders if o["status"] == OrderStatus.CONFIRMED]


def released_seats(orders: Iterable[dict[str, Any]]) -> int:
    return sum(int(o["quantity"]) for o in orders if o.get("fulfilment") == Fulfilment.RELEASED)


def saga_figures(
    event_id: str,
    orders: list[dict[str, Any]],
    states: dict[str, SagaState],
    provider: ProviderControl,
) -> dict[str, Any]:
    """What the sagas of one sale did, each figure read from the system that holds it."""
    fulfilment = Counter(o.get("fulfilment") for o in orders if o["status"] == "confirmed")
    statuses = Counter(s.status for s in states.values())
    ledger = provider.summary()
    emails = [m for m in sent_emails() if event_id in str(m.get("Subject", ""))]
    confirmations = sum(1 for m in emails if "cancelled" not in str(m["Subject"]))
    phones = {str(s.data["phone"]) for s in states.values() if s.data.get("phone")}
    return {
        "ticketed": fulfilment[Fulfilment.TICKETED],
        "released": fulfilment[Fulfilment.RELEASED],
        "still_held": fulfilment[Fulfilment.HELD],
        "sagas_completed": statuses[SagaStatus.COMPLETED],
        "sagas_compensated": statuses[SagaStatus.COMPENSATED],
        "sagas_quarantined": statuses[SagaStatus.QUARANTINED],
        "sagas_unfinished": sum(1 for s in states.values() if not s.status.final),
        "charges": ledger["charges"],
        "declines": ledger["declines"],
        "refunds": ledger["refunds"],
        "voids": ledger["voids"],
        "captured_cents": ledger["captured_cents"],
        "confirmation_emails": confirmations,
        "cancellation_emails": len(emails) - confirmations,
        "sms": sum(
            1 for m in sent_sms() if m["PhoneNumber"] in phones and event_id in m["Message"]
        ),
    }
