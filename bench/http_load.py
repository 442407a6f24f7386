"""``python -m bench.http_load``: many concurrent buyers against the HTTP intake, on loopback.

A process of its own, so its CPU is neither the intake's nor the benchmark driver's and is
measured apart. It fires ``--requests`` purchase requests at one event — unique buyers with an
e-mail address (every fifth with a phone), some repeated request ids (double clicks, client
retries) and a few malformed bodies (some not even JSON), mixed as ``tasks.loadgen.requests``
mixes them — from ``--connections`` clients, each with one keep-alive connection: a closed loop,
as buyers who click again only once answered. Everything is bounded: the connections, each
request (``--request-timeout``), the whole run (``--max-seconds``; what is not answered by
then is recorded as cut off, never waited for), and the retries: a ``503`` with
``Retry-After`` is sent again after that many seconds (at most ``--max-retry-after``), at most
``--retries`` times, each attempt recorded.

The raw results go to ``--out`` as one JSON document (``LoadResult.load`` reads it): every
attempt's send time, latency, status and refusal reason; every request's outcome, order id,
quantity and first send / final answer times. The benchmark joins the order ids with the orders
table to time each seat decision.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from bench.ledger import percentile

PURCHASES_PATH = "/v1/purchases"
# Every fourth malformed request is not JSON at all (a truncated body): the intake's 400 path.
NOT_JSON_EVERY = 4


class Outcome(StrEnum):
    """What became of one request (its last attempt's answer)."""

    ACCEPTED = "accepted"  # 202: on the queue, its seat decided later
    SOLD_OUT = "sold_out"  # 200: decided at the intake, never queued
    INVALID = "invalid"  # 4xx: refused at the edge
    REJECTED = "rejected"  # 503 still after every retry: refused by backpressure
    ERROR = "error"  # no HTTP answer (connection refused or reset, request timeout)
    CUT_OFF = "cut_off"  # the run's time bound came first (in flight or never sent)


@dataclass(frozen=True)
class LoadSpec:
    """One burst: which requests, how many clients, and every bound."""

    urls: tuple[str, ...]
    event_id: str
    requests: int
    duplicates: int = 0
    malformed: int = 0
    seed: int = 7
    first: int = 0  # number of the first new buyer (later waves continue the numbering)
    connections: int = 128
    max_seconds: float = 120.0
    retries: int = 3
    max_retry_after_s: float = 5.0
    request_timeout_s: float = 10.0


@dataclass
class _Attempts:
    request: list[int] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)  # epoch seconds
    latency_ms: list[float] = field(default_factory=list)
    status: list[int] = field(default_factory=list)  # 0: no HTTP answer
    reason: list[str] = field(default_factory=list)  # a 503's reason, else ""


@dataclass
class LoadResult:
    """The raw results of one burst, as written by the load process."""

    spec: dict[str, Any]
    started_at: float
    ended_at: float
    timed_out: bool
    outcome: list[str]
    order_id: list[str]
    quantity: list[int]
    first_sent_at: list[float]  # 0.0: never sent
    answered_at: list[float]  # 0.0: never answered
    attempts: int
    attempt_request: list[int]
    attempt_sent_at: list[float]
    attempt_latency_ms: list[float]
    attempt_status: list[int]
    attempt_reason: list[str]

    @classmethod
    def load(cls, path: Path) -> LoadResult:
        return cls(**json.loads(path.read_text()))

    def dump(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), separators=(",", ":")))

    def outcomes(self) -> Counter[str]:
        return Counter(self.outcome)

    def accepted_orders(self) -> dict[str, float]:
        """Order ids answered 202 (a repeat counts once), with the earliest first send."""
        first: dict[str, float] = {}
        for outcome, order_id, sent in zip(
            self.outcome, self.order_id, self.first_sent_at, strict=True
        ):
            if outcome == Outcome.ACCEPTED:
                first[order_id] = min(sent, first.get(order_id, sent))
        return first

    def retried(self) -> int:
        """Attempts beyond each request's first: the retries after a 503."""
        return self.attempts - sum(1 for t in self.first_sent_at if t)

    def refusals(self) -> Counter[str]:
        """503 answers by the intake's reason (backlog, buffer, in_flight, enqueue_timeout)."""
        return Counter(
            reason or "?"
            for status, reason in zip(self.attempt_status, self.attempt_reason, strict=True)
            if status == 503
        )

    def latency_percentiles(self, *, statuses: Sequence[int] | None = None) -> dict[str, float]:
        """p50/p99/max over every HTTP answer (each attempt is a request the intake served)."""
        values = [
            ms
            for ms, status in zip(self.attempt_latency_ms, self.attempt_status, strict=True)
            if status and (statuses is None or status in statuses)
        ]
        return {
            "p50_ms": round(percentile(values, 50), 1),
            "p99_ms": round(percentile(values, 99), 1),
            "max_ms": round(max(values, default=0.0), 1),
            "answers": len(values),
        }


