"""The ``make_harness`` fixture: ``intake_http_stack.fake_stack`` started under Starlette's
TestClient. Helpers live in ``intake_http_stack`` and ``intake_http_fakes`` (test modules
never import from a conftest: another folder's conftest may own that module name)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from intake_http_stack import Harness, MakeHarness, fake_stack
from starlette.testclient import TestClient


@pytest.fixture
def make_harness() -> Iterator[MakeHarness]:
    """``make_harness(seats=10, sold=0, orders=..., **settings)``: ``fake_stack`` started under
    Starlette's TestClient (which runs the app's lifespan); stopped after the test."""
    clients: list[TestClient] = []

    def make(**kwargs: Any) -> Harness:
        stack = fake_stack(**kwargs)
        client = TestClient(stack.app)
        client.__enter__()
        clients.append(client)
        return Harness(client, stack.services, stack.settings, stack.queue, stack.inventory,
                       stack.clock)  # fmt: skip

    yield make
    for client in reversed(clients):
        client.__exit__(None, None, None)
