"""``python -m saga``: operate sagas.

    python -m saga show ORDER_ID      a saga's state and history
    python -m saga list               sagas not yet final (running, compensating, quarantined)
    python -m saga resume SAGA_ID     restart a quarantined saga's current command
    python -m saga sweep [--once]     resume stuck sagas, undo expired ones (a service)

The sagas come from an application module (``-A``, default ``tasks.purchase_saga``) that
exposes ``orchestrators() -> dict[name, Orchestrator]``, as ``celery -A`` finds an app.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from collections.abc import Mapping

import structlog
from rich.console import Console
from rich.table import Table

from flashsale import aws
from flashsale.logs import configure_logging
from saga.orchestrator import Orchestrator
from saga.state import SagaState, SagaStatus
from saga.sweeper import Sweeper

STATUS_STYLES = {
    SagaStatus.RUNNING: "cyan",
    SagaStatus.COMPENSATING: "yellow",
    SagaStatus.COMPLETED: "green",
    SagaStatus.COMPENSATED: "magenta",
    SagaStatus.QUARANTINED: "bold red",
}


def load(app: str) -> Mapping[str, Orchestrator]:
    module = importlib.import_module(app)
    return module.orchestrators()  # type: ignore[no-any-return]


def _store(orchestrators: Mapping[str, Orchestrator]) -> Orchestrator:
    return next(iter(orchestrators.values()))


def show(console: Console, orchestrators: Mapping[str, Orchestrator], saga_id: str) -> int:
    orchestrator = _store(orchestrators)
    state = orchestrator.store.get(saga_id)
    if state is None:
        console.print(f"[red]no saga {saga_id}[/red]")
        return 1
    definition = orchestrators[state.saga].definition
    style = STATUS_STYLES[state.status]
    console.print(
        f"saga [bold]{state.saga_id}[/bold] ({state.saga}): [{style}]{state.status.value}"
        f"[/{style}] at step [bold]{definition.steps[state.step].name}[/bold], attempt "
        f"{state.attempt}, version {state.version}" + (f" — {state.reason}" if state.reason else "")
    )
    table = Table("at", "step", "event", "attempt", "detail", title="history")
    for entry in state.history:
        table.add_row(entry.at, entry.step, entry.event, str(entry.attempt), entry.detail)
    console.print(table)
    console.print({k: v for k, v in state.data.items()})
    return 0


def list_active(console: Console, orchestrators: Mapping[str, Orchestrator]) -> int:
    store = _store(orchestrators).store
    ids = [i for shard in range(store.shards) for i in store.active(shard)]
    states = sorted(store.get_many(ids).values(), key=lambda s: s.deadline or 0)
    table = Table("saga", "kind", "status", "step", "attempt", "reason", title="active sagas")
    for state in states:
        table.add_row(*_row(state, orchestrators))
    console.print(table)
    console.print(f"{len(states)} active")
    return 0


def _row(state: SagaState, orchestrators: Mapping[str, Orchestrator]) -> list[str]:
    step = orchestrators[state.saga].definition.steps[state.step].name
    style = STATUS_STYLES[state.status]
    status = f"[{style}]{state.status.value}[/{style}]"
    return [state.saga_id, state.saga, status, step, str(state.attempt), state.reason]


def sweep(orchestrators: Mapping[str, Orchestrator], *, once: bool, interval: float) -> int:
    store = _store(orchestrators).store
    sweeper = Sweeper(orchestrators, store, cloudwatch=aws.client("cloudwatch"))
    if once:
        report = sweeper.sweep_once()
        print(dict(report.outcomes) or "nothing due", f"quarantined: {sweeper.publish()}")
        return 0
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        structlog.get_logger("saga.sweeper").info("sweeper.stopping", signal=signum)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    structlog.get_logger("saga.sweeper").info("sweeper.ready", shards=store.shards)
    sweeper.run(stop, interval=interval)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m saga", description=__doc__.splitlines()[0])
    parser.add_argument(
        "-A",
        "--app",
        default=os.environ.get("FLASHSALE_SAGA_APP", "tasks.purchase_saga"),
        help="module with orchestrators() (default: tasks.purchase_saga)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("show", help="a saga's state and history").add_argument("saga_id")
    commands.add_parser("list", help="sagas that are not final")
    commands.add_parser("resume", help="restart a quarantined saga").add_argument("saga_id")
    sweep_parser = commands.add_parser("sweep", help="resume stuck and expired sagas")
    sweep_parser.add_argument("--once", action="store_true", help="one pass, then exit")
    sweep_parser.add_argument("--interval", type=float, default=1.0, help="seconds between passes")
    args = parser.parse_args(argv)
    configure_logging()
    orchestrators = load(args.app)
    console = Console()
    if args.command == "show":
        return show(console, orchestrators, args.saga_id)
    if args.command == "list":
        return list_active(console, orchestrators)
    if args.command == "resume":
        saga_id = args.saga_id
        state = _store(orchestrators).store.get(saga_id)
        if state is None:
            console.print(f"[red]no saga {saga_id}[/red]")
            return 1
        console.print(orchestrators[state.saga].resume(saga_id))
        return 0
    return sweep(orchestrators, once=args.once, interval=args.interval)


if __name__ == "__main__":
    sys.exit(main())
