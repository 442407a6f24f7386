"""The application's own processes for local runs: Celery workers and outbox relays.

Tests, the demo and the benchmark start real worker processes exactly as an operator would
(``celery -A tasks worker``), with the local stack's environment, and stop them by signal.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class AppProcess:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None


@dataclass
class Fleet:
    """Starts, signals and stops app processes; every process is stopped by ``stop_all``."""

    environment: dict[str, str]
    log_dir: Path
    processes: dict[str, AppProcess] = field(default_factory=dict)

    def start_worker(
        self,
        name: str,
        queues: list[str],
        *,
        concurrency: int = 1,
        config_module: str | None = None,
        ready_timeout: float = 60.0,
    ) -> AppProcess:
        """Start ``celery -A tasks worker`` on ``queues`` and wait until it says it is ready."""
        args = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tasks",
            "worker",
            "-n",
            f"{name}@%h",
            "-Q",
            ",".join(queues),
            "-c",
            str(concurrency),
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        extra_env = {"CELERY_CONFIG_MODULE": config_module} if config_module else {}
        process = self._spawn(name, args, extra_env)
        self._wait_for_line(process, " ready.", ready_timeout)
        return process

    def start_relay(
        self,
        name: str,
        *,
        extra_env: dict[str, str] | None = None,
        args: list[str] | None = None,
        ready_timeout: float = 60.0,
    ) -> AppProcess:
        """Start ``python -m outbox.relay`` (owner ``name``) and wait for its ``relay.ready``."""
        command = [sys.executable, "-m", "outbox.relay", "--owner", name, *(args or [])]
        process = self._spawn(name, command, extra_env or {})
        self._wait_for_line(process, '"relay.ready"', ready_timeout)
        return process

    def _spawn(self, name: str, args: list[str], extra_env: dict[str, str]) -> AppProcess:
        if name in self.processes and self.processes[name].alive():
            raise RuntimeError(f"process {name} is already running")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        env = os.environ | self.environment | extra_env | {"PYTHONUNBUFFERED": "1"}
        with log.open("wb") as out:
            popen = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        process = AppProcess(name, popen, log)
        self.processes[name] = process
        return process

    @staticmethod
    def _wait_for_line(process: AppProcess, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in process.log.read_text(errors="replace"):
                return
            if not process.alive():
                break
            time.sleep(0.1)
        raise RuntimeError(
            f"{process.name} did not become ready (exit code {process.popen.poll()}); "
            f"see {process.log}"
        )

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal a process's whole group (a prefork worker's children too)."""
        process = self.processes[name]
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        if sig == signal.SIGKILL:
            process.popen.wait()

    def stop(self, name: str, timeout: float = 30.0) -> int | None:
        """Warm shutdown (SIGTERM: in-flight work finishes), then SIGKILL after ``timeout``."""
        process = self.processes.pop(name)
        if process.alive():
            try:
                # Only the main process: it lets its pool children finish their tasks.
                process.popen.send_signal(signal.SIGTERM)
                process.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.popen.wait()
            except ProcessLookupError:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # nothing of the group outlives it
        return process.popen.returncode

    def stop_all(self, timeout: float = 30.0) -> None:
        for name in list(self.processes):
            self.stop(name, timeout)
