"""A local payment provider with Stripe-like idempotency, run as its own process.

``python -m payments.provider --port 4590 --ledger provider.db`` serves:

- ``POST /v1/charges`` (header ``Idempotency-Key``; JSON ``amount``, ``currency``,
  ``description``): the first request for a key decides (deterministically, see ``declines``)
  and records; a repeat with the same amount and currency gets the stored answer and
  ``Idempotent-Replayed: true``; a different amount or currency gets 409. A key voided by a
  refund first is refused with 402 ``charge_voided`` and nothing is recorded.
- ``POST /v1/refunds`` (JSON ``key``): refunds a succeeded charge once, answers
  ``nothing_to_refund`` for a declined one, and *voids* a key with no charge yet, so that a
  compensation racing a charge still in flight wins for good (as cancelling a Stripe
  PaymentIntent does).
- Faults for ``/v1/*`` (flags, or ``POST /_control/faults`` at runtime): latency, 500/503
  before doing anything, a hang past any client timeout recording nothing, and a crash right
  after a charge is committed (``os._exit``, no answer).
- ``GET /_ledger``, ``GET /_ledger/charges``, ``GET /health`` for tests and operators.

The stdlib server starts in milliseconds and has no dependencies; one thread per connection is
plenty for a local stack.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import structlog

from flashsale.logs import configure_logging
from payments.ledger import ChargeOutcome, ChargeRecord, Ledger, RefundOutcome

log = structlog.get_logger("payments.provider")

CRASH_EXIT_CODE = 70
MAX_KEY_LENGTH = 255  # Stripe's limit for idempotency keys
MAX_BODY_BYTES = 64 * 1024
_CURRENCY = re.compile(r"[a-z]{3}")


def declines(key: str, rate: float) -> bool:
    """Whether a charge with ``key`` is declined at ``rate``: a pure function of the key, so a
    retry gets the same answer and a test can predict which orders fail."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < rate


@dataclass(frozen=True)
class Faults:
    """The provider's behaviour knobs; every rate is a probability per ``/v1`` request."""

    latency_ms: float = 0.0
    decline_rate: float = 0.0
    error_rate: float = 0.0
    timeout_rate: float = 0.0
    crash_after_charge_rate: float = 0.0

    def updated(self, changes: object) -> Faults:
        """A copy with ``changes`` (a JSON object) applied; ``ValueError`` names a bad field."""
        if not isinstance(changes, dict):
            raise ValueError("faults must be a JSON object")
        names = {field.name for field in fields(self)}
        values: dict[str, float] = {}
        for name, value in changes.items():
            if name not in names:
                raise ValueError(f"unknown fault {name!r}; known: {', '.join(sorted(names))}")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number")
            if name == "latency_ms" and value < 0:
                raise ValueError("latency_ms must be >= 0")
            if name != "latency_ms" and not 0 <= value <= 1:
                raise ValueError(f"{name} must be between 0 and 1")
            values[name] = float(value)
        return replace(self, **values)


def _exit_now() -> None:
    os._exit(CRASH_EXIT_CODE)


