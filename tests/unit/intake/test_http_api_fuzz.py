"""Schema-based fuzzing of the intake's API (schemathesis): for every operation in the
published OpenAPI document, generated requests — valid and invalid — never get a 5xx other
than the documented 503, and every answer conforms to the document (status code, content type,
headers, body schema). Bounded: derandomized, a fixed number of examples per operation."""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from intake_http_fakes import FakeInventory
from intake_http_stack import fake_stack
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.applications import Starlette

from intake.events import Inventory
from intake.openapi import openapi_document

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


class EveryEvent(FakeInventory):
    """Generated event ids land on every branch: by a hash of the id, a third are unknown, a
    third sold out, a third on sale."""

    def read(self, event_ids: Sequence[str]) -> dict[str, Inventory]:
        self.reads.append(list(event_ids))
        kinds = {e: zlib.crc32(e.encode()) % 3 for e in event_ids}
        return {e: Inventory(capacity=5, sold=5 * (k - 1)) for e, k in kinds.items() if k}


# Loaded from the document itself (what clients get), not from a running app.
schema = schemathesis.openapi.from_dict(openapi_document())


@pytest.fixture
def intake_app() -> Iterator[Starlette]:
    # Any quantity the schema allows is allowed here, so valid requests get through to the queue.
    stack = fake_stack(inventory=EveryEvent(), max_tickets_per_request=100)
    yield stack.app
    # schemathesis keeps an app's lifespan running for the whole process; stop ours now.
    asgi.shutdown_lifespans()


@schema.parametrize()
@settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api__answers_every_generated_request_as_documented(
    case: schemathesis.Case, intake_app: Starlette
) -> None:
    case.call_and_validate(checks=CHECKS, app=intake_app)
