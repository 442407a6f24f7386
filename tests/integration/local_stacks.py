"""Starting a local stack for a test session or module, on free ports, in a new directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import infra.local
from infra.local import down, up
from infra.local.ports import free_port

REPO_ROOT = Path(infra.local.__file__).resolve().parents[2]
SHARED_LOCALSTACK_VENV = REPO_ROOT / ".stack" / "localstack-venv"


def free_ports(count: int) -> list[int]:
    """Distinct ports that are free right now."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Start a provisioned local stack in a new directory on free ports; stop it afterwards."""
    stack_dir = tmp_path_factory.mktemp("local-stack")
    localstack_port, dynamodb_port = free_ports(2)
    env = up(
        stack_dir,
        localstack_port=localstack_port,
        dynamodb_port=dynamodb_port,
        localstack_venv=SHARED_LOCALSTACK_VENV,
        timeout=180,
    )
    try:
        yield env
    finally:
        down(stack_dir)
