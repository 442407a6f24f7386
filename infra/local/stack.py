"""``up``, ``down`` and ``status`` of the local stack: both emulators, then provisioning.

``up`` is idempotent: an emulator whose pid file names a live process is left alone (only its
health is awaited), a stale pid file is removed, and anything else on the port is an error,
never silently reused. ``down`` stops only what a pid file (or the stack's process marker)
names. Both hold a lock on the stack directory, so two ``up``s cannot race.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .config import StackConfig
from .emulators import Emulator, Health, all_emulators, marker
from .environment import client_environment, running_config, write_env_file
from .localstack_venv import ensure_venv, is_installed
from .ports import listened_by, port_is_free
from .processes import (
    MARKER_ENV,
    PidRecord,
    exit_code,
    group_members,
    is_running,
    marked_processes,
    read_environ,
    read_pid_file,
    remove_pid_file,
    start_detached,
    terminate,
    write_pid_file,
)

if TYPE_CHECKING:
    from rich.console import Console

DEFAULT_UP_TIMEOUT = 120.0
DEFAULT_DOWN_TIMEOUT = 15.0
_POLL_INTERVAL = 0.1


class StackError(RuntimeError):
    """The local stack could not be brought up or down; the message names the log to read."""


@dataclass(frozen=True)
class EmulatorStatus:
    """One row of ``status``."""

    name: str
    serves: str
    pid: int | None
    port: int
    running: bool
    healthy: bool
    detail: str
    log_file: Path


@contextlib.contextmanager
def _locked(config: StackConfig) -> Iterator[None]:
    config.stack_dir.mkdir(parents=True, exist_ok=True)
    with config.lock_file.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _say(console: Console | None, message: str) -> None:
    if console is not None:
        console.print(message)


def _spinner(console: Console | None, message: str) -> contextlib.AbstractContextManager[object]:
    return console.status(message) if console is not None else contextlib.nullcontext()


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        tail = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "(no log)"
    return "\n".join(f"    {line}" for line in tail)


def _check(emulator: Emulator, record: PidRecord) -> Health:
    """Healthy = our process answers its health endpoint *and* holds the listening socket."""
    health = emulator.probe(record.pid)
    if health.ok and not listened_by(group_members(record.pid), emulator.port):
        return Health(False, f"port {emulator.port} is not held by our process {record.pid}")
    return health


def _start(config: StackConfig, emulator: Emulator, console: Console | None) -> PidRecord:
    pid_file = config.pid_file(emulator.name)
    record = read_pid_file(pid_file)
    if record is not None and is_running(record):
        if record.port != emulator.port:
            raise StackError(
                f"{emulator.name} is already running on port {record.port} (pid {record.pid}), "
                f"not {emulator.port}; run `python -m infra.local down` first"
            )
        _say(console, f"[green]{emulator.name}[/] already running (pid {record.pid})")
        return record
    if record is not None:
        _say(console, f"[yellow]{emulator.name}[/]: removing stale pid file (pid {record.pid})")
        remove_pid_file(pid_file)
    strays = terminate(None, marker=marker(config, emulator.name), timeout=5.0)
    if strays:
        raise StackError(f"{emulator.name}: cannot stop leftover processes {strays}")
    if not port_is_free("127.0.0.1", emulator.port):
        raise StackError(
            f"{emulator.name}: port {emulator.port} is in use by a process this stack did not "
            f"start ({config.stack_dir}); stop it or choose another port with "
            f"FLASHSALE_{emulator.name.upper()}_PORT"
        )
    log_file = config.log_file(emulator.name)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("a") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {emulator.name}\n")
    record = start_detached(
        emulator.command,
        env=emulator.env,
        log_file=log_file,
        cwd=emulator.cwd,
        marker=marker(config, emulator.name),
    )
    record = PidRecord(pid=record.pid, start_time=record.start_time, port=emulator.port)
    write_pid_file(pid_file, record)
    _say(console, f"started [bold]{emulator.name}[/] (pid {record.pid}, port {emulator.port})")
    return record


def _wait_healthy(
    config: StackConfig, started: dict[str, tuple[Emulator, PidRecord]], deadline: float
) -> None:
    pending = dict(started)
    last: dict[str, Health] = {}
    while pending:
        for name, (emulator, record) in list(pending.items()):
            if not is_running(record):
                code = exit_code(record.pid)
                log_file = config.log_file(name)
                raise StackError(
                    f"{name} exited{f' with code {code}' if code is not None else ''} before it "
                    f"was healthy; see {log_file}\n{_log_tail(log_file)}"
                )
            last[name] = _check(emulator, record)
            if last[name].ok:
                del pending[name]
        if pending and time.monotonic() > deadline:
            details = "; ".join(f"{name}: {last[name].detail}" for name in pending)
            logs = "\n".join(
                f"  {config.log_file(name)}:\n{_log_tail(config.log_file(name))}"
                for name in pending
            )
            raise StackError(f"timed out waiting for health ({details})\n{logs}")
        if pending:
            time.sleep(_POLL_INTERVAL)


def _provision(env: dict[str, str]) -> dict[str, object]:
    try:
        from infra.local.provision import provision
    except ModuleNotFoundError as exc:
        if exc.name != "infra.local.provision":
            raise
        raise StackError(
            "infra/local/provision.py does not exist yet; run `up --no-provision` to start the "
            "emulators without creating resources"
        ) from exc
    try:
        return dict(provision(stack="local", environment=env))
    except Exception as exc:
        raise StackError(
            f"provisioning failed: {exc}\nThe emulators are up and healthy; fix the cause and "
            "run `up` again (provisioning updates in place)."
        ) from exc


def up(
    stack_dir: str | os.PathLike[str] | None = None,
    *,
    provision: bool = True,
    timeout: float = DEFAULT_UP_TIMEOUT,
    localstack_port: int | None = None,
    dynamodb_port: int | None = None,
    localstack_venv: str | os.PathLike[str] | None = None,
    console: Console | None = None,
) -> dict[str, str]:
    """Start whatever is not running, wait until both emulators are healthy, provision.

    Returns the client environment (also written to ``<stack_dir>/env``). Raises
    ``StackError`` if an emulator cannot start or stay healthy within ``timeout`` seconds
    (emulators this call started are stopped again) and ``InstallError`` if LocalStack
    cannot be installed. ``localstack_venv`` shares one LocalStack virtualenv between stack
    directories (default ``<stack_dir>/localstack-venv``).
    """
    config = StackConfig.load(
        stack_dir,
        localstack_port=localstack_port,
        dynamodb_port=dynamodb_port,
        localstack_venv=localstack_venv,
    )
    with _locked(config):
        if not is_installed(config.venv):
            venv_log = config.log_file("localstack-install")
            with _spinner(console, f"installing LocalStack into {config.venv} (once)"):
                started_at = time.monotonic()
                ensure_venv(config.venv, venv_log)
            _say(console, f"installed LocalStack in {time.monotonic() - started_at:.0f} s")
        # The timeout covers starting and health, not the one-off install.
        deadline = time.monotonic() + timeout
        emulators = all_emulators(config)
        started: dict[str, tuple[Emulator, PidRecord]] = {}
        before = {e.name: read_pid_file(config.pid_file(e.name)) for e in emulators}
        try:
            for emulator in emulators:
                started[emulator.name] = (emulator, _start(config, emulator, console))
            with _spinner(console, "waiting for the emulators to be healthy"):
                _wait_healthy(config, started, deadline)
        except BaseException:
            for name, (_, record) in started.items():
                if before[name] != record:  # stop only what this call started
                    _stop(config, name, DEFAULT_DOWN_TIMEOUT)
            raise
        config.save()
        env = client_environment(config)
        write_env_file(config.env_file, env)
        _say(console, "[green]emulators healthy[/]")
        if provision:
            with _spinner(console, "provisioning (Pulumi program under mocks)"):
                _provision(env)
            _say(console, f"provisioned; outputs in {config.outputs_file}")
    return env


def _stop(config: StackConfig, name: str, timeout: float) -> bool:
    """Stop emulator ``name``'s process group and marked strays; True if anything ran."""
    pid_file = config.pid_file(name)
    record = read_pid_file(pid_file)
    mark = marker(config, name)
    pgid = None
    strays = marked_processes(mark)
    if record is not None:
        members = group_members(record.pid)
        # The group is ours if its leader is our process, or (leader gone) members carry
        # our marker; a pid reused by an unrelated process is never signalled.
        if is_running(record) or any(read_environ(p).get(MARKER_ENV) == mark for p in members):
            pgid = record.pid
    found = pgid is not None or bool(strays)
    left = terminate(pgid, marker=mark, timeout=timeout)
    if left:
        raise StackError(f"{name}: processes {left} survived SIGKILL")
    remove_pid_file(pid_file)
    return found