def _bodies(spec: LoadSpec) -> tuple[list[bytes], list[int]]:
    """The requests' bodies in arrival order, and the quantity each asks for (0 if malformed)."""
    from tasks.loadgen import requests  # the same mix as the in-process intake's load

    bodies: list[bytes] = []
    quantities: list[int] = []
    malformed = 0
    for raw in requests(
        spec.event_id,
        spec.requests,
        duplicates=spec.duplicates,
        malformed=spec.malformed,
        seed=spec.seed,
        first=spec.first,
    ):
        body = json.dumps(raw).encode()
        valid = raw.get("event_id") == spec.event_id
        quantity = raw.get("quantity")
        if not valid:
            malformed += 1
            if malformed % NOT_JSON_EVERY == 0:
                body = body[: len(body) // 2]
        bodies.append(body)
        quantities.append(quantity if valid and isinstance(quantity, int) else 0)
    return bodies, quantities


class _Run:
    """The state of one burst on the event loop (single-threaded: no locks)."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.bodies, self.quantities = _bodies(spec)
        n = len(self.bodies)
        self.outcome = [Outcome.CUT_OFF.value] * n
        self.order_id = [""] * n
        self.first_sent_at = [0.0] * n
        self.answered_at = [0.0] * n
        self.attempts = _Attempts()
        self.next_request = 0

    async def client(self, session: Any, url: str) -> None:
        """One buyer's connection: take the next request, send it (and its retries), repeat."""
        while self.next_request < len(self.bodies):
            index = self.next_request
            self.next_request += 1
            await self.send(session, url, index)

    async def send(self, session: Any, url: str, index: int) -> None:
        import aiohttp

        spec = self.spec
        for attempt in range(spec.retries + 1):
            sent_at = time.time()
            if attempt == 0:
                self.first_sent_at[index] = sent_at
            started = time.perf_counter()
            try:
                async with session.post(
                    url, data=self.bodies[index], headers={"Content-Type": "application/json"}
                ) as response:
                    payload = await response.read()
                    status = response.status
                    retry_after = response.headers.get("Retry-After", "1")
            except (aiohttp.ClientError, TimeoutError):
                self._record(index, sent_at, started, 0, "")
                self.outcome[index] = Outcome.ERROR.value
                self.answered_at[index] = time.time()
                return
            answer = _json(payload)
            self._record(index, sent_at, started, status, str(answer.get("reason", "")))
            self.answered_at[index] = time.time()
            if status == 503 and attempt < spec.retries:
                # Honour Retry-After, as a well-behaved client does (bounded by the spec).
                await asyncio.sleep(min(_seconds(retry_after), spec.max_retry_after_s))
                continue
            self.order_id[index] = str(answer.get("order_id", ""))
            self.outcome[index] = _outcome(status).value
            return

    def _record(self, index: int, sent_at: float, started: float, status: int, reason: str) -> None:
        attempts = self.attempts
        attempts.request.append(index)
        attempts.sent_at.append(sent_at)
        attempts.latency_ms.append(round((time.perf_counter() - started) * 1000, 3))
        attempts.status.append(status)
        attempts.reason.append(reason)

    def result(self, started_at: float, timed_out: bool) -> LoadResult:
        a = self.attempts
        return LoadResult(
            spec=asdict(self.spec),
            started_at=started_at,
            ended_at=time.time(),
            timed_out=timed_out,
            outcome=self.outcome,
            order_id=self.order_id,
            quantity=self.quantities,
            first_sent_at=self.first_sent_at,
            answered_at=self.answered_at,
            attempts=len(a.request),
            attempt_request=a.request,
            attempt_sent_at=a.sent_at,
            attempt_latency_ms=a.latency_ms,
            attempt_status=a.status,
            attempt_reason=a.reason,
        )


def _outcome(status: int) -> Outcome:
    if status == 202:
        return Outcome.ACCEPTED
    if status == 200:
        return Outcome.SOLD_OUT
    if status == 503:
        return Outcome.REJECTED
    return Outcome.INVALID


def _json(payload: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(payload)
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _seconds(retry_after: str) -> float:
    try:
        return max(float(retry_after), 0.0)
    except ValueError:  # an HTTP date: not what the intake sends; wait the usual second
        return 1.0


async def fire(spec: LoadSpec) -> LoadResult:
    """Send the burst; returns once every request is answered or the time bound is reached."""
    import aiohttp

    run = _Run(spec)
    connector = aiohttp.TCPConnector(limit=spec.connections, limit_per_host=spec.connections)
    timeout = aiohttp.ClientTimeout(total=spec.request_timeout_s)
    started_at = time.time()
    timed_out = False
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        clients = [
            asyncio.ensure_future(
                run.client(session, spec.urls[n % len(spec.urls)] + PURCHASES_PATH)
            )
            for n in range(spec.connections)
        ]
        try:
            async with asyncio.timeout(spec.max_seconds):
                await asyncio.gather(*clients)
        except TimeoutError:
            timed_out = True  # what is unanswered stays CUT_OFF
            for task in clients:
                task.cancel()
            await asyncio.gather(*clients, return_exceptions=True)
    return run.result(started_at, timed_out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__ and __doc__.splitlines()[0])
    parser.add_argument("--url", action="append", required=True, help="an intake's base URL")
    parser.add_argument("--event", required=True)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--duplicates", type=int, default=0)
    parser.add_argument("--malformed", type=int, default=0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--connections", type=int, default=128)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--retries", type=int, default=3)
    parser.add_argument("--max-retry-after", type=float, default=5.0)
    parser.add_argument("--request-timeout", type=float, default=10.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    spec = LoadSpec(
        urls=tuple(u.rstrip("/") for u in args.url),
        event_id=args.event,
        requests=args.requests,
        duplicates=args.duplicates,
        malformed=args.malformed,
        seed=args.seed,
        first=args.first,
        connections=args.connections,
        max_seconds=args.max_seconds,
        retries=args.retries,
        max_retry_after_s=args.max_retry_after,
        request_timeout_s=args.request_timeout,
    )
    import uvloop

    result = uvloop.run(fire(spec))
    result.dump(args.out)
    counts = result.outcomes()
    print(json.dumps({"outcomes": counts, "timed_out": result.timed_out}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