class ProviderServer(ThreadingHTTPServer):
    """The HTTP server and its state: ledger, faults, fault dice, and the crash action.

    ``crash`` is ``os._exit`` in a real process; an in-process test passes a function that
    returns, and the request's connection is then dropped without an answer instead.
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # the stdlib's 5 resets connections when many workers start at once

    def __init__(
        self,
        address: tuple[str, int],
        ledger: Ledger,
        faults: Faults | None = None,
        *,
        seed: int | None = None,
        hang_seconds: float = 30.0,
        crash: Callable[[], None] = _exit_now,
    ) -> None:
        super().__init__(address, _Handler)
        self.ledger = ledger
        self.hang_seconds = hang_seconds
        self.crash = crash
        self.stopping = threading.Event()
        self._faults = faults or Faults()
        self._random = random.Random(seed)
        self._state_lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def faults(self) -> Faults:
        with self._state_lock:
            return self._faults

    def update_faults(self, changes: object) -> Faults:
        with self._state_lock:
            self._faults = self._faults.updated(changes)
            return self._faults

    def roll(self, rate: float) -> bool:
        with self._state_lock:
            return rate > 0 and self._random.random() < rate

    def jitter(self) -> float:
        with self._state_lock:
            return self._random.uniform(1.0, 1.1)

    def close(self) -> None:
        """Stop serving (hung requests wake up), close the socket and the ledger."""
        self.stopping.set()
        self.shutdown()
        self.server_close()
        self.ledger.close()


def serve_in_thread(
    ledger_path: Path,
    *,
    port: int = 0,
    faults: Faults | None = None,
    seed: int | None = None,
    hang_seconds: float = 30.0,
    crash: Callable[[], None] = _exit_now,
) -> ProviderServer:
    """The provider in a daemon thread of this process (unit tests); ``close()`` stops it."""
    server = ProviderServer(
        ("127.0.0.1", port),
        Ledger(ledger_path),
        faults,
        seed=seed,
        hang_seconds=hang_seconds,
        crash=crash,
    )
    threading.Thread(
        target=server.serve_forever, args=(0.05,), name="payment-provider", daemon=True
    ).start()
    return server


class _BadRequest(Exception):
    """The request is malformed; the message goes back to the client."""


def _charge_json(charge: ChargeRecord) -> dict[str, Any]:
    return {
        "id": charge.charge_id,
        "key": charge.key,
        "amount": charge.amount,
        "currency": charge.currency,
        "description": charge.description,
        "status": charge.status,
        "decline_code": charge.decline_code,
    }


def _error(kind: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message, **extra}}


_Answer = tuple[HTTPStatus, Any, dict[str, str]]
_Route = Callable[[bytes], _Answer | None]


class _Handler(BaseHTTPRequestHandler):
    server: ProviderServer
    protocol_version = "HTTP/1.1"  # keep-alive: the client's connection pool is reused
    # Headers and body go out in two writes: with Nagle's algorithm and delayed ACKs every
    # answer waited 40 ms (measured: ~50 ms per charge, ~2 ms without).
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._dispatch(
            {
                "/health": lambda _body: (HTTPStatus.OK, {"status": "ok"}, {}),
                "/_ledger": lambda _body: (HTTPStatus.OK, self.server.ledger.summary(), {}),
                "/_ledger/charges": self._list_charges,
                "/_control/faults": lambda _body: (HTTPStatus.OK, asdict(self.server.faults), {}),
            }
        )

    def do_POST(self) -> None:
        self._dispatch(
            {
                "/v1/charges": self._charge,
                "/v1/refunds": self._refund,
                "/_control/faults": self._set_faults,
            }
        )

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("provider.http", line=format % args)

    def _dispatch(self, routes: dict[str, _Route]) -> None:
        body = self._read_body()
        if body is None:
            return
        path = self.path.split("?", 1)[0]
        route = routes.get(path)
        if route is None:
            self._send(HTTPStatus.NOT_FOUND, _error("invalid_request_error", f"no route {path}"))
            return
        try:
            if path.startswith("/v1/") and not self._survive_faults(path):
                return
            answer = route(body)
        except _BadRequest as exc:
            self._send(HTTPStatus.BAD_REQUEST, _error("invalid_request_error", str(exc)))
            return
        except Exception:
            log.exception("provider.internal_error", path=path)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, _error("api_error", "internal error"))
            return
        if answer is None:  # a simulated crash: no answer, the connection just closes
            self.close_connection = True
            return
        status, payload, headers = answer
        self._send(status, payload, headers)

    def _read_body(self) -> bytes | None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            self.close_connection = True
            self._send(
                HTTPStatus.BAD_REQUEST,
                _error("invalid_request_error", f"Content-Length must be 0..{MAX_BODY_BYTES}"),
            )
            return None
        return self.rfile.read(length) if length else b""

    def _survive_faults(self, path: str) -> bool:
        """Apply latency, injected errors and hangs; False once a fault has answered."""
        server = self.server
        faults = server.faults
        if faults.latency_ms:
            time.sleep(faults.latency_ms * server.jitter() / 1000)
        if server.roll(faults.error_rate):
            status = (
                HTTPStatus.SERVICE_UNAVAILABLE
                if server.roll(0.5)
                else HTTPStatus.INTERNAL_SERVER_ERROR
            )
            log.info("provider.fault_error", path=path, status=int(status))
            self._send(status, _error("api_error", "injected fault: error_rate"))
            return False
        if server.roll(faults.timeout_rate):
            log.info("provider.fault_timeout", path=path, hang_seconds=server.hang_seconds)
            server.stopping.wait(server.hang_seconds)
            self.close_connection = True
            self._send(HTTPStatus.GATEWAY_TIMEOUT, _error("api_error", "injected fault: timeout"))
            return False
        return True

    def _charge(self, body: bytes) -> _Answer | None:
        key = self._idempotency_key()
        request = _json_object(body)
        amount = request.get("amount")
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise _BadRequest("amount must be a positive integer (cents)")
        currency = request.get("currency")
        if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
            raise _BadRequest("currency must be a three-letter lowercase code, like 'usd'")
        description = request.get("description", "")
        if not isinstance(description, str):
            raise _BadRequest("description must be a string")
        faults = self.server.faults
        outcome, charge = self.server.ledger.charge(
            key=key,
            amount=amount,
            currency=currency,
            description=description,
            declined=declines(key, faults.decline_rate),
        )
        if outcome is ChargeOutcome.VOIDED:
            log.info("provider.charge_refused_voided", key=key)
            return (
                HTTPStatus.PAYMENT_REQUIRED,
                _error(
                    "card_error",
                    "the charge was voided before it was made",
                    code="charge_voided",
                ),
                {},
            )
        assert charge is not None
        if outcome is ChargeOutcome.CONFLICT:
            log.warning("provider.idempotency_conflict", key=key, amount=amount, currency=currency)
            return (
                HTTPStatus.CONFLICT,
                _error(
                    "idempotency_error",
                    f"key {key!r} was used with amount {charge.amount} {charge.currency},"
                    f" not {amount} {currency}",
                ),
                {},
            )
        replayed = outcome is ChargeOutcome.REPLAYED
        log.info(
            "provider.charge",
            key=key,
            charge_id=charge.charge_id,
            status=charge.status,
            amount=amount,
            replayed=replayed,
        )
        if outcome is ChargeOutcome.CREATED and self.server.roll(faults.crash_after_charge_rate):
            log.warning("provider.crash_after_charge", key=key, charge_id=charge.charge_id)
            sys.stdout.flush()
            self.server.crash()
            return None
        headers = {"Idempotent-Replayed": "true"} if replayed else {}
        return HTTPStatus.OK, _charge_json(charge), headers

    def _refund(self, body: bytes) -> _Answer:
        key = _json_object(body).get("key")
        if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
            raise _BadRequest(f"key must be a charge's idempotency key (1..{MAX_KEY_LENGTH})")
        result = self.server.ledger.refund(key)
        charge = result.charge
        log.info("provider.refund", key=key, status=str(result.outcome), replayed=result.replayed)
        payload = {
            "id": charge.refund_id if charge and result.outcome is RefundOutcome.REFUNDED else None,
            "key": key,
            "status": str(result.outcome),
            "charge_id": charge.charge_id if charge else None,
            "amount": charge.amount if charge else None,
        }
        headers = {"Idempotent-Replayed": "true"} if result.replayed else {}
        return HTTPStatus.OK, payload, headers

    def _set_faults(self, body: bytes) -> _Answer:
        try:
            faults = self.server.update_faults(_json_object(body))
        except ValueError as exc:
            raise _BadRequest(str(exc)) from exc
        log.info("provider.faults", **asdict(faults))
        return HTTPStatus.OK, asdict(faults), {}

    def _list_charges(self, _body: bytes) -> _Answer:
        ledger = self.server.ledger
        payload = {
            "charges": [charge.as_json() for charge in ledger.charges()],
            "voided_keys": ledger.voided_keys(),
        }
        return HTTPStatus.OK, payload, {}

    def _idempotency_key(self) -> str:
        key = self.headers.get("Idempotency-Key")
        if not key:
            raise _BadRequest("the Idempotency-Key header is required")
        if len(key) > MAX_KEY_LENGTH:
            raise _BadRequest(f"the Idempotency-Key header is longer than {MAX_KEY_LENGTH}")
        return key

    def _send(
        self, status: HTTPStatus, payload: Any, headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        try:
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (a hang outlasted its timeout): nobody is left to answer.
            self.close_connection = True


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body or b"null")
    except ValueError as exc:
        raise _BadRequest(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise _BadRequest("the body must be a JSON object")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m payments.provider", description=__doc__ and __doc__.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument("--ledger", type=Path, required=True, help="the SQLite ledger file")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every /v1 call")
    parser.add_argument("--decline-rate", type=float, default=0.0, help="share of keys declined")
    parser.add_argument("--error-rate", type=float, default=0.0, help="answer 500/503 at once")
    parser.add_argument("--timeout-rate", type=float, default=0.0, help="hang, record nothing")
    parser.add_argument(
        "--crash-after-charge-rate", type=float, default=0.0, help="commit a charge, then exit"
    )
    parser.add_argument("--hang-seconds", type=float, default=30.0, help="how long a hang lasts")
    parser.add_argument("--seed", type=int, help="seed of the fault dice")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level.upper())
    try:
        faults = Faults().updated(
            {
                "latency_ms": args.latency_ms,
                "decline_rate": args.decline_rate,
                "error_rate": args.error_rate,
                "timeout_rate": args.timeout_rate,
                "crash_after_charge_rate": args.crash_after_charge_rate,
            }
        )
    except ValueError as exc:
        print(f"python -m payments.provider: {exc}", file=sys.stderr)
        return 2
    args.ledger.parent.mkdir(parents=True, exist_ok=True)
    server = ProviderServer(
        (args.host, args.port),
        Ledger(args.ledger),
        faults,
        seed=args.seed,
        hang_seconds=args.hang_seconds,
    )

    def request_stop(signum: int, _frame: object) -> None:
        log.info("provider.stopping", signal=signal.Signals(signum).name)
        server.stopping.set()
        # shutdown() waits for serve_forever, which runs on this (the main) thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    log.info(
        "provider.ready",
        url=f"http://{args.host}:{server.port}",
        port=server.port,
        ledger=str(args.ledger),
        **asdict(faults),
    )
    try:
        server.serve_forever()
        log.info("provider.stopped", **server.ledger.summary())
    finally:
        server.server_close()
        server.ledger.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
