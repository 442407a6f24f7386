"""The intake's ASGI app (Starlette on uvicorn): purchases in, order status out.

Starlette rather than FastAPI: on this machine FastAPI's per-route machinery (dependency
solving, response handling) cost 35-45 % of the requests per second of the same handler as a
plain Starlette route (measured with wrk, README). The OpenAPI document is built from the same
pydantic models instead (``intake.openapi``), and fuzzed against the app with schemathesis.

Status codes (each documented in the OpenAPI document):

- ``POST /v1/purchases``: 202 accepted (on the queue; ``Location`` = status URL), 200
  ``sold_out`` (decided at the edge, nothing enqueued: a normal outcome, not an error), 400 not
  JSON, 404 unknown event, 413 body too large, 422 invalid fields (each named), 503 with
  ``Retry-After`` when a bound is reached (backlog, buffer, requests in flight, enqueue wait).
  503, not 429: the cause is the system's load, not this client's rate.
- ``GET /v1/events/{id}``: 200 ``on_sale`` or ``sold_out`` (the cached view), 404 unknown.
- ``GET /v1/orders/{id}``: 200 decided, 202 ``pending`` (not decided yet; an id never issued
  looks the same: no per-request state is kept) with ``Retry-After``, 422 not a uuid.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from flashsale.messages import Identifier, PurchaseRequest
from flashsale.settings import Settings
from intake.events import EventState
from intake.exceptions import BodyTooLarge, Overloaded, StatusUnavailable
from intake.openapi import openapi_json
from intake.schemas import (
    EventView,
    FieldError,
    Health,
    OrderPending,
    Problem,
    PurchaseAccepted,
    PurchaseSoldOut,
    Ready,
    Stats,
)
from intake.services import IntakeServices
from tasks.exceptions import InvalidPurchaseRequest

log = structlog.get_logger(__name__)

JSON = "application/json"
# A purchase request is a few hundred bytes; anything much larger is not one.
MAX_BODY_BYTES = 16 * 1024
# Cheap routes that must answer even when the intake is at its in-flight bound.
UNLIMITED_PATHS = frozenset({"/health", "/ready", "/openapi.json"})
EVENT_ID: TypeAdapter[str] = TypeAdapter(Identifier)


def json_response(
    model: BaseModel, status: int, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(model.model_dump_json(), status, headers, media_type=JSON)


def status_url(order_id: str) -> str:
    return f"/v1/orders/{order_id}"


@dataclass
class Counters:
    accepted: int = 0
    sold_out_at_edge: int = 0
    unknown_event: int = 0
    invalid: int = 0
    overloaded: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    peak_in_flight: int = 0

    def refused(self, reason: str) -> None:
        self.overloaded[reason] = self.overloaded.get(reason, 0) + 1


class InFlightLimit:
    """Pure ASGI middleware: at most ``limit`` requests handled at once, the rest get a 503
    with ``Retry-After`` at once. This is what keeps memory bounded under any load."""

    def __init__(self, app: ASGIApp, *, limit: int, retry_after: int, counters: Counters) -> None:
        self.app = app
        self.limit = limit
        self.counters = counters
        self.refusal = (
            Problem(
                detail=f"more than {limit} requests in progress; retry later", reason="in_flight"
            )
            .model_dump_json()
            .encode()
        )
        self.retry_after = str(retry_after).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNLIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        counters = self.counters
        if counters.in_flight >= self.limit:
            counters.refused("in_flight")
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [
                        (b"content-type", JSON.encode()),
                        (b"content-length", str(len(self.refusal)).encode()),
                        (b"retry-after", self.retry_after),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": self.refusal})
            return
        counters.in_flight += 1
        counters.peak_in_flight = max(counters.peak_in_flight, counters.in_flight)
        try:
            await self.app(scope, receive, send)
        finally:
            counters.in_flight -= 1


def _field_errors(exc: ValidationError) -> list[FieldError]:
    return [
        FieldError(field=".".join(str(p) for p in err["loc"]) or "request", message=err["msg"])
        for err in exc.errors(include_url=False, include_input=False)
    ]


def _invalid(errors: list[FieldError], status: int = 422) -> Response:
    detail = "invalid purchase request: " + "; ".join(f"{e.field}: {e.message}" for e in errors)
    return json_response(Problem(detail=detail, reason="invalid", errors=errors), status)


class IntakeApi:
    """The request handlers, over the services they need."""

    def __init__(self, services: IntakeServices, settings: Settings, counters: Counters) -> None:
        self.services = services
        self.counters = counters
        self.max_per_request = settings.max_tickets_per_request
        self.retry_after = {"Retry-After": str(settings.intake_retry_after_seconds)}
        self.openapi = openapi_json().encode()

    async def purchase(self, request: Request) -> Response:
        body = await _read_body(request)
        try:
            purchase = PurchaseRequest.model_validate_json(body)
        except ValidationError as exc:
            self.counters.invalid += 1
            errors = _field_errors(exc)
            not_json = any(err["type"] == "json_invalid" for err in exc.errors())
            return _invalid(errors, 400 if not_json else 422)
        if purchase.quantity > self.max_per_request:
            self.counters.invalid += 1
            message = f"at most {self.max_per_request} tickets per request"
            return _invalid([FieldError(field="quantity", message=message)])
        # A repeat of a request already queued is accepted again, whatever the event's state.
        if self.services.enqueuer.knows(purchase.order_id):
            return await self._accept(purchase)
        state = await self.services.events.state(purchase.event_id)
        if state is EventState.NOT_FOUND:
            self.counters.unknown_event += 1
            detail = f"no event {purchase.event_id!r} is on sale"
            return json_response(Problem(detail=detail, reason="unknown_event"), 404)
        if state is EventState.SOLD_OUT:
            self.counters.sold_out_at_edge += 1
            order_id = purchase.order_id
            answer = PurchaseSoldOut(
                order_id=order_id,
                event_id=purchase.event_id,
                status_url=status_url(order_id),
                detail="the event is sold out; this request was not queued",
            )
            return json_response(answer, 200)
        backlog = self.services.backlog
        if backlog.over_limit:
            raise Overloaded(
                "backlog",
                f"{backlog.depth} purchase messages are waiting (limit {backlog.limit}); "
                "retry later with the same request_id",
            )
        return await self._accept(purchase)

    async def _accept(self, purchase: PurchaseRequest) -> Response:
        accepted = await self.services.enqueuer.enqueue(purchase)
        self.counters.accepted += 1
        url = status_url(accepted.order_id)
        answer_202 = PurchaseAccepted(
            order_id=accepted.order_id, event_id=accepted.event_id, status_url=url
        )
        return json_response(answer_202, 202, {"Location": url})

    async def order(self, request: Request) -> Response:
        raw = request.path_params["order_id"]
        try:
            order_id = str(uuid.UUID(raw))
        except ValueError:
            errors = [FieldError(field="order_id", message="not an order id (a UUID)")]
            problem = Problem(detail="not an order id", reason="invalid", errors=errors)
            return json_response(problem, 422)
        services = self.services
        try:
            view = await services.blocking.run(services.orders.get, order_id)
        except Exception as exc:
            raise StatusUnavailable(f"the order's status cannot be read now: {exc!r}") from exc
        if view is None:
            return json_response(OrderPending(order_id=order_id), 202, self.retry_after)
        return json_response(view, 200)

    async def event(self, request: Request) -> Response:
        try:
            event_id = EVENT_ID.validate_python(request.path_params["event_id"])
        except ValidationError:
            errors = [FieldError(field="event_id", message="not an event id")]
            problem = Problem(detail="not an event id", reason="invalid", errors=errors)
            return json_response(problem, 422)
        state = await self.services.events.state(event_id)
        if state is EventState.NOT_FOUND:
            return json_response(
                Problem(detail=f"no event {event_id!r}", reason="unknown_event"), 404
            )
        if state is EventState.UNCHECKED:
            raise StatusUnavailable(f"the inventory of {event_id!r} cannot be read now")
        if state is EventState.SOLD_OUT:
            return json_response(EventView(event_id=event_id, status="sold_out"), 200)
        return json_response(EventView(event_id=event_id, status="on_sale"), 200)

    async def health(self, request: Request) -> Response:
        return json_response(Health(), 200)

    async def ready(self, request: Request) -> Response:
        sqs = self.services.backlog.reachable()
        dynamodb = await self.services.events.reachable()
        answer = Ready(ready=sqs and dynamodb, sqs=sqs, dynamodb=dynamodb)
        return json_response(answer, 200 if answer.ready else 503)

    async def stats(self, request: Request) -> Response:
        c, enqueuer, backlog = self.counters, self.services.enqueuer, self.services.backlog
        answer = Stats(
            accepted=c.accepted,
            sold_out_at_edge=c.sold_out_at_edge,
            unknown_event=c.unknown_event,
            invalid=c.invalid,
            overloaded=dict(c.overloaded),
            repeats=enqueuer.repeats,
            buffered=enqueuer.buffered,
            requests_sent=enqueuer.requests_sent,
            messages_sent=enqueuer.messages_sent,
            backlog=backlog.depth,
            peak_backlog=backlog.peak,
            in_flight=c.in_flight,
            peak_in_flight=c.peak_in_flight,
        )
        return json_response(answer, 200)

    async def openapi_document(self, request: Request) -> Response:
        return Response(self.openapi, 200, media_type=JSON)

    # Errors raised by handlers, as answers.

    async def overloaded(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Overloaded)
        self.counters.refused(exc.reason)
        return json_response(Problem(detail=exc.detail, reason=exc.reason), 503, self.retry_after)

    async def unavailable(self, request: Request, exc: Exception) -> Response:
        log.warning("intake.status_unavailable", error=str(exc))
        problem = Problem(detail="order status is unavailable; retry later", reason="unavailable")
        return json_response(problem, 503, self.retry_after)

    async def too_large(self, request: Request, exc: Exception) -> Response:
        self.counters.invalid += 1
        detail = f"the body is larger than {MAX_BODY_BYTES} bytes"
        problem = Problem(detail=detail, reason="too_large")
        return json_response(problem, 413)

    async def refused_by_intake(self, request: Request, exc: Exception) -> Response:
        self.counters.invalid += 1  # tasks.intake's own check, should the handler's ever differ
        return json_response(Problem(detail=str(exc), reason="invalid"), 422)

    async def http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        problem = Problem(detail=exc.detail, reason="http")
        return json_response(problem, exc.status_code, exc.headers)


async def _read_body(request: Request) -> bytes:
    """The body, refused past ``MAX_BODY_BYTES`` before it is all read."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BodyTooLarge()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BodyTooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(services: IntakeServices, settings: Settings) -> Starlette:
    """The intake app over ``services``; its lifespan starts and stops them."""
    counters = Counters()
    api = IntakeApi(services, settings, counters)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await services.start()
        log.info("intake.ready")
        try:
            yield
        finally:
            await services.stop()
            log.info(
                "intake.stopped",
                accepted=counters.accepted,
                sold_out_at_edge=counters.sold_out_at_edge,
                overloaded=counters.overloaded,
                requests_sent=services.enqueuer.requests_sent,
                repeats=services.enqueuer.repeats,
            )

    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        Overloaded: api.overloaded,
        StatusUnavailable: api.unavailable,
        BodyTooLarge: api.too_large,
        InvalidPurchaseRequest: api.refused_by_intake,
        HTTPException: api.http_error,
    }
    return Starlette(
        routes=[
            Route("/v1/purchases", api.purchase, methods=["POST"]),
            Route("/v1/orders/{order_id}", api.order, methods=["GET"]),
            Route("/v1/events/{event_id}", api.event, methods=["GET"]),
            Route("/health", api.health, methods=["GET"]),
            Route("/ready", api.ready, methods=["GET"]),
            Route("/stats", api.stats, methods=["GET"]),
            Route("/openapi.json", api.openapi_document, methods=["GET"]),
        ],
        middleware=[
            Middleware(
                InFlightLimit,
                limit=settings.intake_max_in_flight,
                retry_after=settings.intake_retry_after_seconds,
                counters=counters,
            )
        ],
        exception_handlers=handlers,
        lifespan=lifespan,
    )
