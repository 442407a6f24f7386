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
        extra_env: dict[str, str] | None = None,
    ) -> AppProcess:
        """Start ``celery -A tasks worker`` on ``queues`` and wait until it says it is ready.

        ``extra_env`` is added to the stack's environment: e.g. ``AWS_ENDPOINT_URL_SQS`` to put
        a fault-injecting proxy between this worker and the emulator.
        """
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
        env = dict(extra_env or {})
        if config_module:
            env["CELERY_CONFIG_MODULE"] = config_module
        process = self._spawn(name, args, env)
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

    def start_provider(
        self,
        name: str,
        *,
        port: int,
        ledger: Path,
        args: list[str] | None = None,
        ready_timeout: float = 30.0,
    ) -> AppProcess:
        """Start the local payment provider (``python -m payments.provider``) on ``port`` with
        its ledger at ``ledger`` (kept across restarts) and wait for its ``provider.ready``.
        ``args`` adds fault flags, e.g. ``["--crash-after-charge-rate", "1"]``."""
        command = [
            sys.executable,
            "-m",
            "payments.provider",
            "--port",
            str(port),
            "--ledger",
            str(ledger),
            *(args or []),
        ]
        process = self._spawn(name, command, {})
        self._wait_for_line(process, '"provider.ready"', ready_timeout)
        return process

    def start_sweeper(
        self,
        name: str,
        *,
        extra_env: dict[str, str] | None = None,
        interval: float = 1.0,
        ready_timeout: float = 60.0,
    ) -> AppProcess:
        """Start the saga sweeper (``python -m saga sweep``) and wait for its ``sweeper.ready``."""
        command = [sys.executable, "-m", "saga", "sweep", "--interval", str(interval)]
        process = self._spawn(name, command, extra_env or {})
        self._wait_for_line(process, '"sweeper.ready"', ready_timeout)
        return process

    def start_intake(
        self,
        name: str,
        *,
        port: int,
        workers: int = 1,
        extra_env: dict[str, str] | None = None,
        ready_timeout: float = 60.0,
    ) -> AppProcess:
        """Start the HTTP intake (``python -m intake``) on 127.0.0.1:``port`` and wait for its
        ``intake.ready``. ``extra_env`` sets its settings: ``FLASHSALE_INTAKE_BACKLOG_LIMIT``..."""
        command = [
            sys.executable,
            "-m",
            "intake",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ]
        process = self._spawn(name, command, extra_env or {})
        self._wait_for_line(process, '"intake.ready"', ready_timeout)
        return process


def provider_url(port: int) -> str:
    """The base URL of a provider started by ``Fleet.start_provider`` on ``port``."""
    return f"http://127.0.0.1:{port}"
