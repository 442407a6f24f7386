"""``python -m infra.local up|down|status|env``: the local AWS stack from the command line.

Progress goes to stderr; ``env`` alone writes to stdout, so ``eval "$(python -m infra.local
env)"`` works in a shell.
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table

from .config import STACK_DIR_ENV
from .environment import environment, render_exports
from .localstack_venv import InstallError
from .stack import DEFAULT_DOWN_TIMEOUT, DEFAULT_UP_TIMEOUT, StackError, down, status, up


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m infra.local", description=__doc__)
    parser.add_argument(
        "--stack-dir",
        default=None,
        help=f"state directory (default ${STACK_DIR_ENV} or .stack in the current directory)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up_cmd = commands.add_parser("up", help="start the emulators (if needed) and provision")
    up_cmd.add_argument(
        "--no-provision", action="store_true", help="start the emulators only, create nothing"
    )
    up_cmd.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_UP_TIMEOUT,
        help="seconds to wait for health (default %(default)s)",
    )
    down_cmd = commands.add_parser("down", help="stop the emulators this stack started")
    down_cmd.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_DOWN_TIMEOUT,
        help="seconds between SIGTERM and SIGKILL (default %(default)s)",
    )
    commands.add_parser("status", help="show the emulators; exit 1 unless all are healthy")
    commands.add_parser("env", help="print `export` lines for the AWS SDK variables")
    return parser


def _status_table(stack_dir: str | None) -> tuple[Table, bool]:
    rows = status(stack_dir)
    table = Table(title="flashsale local stack")
    for column in ("service", "serves", "pid", "port", "healthy", "detail"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.name,
            row.serves,
            str(row.pid) if row.pid is not None else "-",
            str(row.port),
            "[green]yes[/]" if row.healthy else "[red]no[/]",
            row.detail,
        )
    return table, all(row.healthy for row in rows)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console(stderr=True)
    try:
        if args.command == "up":
            up(
                args.stack_dir,
                provision=not args.no_provision,
                timeout=args.timeout,
                console=console,
            )
            table, _ = _status_table(args.stack_dir)
            console.print(table)
            console.print('Point a shell at it: eval "$(python -m infra.local env)"')
        elif args.command == "down":
            down(args.stack_dir, timeout=args.timeout, console=console)
        elif args.command == "status":
            table, healthy = _status_table(args.stack_dir)
            Console().print(table)
            return 0 if healthy else 1
        elif args.command == "env":
            sys.stdout.write(render_exports(environment(args.stack_dir)))
    except (StackError, InstallError, ValueError) as exc:
        console.print(f"[red]error:[/] {exc}", markup=True, highlight=False)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
