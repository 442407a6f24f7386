"""``bench.http_load``: the load process's client loop against a tiny in-process HTTP server —
every answer recorded, 503s retried after Retry-After a bounded number of times, the time bound
honoured — and the raw results read back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from bench.http_load import LoadResult, LoadSpec, Outcome, fire

Handler = Callable[[dict[str, Any] | None, int], tuple[int, dict[str, Any], dict[str, str]]]


async def _serve(handler: Handler, spec_for: Callable[[str], LoadSpec]) -> LoadResult:
    """Run ``fire`` against a server whose answers ``handler(body, attempt)`` decides."""
    attempts: dict[str, int] = {}

    async def purchase(request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        key = raw.decode(errors="replace")
        attempts[key] = attempts.get(key, 0) + 1
        status, answer, headers = handler(body, attempts[key])
        return web.json_response(answer, status=status, headers=headers)

    app = web.Application()
    app.router.add_post("/v1/purchases", purchase)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        return await fire(spec_for(f"http://127.0.0.1:{port}"))
    finally:
        await runner.cleanup()


def _accept_all(
    body: dict[str, Any] | None, attempt: int
) -> tuple[int, dict[str, Any], dict[str, str]]:
    if body is None:
        return 400, {"reason": "invalid"}, {}
    if body.get("event_id") != "ev":
        return 422, {"reason": "invalid"}, {}
    return 202, {"order_id": f"order-{body['buyer_id']}", "status": "accepted"}, {}


def test_fire__records_every_request_with_its_outcome_and_order_id(tmp_path: Path) -> None:
    def spec(url: str) -> LoadSpec:
        return LoadSpec(urls=(url,), event_id="ev", requests=60, duplicates=6, malformed=4,
                        connections=8, max_seconds=30)  # fmt: skip

    result = asyncio.run(_serve(_accept_all, spec))
    result.dump(tmp_path / "load.json")
    again = LoadResult.load(tmp_path / "load.json")

    counts = again.outcomes()
    assert counts[Outcome.ACCEPTED] == 56 and counts[Outcome.INVALID] == 4
    assert len(again.accepted_orders()) == 50  # the 6 repeats carry earlier order ids
    assert again.attempts == 60 and again.retried() == 0
    assert all(t > 0 for t in again.first_sent_at) and not again.timed_out
    assert again.latency_percentiles()["answers"] == 60


def test_fire__retries_a_503_after_retry_after_at_most_the_bounded_number_of_times() -> None:
    def busy_then_fine(
        body: dict[str, Any] | None, attempt: int
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        assert body is not None
        if body["buyer_id"] == "buyer-0":  # never gets in
            return 503, {"reason": "backlog"}, {"Retry-After": "0"}
        if attempt == 1:
            return 503, {"reason": "in_flight"}, {"Retry-After": "0"}
        return 202, {"order_id": f"order-{body['buyer_id']}"}, {}

    def spec(url: str) -> LoadSpec:
        return LoadSpec(urls=(url,), event_id="ev", requests=5, connections=2, retries=2)

    result = asyncio.run(_serve(busy_then_fine, spec))

    assert result.outcome[0] == Outcome.REJECTED  # 1 try + 2 retries, all 503
    assert result.outcomes()[Outcome.ACCEPTED] == 4
    assert result.retried() == 2 + 4
    assert result.refusals() == {"backlog": 3, "in_flight": 4}


def test_fire__stops_at_its_time_bound_and_marks_what_was_not_answered() -> None:
    def spec(url: str) -> LoadSpec:
        # Retry-After of 5 s on every answer: the 0.5 s bound comes first.
        return LoadSpec(urls=(url,), event_id="ev", requests=20, connections=2, max_seconds=0.5)

    def always_busy(
        body: dict[str, Any] | None, attempt: int
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        return 503, {"reason": "backlog"}, {"Retry-After": "5"}

    result = asyncio.run(_serve(always_busy, spec))

    assert result.timed_out
    assert result.outcomes()[Outcome.CUT_OFF] == 20
