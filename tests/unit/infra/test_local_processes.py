"""Pid files and process groups of the local stack, with throwaway shell processes."""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from infra.local import processes, stack
from infra.local.config import DYNAMODB, LOCALSTACK, StackConfig
from infra.local.emulators import Emulator, Health
from infra.local.ports import free_port
from infra.local.processes import PidRecord

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.fixture
def marker() -> str:
    """A marker of this test's own: processes left over by another run never match it."""
    return f"flashsale-test-{uuid.uuid4().hex}"


@pytest.fixture
def started(marker: str) -> Iterator[list[PidRecord]]:
    """Records of processes a test starts; whatever is left (marked too) is killed afterwards."""
    records: list[PidRecord] = []
    yield records
    for record in records:
        processes.terminate(record.pid, timeout=1.0)
    processes.terminate(None, marker=marker, timeout=1.0)


def start_shell(script: str, tmp_path: Path, *, marker: str = "exits-at-once") -> PidRecord:
    return processes.start_detached(
        ["/bin/sh", "-c", script],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        log_file=tmp_path / "logs" / "proc.log",
        cwd=tmp_path,
        marker=marker,
    )


def exited_pid(tmp_path: Path) -> PidRecord:
    """The record of a process that has exited (and been reaped): a pid that is free."""
    record = start_shell("exit 0", tmp_path)
    assert wait_for(lambda: processes.exit_code(record.pid) is not None)
    return record


# --- pid file format -----------------------------------------------------------------------


def test_pid_record__round_trips_through_its_text() -> None:
    record = PidRecord(pid=1234, start_time=98765, port=4566)
    assert PidRecord.parse(record.render()) == record


def test_pid_record__first_line_is_the_bare_pid() -> None:
    assert PidRecord(pid=42, start_time=7, port=1).render().splitlines()[0] == "42"


def test_pid_record__accepts_a_bare_pid_written_by_hand() -> None:
    assert PidRecord.parse("321\n") == PidRecord(pid=321)


@pytest.mark.parametrize("text", ["", "\n", "abc", "-5", "0", "12\nport:1", "12\nport=x"])
def test_pid_record__rejects_malformed_text(text: str) -> None:
    with pytest.raises(ValueError):
        PidRecord.parse(text)


def test_read_pid_file__is_none_when_missing_or_corrupt(tmp_path: Path) -> None:
    assert processes.read_pid_file(tmp_path / "missing.pid") is None
    corrupt = tmp_path / "corrupt.pid"
    corrupt.write_text("not a pid\n")
    assert processes.read_pid_file(corrupt) is None


def test_write_pid_file__creates_the_directory_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "pids" / "x.pid"
    processes.write_pid_file(path, PidRecord(pid=5, start_time=6, port=7))
    assert processes.read_pid_file(path) == PidRecord(pid=5, start_time=6, port=7)
    assert [p.name for p in path.parent.iterdir()] == ["x.pid"]


# --- /proc -------------------------------------------------------------------------------


def test_parse_stat__handles_a_command_name_with_spaces_and_parentheses() -> None:
    # Fields after the name are numbered from 3 (state); give field n the value 1000 + n.
    fields = {n: str(1000 + n) for n in range(3, 53)} | {3: "S", 5: "99"}
    line = "77 (a (b) c) " + " ".join(fields[n] for n in range(3, 53))
    stat = processes.parse_stat(line)
    assert (stat.pid, stat.state, stat.pgrp, stat.start_time) == (77, "S", 99, 1022)


def test_is_running__true_for_this_process_with_its_start_time() -> None:
    stat = processes.read_stat(os.getpid())
    assert stat is not None
    assert processes.is_running(PidRecord(pid=os.getpid(), start_time=stat.start_time))


def test_is_running__false_when_the_pid_was_reused(tmp_path: Path) -> None:
    stat = processes.read_stat(os.getpid())
    assert stat is not None
    # Same pid, different incarnation: what a reused pid looks like.
    assert not processes.is_running(PidRecord(pid=os.getpid(), start_time=stat.start_time + 1))


