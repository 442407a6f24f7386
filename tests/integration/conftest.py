"""Integration tests run against a local stack that the test session starts for itself.

The stack lives in a temporary directory on free loopback ports, so a developer's running
stack (``.stack``, ports 4566/4567) is never touched; only LocalStack's virtualenv is shared
with ``.stack`` (installed there on first use, about a minute) to skip a reinstall per session.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from local_stacks import running_stack

from flashsale.settings import Settings


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The client environment (standard AWS SDK variables) of a provisioned local stack.

    Deliberately not exported to ``os.environ`` for the whole session: a unit test using
    moto's in-process mocks would otherwise be sent to the emulators. Use ``environ`` or
    ``stack_environ``. A module that counts a whole queue (a DLQ, say) overrides this fixture
    with its own ``running_stack`` so other modules' messages cannot reach its counts.
    """
    yield from running_stack(tmp_path_factory)


@pytest.fixture
def stack_environ(local_stack: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """``local_stack``'s variables set in ``os.environ`` for one test, as a process would see
    them after ``eval "$(python -m infra.local env)"``."""
    for key, value in local_stack.items():
        monkeypatch.setenv(key, value)
    return local_stack


@pytest.fixture(scope="module")
def environ(local_stack: dict[str, str]) -> Iterator[dict[str, str]]:
    """For one test module: the stack's variables in ``os.environ``, and no ``FLASHSALE_*``
    override left from elsewhere, so settings come from the stack outputs — for this process
    and for the worker and relay processes it starts."""
    with pytest.MonkeyPatch.context() as patch:
        for key in list(os.environ):
            if key.startswith("FLASHSALE_") and key not in local_stack:
                patch.delenv(key)
        for key, value in local_stack.items():
            patch.setenv(key, value)
        yield local_stack


@pytest.fixture(scope="module")
def settings(environ: dict[str, str]) -> Settings:
    return Settings()


@pytest.fixture(scope="module")
def clients(environ: dict[str, str]) -> dict[str, Any]:
    return {service: boto3.client(service) for service in ("sqs", "dynamodb", "cloudwatch")}
