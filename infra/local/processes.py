"""Detached emulator processes tracked by pid files, stopped by process group.

Each emulator runs in a session (and process group) of its own, so ``down`` can signal the
whole group, including whatever the emulator spawned. A pid file records the pid, the kernel's
start time of that process (so a reused pid is never mistaken for our emulator) and the port
it serves. Processes also carry a marker variable in their environment; a child that leaves
the group (``setsid``) still inherits it, so ``down`` can find it by scanning ``/proc``.

Linux only: this reads ``/proc``, which is all the local stack needs and avoids ``psutil``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")

# Set in every emulator's environment; its value names the stack directory.
MARKER_ENV = "FLASHSALE_STACK_MEMBER"

# Popen objects of the emulators this process started, so they can be reaped (no zombies, no
# "subprocess is still running" warnings) when this same process stops them.
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class PidRecord:
    """What a pid file says: which process, which incarnation of that pid, which port."""

    pid: int
    start_time: int | None = None
    port: int | None = None

    def render(self) -> str:
        # The pid alone on the first line keeps `kill $(head -1 x.pid)` working.
        lines = [str(self.pid)]
        if self.start_time is not None:
            lines.append(f"start_time={self.start_time}")
        if self.port is not None:
            lines.append(f"port={self.port}")
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> PidRecord:
        """Parse :meth:`render`'s format; raises ``ValueError`` on anything else."""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if not lines:
            raise ValueError("empty pid file")
        pid = int(lines[0])
        if pid <= 0:
            raise ValueError(f"invalid pid {pid}")
        fields: dict[str, int] = {}
        for line in lines[1:]:
            key, sep, value = line.partition("=")
            if not sep:
                raise ValueError(f"unexpected line {line!r}")
            fields[key] = int(value)
        return cls(pid=pid, start_time=fields.get("start_time"), port=fields.get("port"))


def read_pid_file(path: Path) -> PidRecord | None:
    """The record in ``path``, or ``None`` if there is none or it is unreadable."""
    try:
        return PidRecord.parse(path.read_text())
    except (OSError, ValueError):
        return None


def write_pid_file(path: Path, record: PidRecord) -> None:
    """Write atomically, so a concurrent reader never sees half a pid file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(record.render())
    tmp.replace(path)


def remove_pid_file(path: Path) -> None:
    path.unlink(missing_ok=True)


@dataclass(frozen=True)
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` this module needs."""

    pid: int
    state: str
    pgrp: int
    start_time: int


def parse_stat(text: str) -> ProcStat:
    """Parse ``/proc/<pid>/stat``; the command name may contain spaces and parentheses."""
    head, _, rest = text.rpartition(")")
    pid = int(head.split("(", 1)[0])
    fields = rest.split()
    # After the name: state(3) ppid(4) pgrp(5) ... starttime(22); fields[0] is field 3.
    return ProcStat(pid=pid, state=fields[0], pgrp=int(fields[2]), start_time=int(fields[19]))


def read_stat(pid: int) -> ProcStat | None:
    try:
        return parse_stat((PROC / str(pid) / "stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def _alive(stat: ProcStat | None) -> bool:
    # A zombie has exited; only its exit status is left for its parent to collect.
    return stat is not None and stat.state not in ("Z", "X")


def is_running(record: PidRecord) -> bool:
    """Whether the process the record names is still alive (and is the same incarnation)."""
    reap_children()
    stat = read_stat(record.pid)
    if not _alive(stat):
        return False
    assert stat is not None
    return record.start_time is None or stat.start_time == record.start_time


def all_processes() -> Iterator[ProcStat]:
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            stat = read_stat(int(entry.name))
            if _alive(stat):
                assert stat is not None
                yield stat


def group_members(pgid: int) -> list[int]:
    """Live processes in process group ``pgid``."""
    return [stat.pid for stat in all_processes() if stat.pgrp == pgid]


def read_environ(pid: int) -> dict[str, str]:
    try:
        raw = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, _, v in pairs}


def read_cmdline(pid: int) -> list[str]:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def marked_processes(marker: str) -> list[int]:
    """Live processes whose environment carries ``MARKER_ENV=marker`` (never this process)."""
    me = os.getpid()
    return [
        stat.pid
        for stat in all_processes()
        if stat.pid != me and read_environ(stat.pid).get(MARKER_ENV) == marker
    ]


def start_detached(
    command: Sequence[str],
    *,
    env: Mapping[str, str],
    log_file: Path,
    cwd: Path,
    marker: str,
) -> PidRecord:
    """Start ``command`` in a new session, output appended to ``log_file``; return its record.

    A new session makes the process the leader of its own group (pgid == pid), detaches it
    from the terminal (Ctrl-C in the shell that ran ``up`` does not reach it) and lets
    ``down`` signal everything it spawned at once.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        proc = subprocess.Popen(
            list(command),
            env={**env, MARKER_ENV: marker},
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    _children[proc.pid] = proc
    stat = read_stat(proc.pid)
    return PidRecord(pid=proc.pid, start_time=stat.start_time if stat else None)


def exit_code(pid: int) -> int | None:
    """The exit code of an emulator this process started, once it has exited."""
    proc = _children.get(pid)
    return None if proc is None else proc.poll()


def reap_children() -> None:
    """Collect the exit status of emulators this process started that have exited."""
    for proc in _children.values():
        proc.poll()  # waits for the process if it has exited; keeps its exit code


def _signal(pids: Iterable[int], pgid: int | None, sig: signal.Signals) -> None:
    """Signal the group once, and each process outside it (one that called setsid) directly."""
    in_group = set()
    if pgid is not None:
        in_group = set(group_members(pgid))
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
    for pid in set(pids) - in_group:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def terminate(
    pgid: int | None,
    *,
    marker: str | None = None,
    timeout: float = 10.0,
    poll_interval: float = 0.05,
) -> list[int]:
    """Stop process group ``pgid`` and every process marked ``marker``; return what was left.

    SIGTERM first, so the emulators shut down cleanly; SIGKILL for whatever is still alive
    after ``timeout`` seconds. The return value lists processes that survived even SIGKILL
    (empty unless something is badly wrong, e.g. a process in uninterruptible sleep).
    """

    def survivors() -> list[int]:
        reap_children()
        found = set(group_members(pgid)) if pgid is not None else set()
        if marker is not None:
            found.update(marked_processes(marker))
        return sorted(found)

    def wait_until_gone(deadline: float) -> list[int]:
        left = survivors()
        while left and time.monotonic() < deadline:
            time.sleep(poll_interval)
            left = survivors()
        return left

    left = survivors()
    if not left:
        return []
    _signal(left, pgid, signal.SIGTERM)
    left = wait_until_gone(time.monotonic() + timeout)
    if left:
        _signal(left, pgid, signal.SIGKILL)
        left = wait_until_gone(time.monotonic() + 5.0)
    return left
