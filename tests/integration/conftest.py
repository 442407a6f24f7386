"""Integration tests run against a local stack that the test session starts for itself.

The stack lives in a temporary directory on free loopback ports, so a developer's running
stack (``.stack``, ports 4566/4567) is never touched; only LocalStack's virtualenv is shared
with ``.stack`` (installed there on first use, about a minute) to skip a reinstall per session.
"""

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


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The client environment (standard AWS SDK variables) of a provisioned local stack.

    Deliberately not exported to ``os.environ`` for the whole session: a unit test using
    moto's in-process mocks would otherwise be sent to the emulators. Use ``stack_environ``.
    """
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


@pytest.fixture
def stack_environ(local_stack: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """``local_stack``'s variables set in ``os.environ`` for one test, as a process would see
    them after ``eval "$(python -m infra.local env)"``."""
    for key, value in local_stack.items():
        monkeypatch.setenv(key, value)
    return local_stack
