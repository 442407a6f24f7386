"""The intake's OpenAPI document, built from the same pydantic models the handlers use.

Published at ``/openapi.json`` and checked in as ``intake/openapi.json`` (``python -m intake
--write-openapi``; a unit test fails if the two differ), so the contract is reviewed in diffs.
Schemathesis fuzzes the app against it (``tests/unit/intake/test_http_api_fuzz.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from flashsale.messages import PurchaseRequest
from intake.schemas import (
    EventView,
    Health,
    OrderPending,
    OrderView,
    Problem,
    PurchaseAccepted,
    PurchaseSoldOut,
    Ready,
    Stats,
)

CHECKED_IN = Path(__file__).with_name("openapi.json")
OPENAPI_VERSION = "3.1.0"
REF = "#/components/schemas/{model}"
JSON = "application/json"

_RETRY_AFTER = {
    "description": "Seconds to wait before retrying (with the same request_id)",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
}


def _json(description: str, model: type[BaseModel], **headers: Any) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": {JSON: {"schema": {"$ref": REF.format(model=model.__name__)}}},
    }
    if headers:
        answer["headers"] = headers
    return answer


def _overloaded() -> dict[str, Any]:
    return _json(
        "Overloaded (backlog, buffer, requests in flight or enqueue wait past its bound)",
        Problem,
        **{"Retry-After": _RETRY_AFTER},
    )


def openapi_document() -> dict[str, Any]:
    """The document, deterministic (it is compared with the checked-in file)."""
    models: list[tuple[type[BaseModel], Any]] = [(PurchaseRequest, "validation")] + [
        (m, "serialization")
        for m in (
            EventView,
            PurchaseAccepted,
            PurchaseSoldOut,
            OrderView,
            OrderPending,
            Problem,
            Health,
            Ready,
            Stats,
        )
    ]
    _, schemas = models_json_schema(models, ref_template=REF)
    purchase = {
        "post": {
            "operationId": "createPurchase",
            "summary": "Ask for seats: answered at once, decided in order by the workers",
            "description": (
                "Validates the request and, once its batch is on the purchases queue, answers "
                "202 with the order id (uuid5 of event, buyer and request_id: a retry or double "
                "click gets the same id and can only ever be one order). A sold-out event is "
                "answered 200 `sold_out` at the edge, without enqueuing; an unknown event 404. "
                "Past the backlog or buffer bound the answer is 503 with Retry-After."
            ),
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": {"$ref": REF.format(model="PurchaseRequest")}}},
            },
            "responses": {
                "202": _json(
                    "Accepted: on the queue, decision to come",
                    PurchaseAccepted,
                    Location={
                        "description": "The order's status URL",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                ),
                "200": _json("Sold out: decided at the edge, nothing enqueued", PurchaseSoldOut),
                "400": _json("The body is not JSON", Problem),
                "404": _json("No such event", Problem),
                "413": _json("The body is too large", Problem),
                "422": _json("Invalid request: every bad field is named", Problem),
                "503": _overloaded(),
            },
        }
    }
    order = {
        "get": {
            "operationId": "getOrder",
            "summary": "An order's seat decision, fulfilment and saga",
            "parameters": [
                {
                    "name": "order_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "format": "uuid"},
                }
            ],
            "responses": {
                "200": _json("Decided", OrderView),
                "202": _json(
                    "Not decided yet (or never accepted): poll again",
                    OrderPending,
                    **{"Retry-After": _RETRY_AFTER},
                ),
                "422": _json("Not an order id", Problem),
                "503": _overloaded(),
            },
        }
    }

    event = {
        "get": {
            "operationId": "getEvent",
            "summary": "Whether an event has seats left (cached for the sold-out TTL)",
            "parameters": [
                {
                    "name": "event_id",
                    "in": "path",
                    "required": True,
                    "schema": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 64,
                        "pattern": "^[A-Za-z0-9][A-Za-z0-9_.:-]*$",
                    },
                }
            ],
            "responses": {
                "200": _json("On sale or sold out", EventView),
                "404": _json("No such event", Problem),
                "422": _json("Not an event id", Problem),
                "503": _overloaded(),
            },
        }
    }

    def simple(operation_id: str, summary: str, **responses: Any) -> dict[str, Any]:
        return {"get": {"operationId": operation_id, "summary": summary, "responses": responses}}

    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "flashsale intake",
            "version": "1",
            "description": "The HTTP front door of the flash sale: buy, then poll the order.",
        },
        "paths": {
            "/v1/purchases": purchase,
            "/v1/orders/{order_id}": order,
            "/v1/events/{event_id}": event,
            "/health": simple("health", "Liveness", **{"200": _json("Alive", Health)}),
            "/ready": simple(
                "ready",
                "Readiness: SQS and DynamoDB reachable",
                **{"200": _json("Ready", Ready), "503": _json("Not ready", Ready)},
            ),
            "/stats": simple(
                "stats",
                "This process's counters",
                **{"200": _json("Counters", Stats), "503": _overloaded()},
            ),
        },
        "components": {"schemas": schemas["$defs"]},
    }


def openapi_json() -> str:
    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"


def write_openapi(path: Path = CHECKED_IN) -> Path:
    path.write_text(openapi_json())
    return path