def down(
    stack_dir: str | os.PathLike[str] | None = None,
    *,
    timeout: float = DEFAULT_DOWN_TIMEOUT,
    console: Console | None = None,
) -> list[str]:
    """Stop the emulators this stack started (SIGTERM, SIGKILL after ``timeout``).

    Returns the names of the emulators that were running. Leaves logs and state in place.
    """
    config = StackConfig.load(stack_dir)
    stopped = []
    with _locked(config):
        for emulator in reversed(all_emulators(config)):
            with _spinner(console, f"stopping {emulator.name}"):
                if _stop(config, emulator.name, timeout):
                    stopped.append(emulator.name)
                    _say(console, f"stopped [bold]{emulator.name}[/]")
    if not stopped:
        _say(console, "nothing was running")
    return stopped


def status(stack_dir: str | os.PathLike[str] | None = None) -> list[EmulatorStatus]:
    """What runs from ``stack_dir``, on which port, and whether it answers as healthy."""
    config = running_config(StackConfig.load(stack_dir))
    rows = []
    for emulator in all_emulators(config):
        record = read_pid_file(config.pid_file(emulator.name))
        running = record is not None and is_running(record)
        if record is not None and running:
            health = _check(emulator, record)
        elif record is not None:
            health = Health(False, f"stale pid file (pid {record.pid} is gone)")
        else:
            health = Health(False, "not started")
        rows.append(
            EmulatorStatus(
                name=emulator.name,
                serves=emulator.serves,
                pid=record.pid if record is not None and running else None,
                port=emulator.port,
                running=running,
                healthy=health.ok,
                detail=health.detail,
                log_file=config.log_file(emulator.name),
            )
        )
    return rows
