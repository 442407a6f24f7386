"""How each emulator is started and how we know it is ready.

- ``localstack``: SQS, SNS, CloudWatch and SES from LocalStack 4.9.2 on the host, in its own
  virtualenv (see ``localstack_venv``), launched through ``localstack_boot.py``.
- ``dynamodb``: DynamoDB and DynamoDB Streams from moto, serialized (``dynamodb_server``), run
  by the interpreter running this code (the project's virtualenv, which has ``moto[server]``).

Each gets a minimal environment: the developer's ``AWS_*`` or ``PYTHONPATH`` must not leak
into the emulators.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import localstack_venv
from .config import DYNAMODB, HOST, LOCALSTACK, StackConfig
from .environment import ACCOUNT_ID

LOCALSTACK_SERVICES = ("sqs", "sns", "cloudwatch", "ses")
_READY_STATES = {"available", "running"}
_PASSED_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")
LOCALSTACK_LOG_ENV = "FLASHSALE_LOCALSTACK_LOG"

# The directory holding the ``infra`` package, so ``-m infra.local.dynamodb_server`` resolves
# to this checkout whatever the emulator's working directory.
SOURCE_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str


@dataclass(frozen=True)
class Emulator:
    """One emulator process: what to run, where it listens, how to tell it is ready."""

    name: str
    serves: str
    port: int
    command: list[str]
    env: dict[str, str]
    cwd: Path
    health_url: str
    judge: Callable[[dict[str, Any], int], Health] = field(repr=False)

    def probe(self, pid: int, timeout: float = 2.0) -> Health:
        """Ask the health endpoint; ``pid`` is the process we started (or found)."""
        try:
            with urllib.request.urlopen(self.health_url, timeout=timeout) as response:
                body = json.load(response)
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            return Health(False, f"no answer from {self.health_url}: {reason}")
        return self.judge(body, pid)


def _base_env() -> dict[str, str]:
    env = {key: os.environ[key] for key in _PASSED_THROUGH if key in os.environ}
    env["PYTHONUNBUFFERED"] = "1"  # log lines reach the log file as they happen
    return env


def _judge_localstack(body: dict[str, Any], _pid: int) -> Health:
    services = body.get("services", {})
    states = {name: services.get(name, "missing") for name in LOCALSTACK_SERVICES}
    waiting = {name: state for name, state in states.items() if state not in _READY_STATES}
    if waiting:
        return Health(False, f"services not ready: {waiting}")
    return Health(True, "ready: " + " ".join(states))


def _judge_dynamodb(body: dict[str, Any], pid: int) -> Health:
    if body.get("status") != "ok":
        return Health(False, f"unexpected health answer {body}")
    if body.get("pid") != pid:
        return Health(False, f"port answered by pid {body.get('pid')}, not ours ({pid})")
    return Health(True, "ready: dynamodb dynamodbstreams")


def localstack(config: StackConfig) -> Emulator:
    root = config.localstack_root
    listen = f"{HOST}:{config.localstack_port}"
    env = _base_env() | {
        "GATEWAY_LISTEN": listen,
        # Queue URLs come back as http://127.0.0.1:<port>/queue/<region>/<account>/<name>; the
        # default host name (localhost.localstack.cloud) does not resolve offline.
        "LOCALSTACK_HOST": listen,
        "SQS_ENDPOINT_STRATEGY": "path",
        "SERVICES": ",".join(LOCALSTACK_SERVICES),
        "EAGER_SERVICE_LOADING": "1",  # "Ready." then means the services are loaded
        "SQS_CLOUDWATCH_METRICS_REPORT_INTERVAL": "5",  # DLQ alarms fire within seconds
        "DISABLE_EVENTS": "1",  # no analytics/telemetry
        "SKIP_SSL_CERT_DOWNLOAD": "1",  # offline; localstack_boot writes the certificate
        "CUSTOM_SSL_CERT_PATH": str(root / "server.test.pem"),
        "DNS_ADDRESS": "0",  # no DNS server (it would listen on 0.0.0.0:53)
        "OVERRIDE_IN_DOCKER": "0",
        "PERSISTENCE": "0",  # a fresh emulator per `up`; provisioning recreates resources
        "FILESYSTEM_ROOT": str(root),
        "CONFIG_DIR": str(root / "config"),
        # Per-request INFO lines cost CPU at thousands of messages per second.
        "LS_LOG": os.environ.get(LOCALSTACK_LOG_ENV, "warn"),
    }
    return Emulator(
        name=LOCALSTACK,
        serves="SQS, SNS, CloudWatch, SES",
        port=config.localstack_port,
        # -P: do not put infra/local on sys.path (its modules must not shadow LocalStack's).
        command=[
            str(localstack_venv.python(config.venv)),
            "-P",
            str(localstack_venv.BOOT_SCRIPT),
        ],
        env=env,
        cwd=config.stack_dir,
        health_url=f"{config.url(LOCALSTACK)}/_localstack/health",
        judge=_judge_localstack,
    )


def dynamodb(config: StackConfig) -> Emulator:
    env = _base_env() | {
        "PYTHONPATH": str(SOURCE_ROOT),
        "MOTO_ACCOUNT_ID": ACCOUNT_ID,  # the account LocalStack uses, so ARNs agree
    }
    return Emulator(
        name=DYNAMODB,
        serves="DynamoDB, DynamoDB Streams",
        port=config.dynamodb_port,
        command=[
            sys.executable,
            "-m",
            "infra.local.dynamodb_server",
            "--host",
            HOST,
            "--port",
            str(config.dynamodb_port),
        ],
        env=env,
        cwd=config.stack_dir,
        health_url=f"{config.url(DYNAMODB)}/_flashsale/health",
        judge=_judge_dynamodb,
    )


def all_emulators(config: StackConfig) -> list[Emulator]:
    return [localstack(config), dynamodb(config)]


def marker(config: StackConfig, name: str) -> str:
    """The value of ``processes.MARKER_ENV`` for emulator ``name`` of this stack."""
    return f"{name}@{config.stack_dir}"