def test_is_running__false_for_an_exited_process(tmp_path: Path) -> None:
    assert not processes.is_running(exited_pid(tmp_path))


# --- detached start and stop -------------------------------------------------------------


def test_start_detached__runs_in_its_own_session_and_group(
    tmp_path: Path, started: list[PidRecord], marker: str
) -> None:
    record = start_shell("sleep 60", tmp_path, marker=marker)
    started.append(record)
    assert os.getsid(record.pid) == record.pid
    assert os.getpgid(record.pid) == record.pid
    # /bin/sh execs sleep: while it does, /proc/<pid>/environ may be unreadable for a moment.
    assert wait_for(lambda: processes.read_environ(record.pid).get(processes.MARKER_ENV) == marker)


def test_start_detached__appends_output_to_the_log(tmp_path: Path) -> None:
    record = start_shell("echo one; echo two >&2", tmp_path)
    assert wait_for(lambda: processes.exit_code(record.pid) == 0)
    assert (tmp_path / "logs" / "proc.log").read_text().split() == ["one", "two"]


def test_terminate__stops_the_whole_group_including_children(
    tmp_path: Path, started: list[PidRecord], marker: str
) -> None:
    record = start_shell("sleep 60 & sleep 60 & wait", tmp_path, marker=marker)
    started.append(record)
    assert wait_for(lambda: len(processes.group_members(record.pid)) == 3)
    assert processes.terminate(record.pid, timeout=5.0) == []
    assert processes.group_members(record.pid) == []


def test_terminate__kills_a_group_that_ignores_sigterm(
    tmp_path: Path, started: list[PidRecord], marker: str
) -> None:
    script = "trap '' TERM; echo trapped; while :; do sleep 0.1; done"
    record = start_shell(script, tmp_path, marker=marker)
    started.append(record)
    log = tmp_path / "logs" / "proc.log"
    assert wait_for(lambda: log.exists() and "trapped" in log.read_text())
    began = time.monotonic()
    assert processes.terminate(record.pid, timeout=0.5) == []
    assert time.monotonic() - began < 5.0
    assert not processes.is_running(record)


def test_terminate__finds_a_marked_child_that_left_the_group(
    tmp_path: Path, started: list[PidRecord], marker: str
) -> None:
    # setsid gives the child a session (and group) of its own; only the marker still ties it.
    record = start_shell("setsid sleep 60 & wait", tmp_path, marker=marker)
    started.append(record)

    def escaped() -> list[int]:
        return [p for p in processes.marked_processes(marker) if p != record.pid]

    assert wait_for(lambda: len(escaped()) == 1)
    (stray,) = escaped()
    assert os.getpgid(stray) != record.pid
    assert processes.terminate(record.pid, marker=marker, timeout=5.0) == []
    assert processes.marked_processes(marker) == []


def test_terminate__is_a_no_op_when_nothing_runs(tmp_path: Path) -> None:
    assert processes.terminate(exited_pid(tmp_path).pid, marker="nobody", timeout=0.1) == []


# --- stack bookkeeping without emulators -------------------------------------------------


def test_down__removes_stale_pid_files_and_reports_nothing_stopped(tmp_path: Path) -> None:
    config = StackConfig.load(tmp_path / "stack", localstack_port=40001, dynamodb_port=40002)
    gone = exited_pid(tmp_path)
    for name in (LOCALSTACK, DYNAMODB):
        processes.write_pid_file(config.pid_file(name), PidRecord(gone.pid, gone.start_time, 1))
    assert stack.down(config.stack_dir) == []
    assert list(config.pids_dir.iterdir()) == []


def test_down__never_signals_a_live_process_whose_pid_was_reused(
    tmp_path: Path, started: list[PidRecord], marker: str
) -> None:
    config = StackConfig.load(tmp_path / "stack", localstack_port=40001, dynamodb_port=40002)
    other = start_shell("sleep 60", tmp_path, marker=marker)
    started.append(other)
    assert other.start_time is not None
    reused = PidRecord(pid=other.pid, start_time=other.start_time + 1, port=40001)
    processes.write_pid_file(config.pid_file(LOCALSTACK), reused)
    assert stack.down(config.stack_dir) == []
    assert processes.is_running(other)


