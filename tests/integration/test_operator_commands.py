"""The operator commands against the local stack: dead letters are found, shown and redriven.

No worker runs here: a message is dead-lettered by receiving it ``maxReceiveCount`` times with
a zero visibility timeout, as a crashing consumer would; the next receive moves it to the DLQ.
The commands run in-process (``main(argv, ops=...)``) against the real emulators.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from dead_letters import dead_letter
from local_stacks import running_stack
from rich.console import Console
from scenarios import Scenario

from bench.poison import poison_bodies, send_poison
from flashsale.names import QueueRole, alarm_name, alarm_name_prefix
from flashsale.settings import Settings
from flashsale.task_messages import task_message_body
from tasks import dlq, status
from tasks.operator import Operator, queue_depth, queue_name
from tasks.purchase_saga import build_orchestrator

pytestmark = pytest.mark.integration

POISON_COUNT = 5


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A stack of this module's own: the commands act on whole DLQs, which must hold only
    what these tests put there."""
    yield from running_stack(tmp_path_factory)


@pytest.fixture(scope="module")
def sqs(clients: dict[str, Any]) -> Any:
    return clients["sqs"]


@pytest.fixture
def run(settings: Settings, sqs: Any, clients: dict[str, Any]) -> Callable[..., tuple[int, str]]:
    """``run(dlq.main, "show", "payments")``: a command's exit status and its output."""

    def call(main: Callable[..., int], *argv: str) -> tuple[int, str]:
        out = io.StringIO()
        console = Console(file=out, width=400, color_system=None)
        ops = Operator(settings, sqs, clients["cloudwatch"], console, clients["dynamodb"])
        code = main(list(argv), ops=ops)
        return code, out.getvalue()

    return call


def take_bodies(sqs: Any, queue_url: str, run_id: str) -> list[str]:
    """The bodies of ``run_id``'s messages in ``queue_url``, deleted as they are read; the
    others are left visible. Reads until a receive brings nothing new."""
    mine: list[str] = []
    while True:
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=5, WaitTimeSeconds=1
        ).get("Messages", [])
        ours = [m for m in messages if run_id in m["Body"] or run_id in _decoded(m["Body"])]
        for message in messages:
            if message in ours:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            else:
                sqs.change_message_visibility(
                    QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                )
        if not ours:
            return mine
        mine += [m["Body"] for m in ours]


def _decoded(body: str) -> str:
    summary = dlq.summarize_body(body)
    return summary.kwargs or ""


@pytest.mark.scenario(
    "DLQ redrive of a FIFO queue (python -m tasks.dlq)",
    injected="5 poison messages dead-lettered, redriven within the 5-minute dedup window",
)
def test_dlq__show_finds_fifo_poison_and_redrive_returns_exactly_them(
    run: Callable[..., tuple[int, str]], settings: Settings, sqs: Any, scenario: Scenario
) -> None:
    role = QueueRole.PURCHASES
    queue_url, dlq_url = settings.queue_url(role), settings.dlq_url(role)
    run_id = uuid.uuid4().hex
    poison = poison_bodies(run_id, POISON_COUNT, role.celery_queue)
    send_poison(sqs, queue_url, poison, fifo=True)
    dead_letter(sqs, queue_url, dlq_url, POISON_COUNT)

    code, shown = run(dlq.main, "show", "purchases", "--limit", "100")

    assert code == 0
    assert shown.count(run_id) == POISON_COUNT, shown
    assert "tasks.no_such_task" in shown and "poison-0" in shown
    assert queue_depth(sqs, dlq_url).visible >= POISON_COUNT, "show must release what it read"

    # Within the FIFO deduplication window: a move task would drop these as duplicates.
    code, redriven = run(dlq.main, "redrive", "purchases")

    back = take_bodies(sqs, queue_url, run_id)
    scenario.record(
        sent=POISON_COUNT,
        processed=len(back),
        dead_lettered=queue_depth(sqs, dlq_url).total,
        dead_lettered_before_redrive=POISON_COUNT,
    )
    assert code == 0, redriven
    assert queue_depth(sqs, dlq_url).total == 0
    assert sorted(back) == sorted(poison)


