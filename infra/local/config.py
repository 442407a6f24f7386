"""Where the local stack lives and which loopback ports it uses.

Everything the stack writes stays under one state directory (``.stack`` by default, relative to
the working directory, i.e. the repository root): the LocalStack virtualenv, logs, pid files,
the emulators' data, the client environment and the Pulumi outputs. Tests point it at a
temporary directory and other ports so they never touch a developer's running stack.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STACK_DIR_ENV = "FLASHSALE_STACK_DIR"
LOCALSTACK_PORT_ENV = "FLASHSALE_LOCALSTACK_PORT"
DYNAMODB_PORT_ENV = "FLASHSALE_DYNAMODB_PORT"
# Optional: share one LocalStack virtualenv between stack directories (tests do, to skip the
# install); default ``<stack dir>/localstack-venv``.
LOCALSTACK_VENV_ENV = "FLASHSALE_LOCALSTACK_VENV"
SETTINGS_FILE = "stack.json"

DEFAULT_STACK_DIR = ".stack"
DEFAULT_LOCALSTACK_PORT = 4566
DEFAULT_DYNAMODB_PORT = 4567

# The emulators listen on loopback only: they accept any credentials.
HOST = "127.0.0.1"

LOCALSTACK = "localstack"
DYNAMODB = "dynamodb"
EMULATORS = (LOCALSTACK, DYNAMODB)


def _port_from_env(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        port = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a port number") from None
    if not 0 < port < 65536:
        raise ValueError(f"{name}={port} is out of range")
    return port


def resolve_stack_dir(stack_dir: str | os.PathLike[str] | None = None) -> Path:
    """The absolute state directory: argument, else ``$FLASHSALE_STACK_DIR``, else ``.stack``."""
    raw = stack_dir if stack_dir is not None else os.environ.get(STACK_DIR_ENV) or DEFAULT_STACK_DIR
    return Path(raw).expanduser().resolve()


def _recorded(stack_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((stack_dir / SETTINGS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class StackConfig:
    """One local stack: its state directory, its emulators' ports, LocalStack's virtualenv."""

    stack_dir: Path
    localstack_port: int = DEFAULT_LOCALSTACK_PORT
    dynamodb_port: int = DEFAULT_DYNAMODB_PORT
    localstack_venv: Path | None = None  # None: <stack_dir>/localstack-venv

    @classmethod
    def load(
        cls,
        stack_dir: str | os.PathLike[str] | None = None,
        *,
        localstack_port: int | None = None,
        dynamodb_port: int | None = None,
        localstack_venv: str | os.PathLike[str] | None = None,
    ) -> StackConfig:
        """Arguments win over ``FLASHSALE_*`` variables, which win over what the last ``up`` of
        this stack directory recorded (``stack.json``), which wins over the defaults; so
        ``status``, ``env`` and ``down`` find a stack wherever ``up`` put it."""
        root = resolve_stack_dir(stack_dir)
        recorded = _recorded(root)
        venv = (
            localstack_venv
            or os.environ.get(LOCALSTACK_VENV_ENV, "").strip()
            or recorded.get("localstack_venv")
        )
        config = cls(
            stack_dir=root,
            localstack_port=localstack_port
            or _port_from_env(LOCALSTACK_PORT_ENV)
            or int(recorded.get("localstack_port") or DEFAULT_LOCALSTACK_PORT),
            dynamodb_port=dynamodb_port
            or _port_from_env(DYNAMODB_PORT_ENV)
            or int(recorded.get("dynamodb_port") or DEFAULT_DYNAMODB_PORT),
            localstack_venv=Path(venv).expanduser().resolve() if venv else None,
        )
        if config.localstack_port == config.dynamodb_port:
            raise ValueError(f"LocalStack and DynamoDB cannot share port {config.dynamodb_port}")
        return config

    def save(self) -> None:
        """Record ports and virtualenv for later commands on this stack directory."""
        document = {
            "localstack_port": self.localstack_port,
            "dynamodb_port": self.dynamodb_port,
            "localstack_venv": str(self.localstack_venv) if self.localstack_venv else None,
        }
        self.stack_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.stack_dir / f".{SETTINGS_FILE}.tmp"
        tmp.write_text(json.dumps(document, indent=2) + "\n")
        tmp.replace(self.stack_dir / SETTINGS_FILE)

    def port(self, emulator: str) -> int:
        return {LOCALSTACK: self.localstack_port, DYNAMODB: self.dynamodb_port}[emulator]

    def url(self, emulator: str) -> str:
        return f"http://{HOST}:{self.port(emulator)}"

    @property
    def logs_dir(self) -> Path:
        return self.stack_dir / "logs"

    @property
    def pids_dir(self) -> Path:
        return self.stack_dir / "pids"

    def log_file(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def pid_file(self, name: str) -> Path:
        return self.pids_dir / f"{name}.pid"

    @property
    def venv(self) -> Path:
        """LocalStack's virtualenv."""
        return self.localstack_venv or self.stack_dir / "localstack-venv"

    @property
    def localstack_root(self) -> Path:
        """LocalStack's filesystem root (its data, cache and config), kept out of ``$HOME``."""
        return self.stack_dir / "localstack"

    @property
    def env_file(self) -> Path:
        return self.stack_dir / "env"

    @property
    def outputs_file(self) -> Path:
        return self.stack_dir / "outputs.json"

    @property
    def lock_file(self) -> Path:
        return self.stack_dir / "stack.lock"