def test_status__reports_a_stale_pid_file(tmp_path: Path) -> None:
    config = StackConfig.load(tmp_path / "stack", localstack_port=40001, dynamodb_port=40002)
    gone = exited_pid(tmp_path)
    processes.write_pid_file(config.pid_file(DYNAMODB), PidRecord(gone.pid, gone.start_time, 1))
    rows = {row.name: row for row in stack.status(config.stack_dir)}
    assert not rows[DYNAMODB].running and not rows[DYNAMODB].healthy
    assert "stale pid file" in rows[DYNAMODB].detail
    assert rows[LOCALSTACK].detail == "not started"


def test_stack_config__rejects_one_port_for_both_emulators(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot share port"):
        StackConfig.load(tmp_path, localstack_port=5000, dynamodb_port=5000)


def test_stack_config__reads_ports_and_dir_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASHSALE_STACK_DIR", str(tmp_path / "s"))
    monkeypatch.setenv("FLASHSALE_LOCALSTACK_PORT", "41000")
    monkeypatch.setenv("FLASHSALE_DYNAMODB_PORT", "41001")
    config = StackConfig.load()
    assert (config.stack_dir, config.localstack_port, config.dynamodb_port) == (
        (tmp_path / "s").resolve(),
        41000,
        41001,
    )


def test_exited_emulators_are_reaped_not_left_as_zombies(tmp_path: Path) -> None:
    record = start_shell("exit 3", tmp_path)
    assert wait_for(lambda: processes.exit_code(record.pid) == 3)
    assert processes.read_stat(record.pid) is None


def never_healthy(config: StackConfig, tmp_path: Path) -> Emulator:
    """An emulator whose health endpoint is a port nobody listens on."""
    return Emulator(
        name=DYNAMODB,
        serves="nothing",
        port=config.dynamodb_port,
        command=[],
        env={},
        cwd=tmp_path,
        health_url=f"http://127.0.0.1:{free_port()}/health",
        judge=lambda _body, _pid: Health(True, "unreachable"),
    )


def test_wait_healthy__an_emulator_that_dies_is_reported_with_its_log(tmp_path: Path) -> None:
    config = StackConfig.load(tmp_path / "stack", localstack_port=40001, dynamodb_port=40002)
    record = processes.start_detached(
        ["/bin/sh", "-c", "echo 'boom: cannot start'; exit 3"],
        env={},
        log_file=config.log_file(DYNAMODB),
        cwd=tmp_path,
        marker="exits-at-once",
    )
    emulator = never_healthy(config, tmp_path)
    with pytest.raises(stack.StackError) as error:
        stack._wait_healthy(config, {DYNAMODB: (emulator, record)}, time.monotonic() + 10)
    message = str(error.value)
    assert "exited with code 3" in message
    assert str(config.log_file(DYNAMODB)) in message and "boom: cannot start" in message


def test_wait_healthy__times_out_with_the_reason_and_the_log(
    tmp_path: Path, started: list[PidRecord], marker: str
) -> None:
    config = StackConfig.load(tmp_path / "stack", localstack_port=40001, dynamodb_port=40002)
    record = processes.start_detached(
        ["/bin/sh", "-c", "echo 'still warming up'; sleep 60"],
        env={},
        log_file=config.log_file(DYNAMODB),
        cwd=tmp_path,
        marker=marker,
    )
    started.append(record)
    log = config.log_file(DYNAMODB)
    assert wait_for(lambda: "still warming up" in log.read_text())
    began = time.monotonic()
    with pytest.raises(stack.StackError, match="timed out waiting for health") as error:
        stack._wait_healthy(config, {DYNAMODB: (never_healthy(config, tmp_path), record)}, began)
    assert "no answer from" in str(error.value) and "still warming up" in str(error.value)
    assert time.monotonic() - began < 5