def test_dlq__redrive_of_a_standard_queue_uses_a_move_task(
    run: Callable[..., tuple[int, str]], settings: Settings, sqs: Any
) -> None:
    role = QueueRole.PAYMENTS
    queue_url, dlq_url = settings.queue_url(role), settings.dlq_url(role)
    run_id = uuid.uuid4().hex
    bodies = [
        task_message_body(
            "tasks.payment.charge",
            {"order_id": f"{run_id}-{n}"},
            routing_key=role.celery_queue,
            task_id=f"{run_id}-task-{n}",
        )
        for n in range(2)
    ] + [f"garbage {run_id}\tend"]
    for body in bodies:
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)
    dead_letter(sqs, queue_url, dlq_url, len(bodies))

    code, shown = run(dlq.main, "show", "payments")
    assert code == 0
    assert shown.count("tasks.payment.charge") == 2
    assert f"{run_id}-task-0" in shown and f"{run_id}-task-1" in shown
    assert f"garbage {run_id}\\tend" in shown

    code, redriven = run(dlq.main, "redrive", "payments", "--max-per-second", "50")

    assert code == 0, redriven
    assert "moved 3 of 3" in redriven
    assert queue_depth(sqs, dlq_url).total == 0
    assert sorted(take_bodies(sqs, queue_url, run_id)) == sorted(bodies)


def test_dlq__redrive_of_an_empty_dlq_moves_nothing(
    run: Callable[..., tuple[int, str]], settings: Settings, sqs: Any
) -> None:
    for role in (QueueRole.NOTIFICATIONS, QueueRole.PURCHASES):
        assert queue_depth(sqs, settings.dlq_url(role)).total == 0
        code, output = run(dlq.main, "redrive", role.value)
        assert code == 0, output
        assert "moved 0 of 0" in output


def test_dlq_list__shows_every_role_and_its_depth(
    run: Callable[..., tuple[int, str]], settings: Settings, sqs: Any
) -> None:
    body = f"dead letter {uuid.uuid4().hex}"
    sqs.send_message(QueueUrl=settings.dlq_url(QueueRole.NOTIFICATIONS), MessageBody=body)

    code, output = run(dlq.main, "list")

    assert code == 0
    for role in QueueRole:
        assert settings.dlq_url(role) in output
    (line,) = [r for r in output.splitlines() if settings.dlq_url(QueueRole.NOTIFICATIONS) in r]
    assert "│            1 │" in line, output
    assert take_bodies(sqs, settings.dlq_url(QueueRole.NOTIFICATIONS), body) == [body]


def test_status__shows_each_queue_its_dlq_and_their_alarms(
    run: Callable[..., tuple[int, str]], settings: Settings
) -> None:
    alarms = status.queue_alarms(boto3.client("cloudwatch"), settings.queue_url(QueueRole.PAYMENTS))
    payments = queue_name(settings.queue_url(QueueRole.PAYMENTS))
    assert {a.name for a in alarms} == {
        alarm_name(payments, kind) for kind in ("dlq-depth", "oldest-message-age", "backlog")
    }
    dlq_alarm = next(a for a in alarms if a.kind == "dlq-depth")
    assert dlq_alarm.watched_queue == queue_name(settings.dlq_url(QueueRole.PAYMENTS))

    code, output = run(status.main)

    assert code == 0
    rows = {line.split("│")[1].strip(): line for line in output.splitlines() if "│" in line}
    for role in QueueRole:
        assert "backlog" in rows[role.value] and "dlq-depth" not in rows[role.value]
        assert "dlq-depth" in rows[f"{role.value} DLQ"]
    assert alarm_name_prefix(payments) == f"{payments}-"


def test_status__shows_outbox_lag_and_sagas_by_state(
    run: Callable[..., tuple[int, str]], settings: Settings, clients: dict[str, Any]
) -> None:
    """A saga and its first command written as the allocation writes them, no relay running:
    one pending outbox record with an age, one running saga; the alarms on their rows."""
    orchestrator = build_orchestrator(clients["dynamodb"], settings)
    saga_id = str(uuid.uuid4())
    items = orchestrator.start_items(saga_id, {"quantity": 1}, expires_at=None)
    clients["dynamodb"].transact_write_items(TransactItems=items)

    code, output = run(status.main)

    assert code == 0
    rows: dict[str, list[str]] = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if not cells:
            continue
        if cells[0]:
            rows[cells[0]] = cells
        elif rows:  # a cell's second line: the next alarm
            rows[list(rows)[-1]][5] += " " + cells[5]
    assert rows["outbox (pending)"][1] == "1"
    assert rows["outbox (pending)"][4].endswith("s")  # the oldest record's age
    assert "lag" in rows["outbox (pending)"][5] and "parked" in rows["outbox (pending)"][5]
    assert rows["sagas running"][1] == "1"
    assert rows["sagas quarantined"][1] == "0"
    assert "quarantined" in rows["sagas quarantined"][5]
