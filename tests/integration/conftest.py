"""Integration tests run against a local stack that the test session starts for itself.

The stack lives in a temporary directory on free loopback ports, so a developer's running
stack (``.stack``, ports 4566/4567) is never touched; only LocalStack's virtualenv is shared
with ``.stack`` (installed there on first use, about a minute) to skip a reinstall per session.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from local_stacks import running_stack
from sale_harness import Sale, open_sale
from scenarios import SESSION_START, Scenario, declare, report, rows

from flashsale import aws
from flashsale.settings import Settings, get_settings
from infra.local.fleet import Fleet

# --- the scenario table (tests/integration/scenarios.py) ---------------------------------------


def pytest_collection_finish(session: pytest.Session) -> None:
    """The session's start, for the table's title (this conftest loads during collection)."""
    session.config.stash[SESSION_START] = time.time()


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A marked test gets its row before anything can fail."""
    row = declare(item)
    if row is not None:
        rows(item.config)[item.nodeid] = row


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """The row's result is the test's own: failed if any phase failed, else passed."""
    test_report = yield
    row = rows(item.config).get(item.nodeid)
    if row is not None:
        if test_report.failed:
            row.outcome = "failed"
        elif test_report.when == "call":
            row.outcome = test_report.outcome
        if test_report.when == "call":
            row.seconds = test_report.duration
    return test_report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    report(config, terminalreporter.write)


@pytest.fixture
def scenario(request: pytest.FixtureRequest) -> Scenario:
    """This test's row in the scenario table; the test must be marked ``scenario``."""
    row = rows(request.config).get(request.node.nodeid)
    if row is None:
        pytest.fail("the scenario fixture needs @pytest.mark.scenario(name, injected=...)")
    return row


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
        # Settings and clients this process built for an earlier module's stack.
        get_settings.cache_clear()
        aws.reset_clients()
        yield local_stack


@pytest.fixture(scope="module")
def settings(environ: dict[str, str]) -> Settings:
    return Settings()


@pytest.fixture(scope="module")
def clients(environ: dict[str, str]) -> dict[str, Any]:
    return {service: boto3.client(service) for service in ("sqs", "dynamodb", "cloudwatch")}


@pytest.fixture
def sale(fleet: Fleet, settings: Settings, clients: dict[str, Any]) -> Iterator[Sale]:
    """A ``Sale`` over the requesting module's own ``fleet`` fixture (its workers)."""
    with open_sale(fleet, settings, clients) as sale:
        yield sale
