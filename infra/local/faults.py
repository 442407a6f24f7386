"""A fault-injecting HTTP proxy in front of an AWS emulator (LocalStack's SQS, moto's DynamoDB).

Why: the failure scenarios break the *network* between a running worker and AWS — 5xx answers,
throttling, timeouts, slow responses — without touching application code. A client is pointed at
the proxy only through the standard SDK variables (``AWS_ENDPOINT_URL_SQS``,
``AWS_ENDPOINT_URL_DYNAMODB``); the proxy forwards everything else to the emulator unchanged
(the ``Host`` header included, so a request's signature stays valid).

Rules are matched on the operation: the ``X-Amz-Target`` header of the JSON protocols
(``AmazonSQS.ReceiveMessage``, ``DynamoDB_20120810.TransactWriteItems``; shell-style patterns
such as ``AmazonSQS.*`` work), or the ``Action`` of a query-protocol form. The first rule that
matches, still has budget (``max_count``) and wins its draw (``rate``) decides the request.

Fault kinds:

- ``error``: HTTP 500 (or ``status``, e.g. 503) with the service's AWS error body;
- ``throttle``: HTTP 400 ``RequestThrottled`` (SQS) or ``ProvisionedThroughputExceededException``
  (DynamoDB; ``code="ThrottlingException"`` for the other one);
- ``timeout``: hold the connection ``hold_seconds`` (default longer than botocore's 60 s read
  timeout), then close it without an answer. Shorter than the client's read timeout, the
  client sees a dropped connection instead;
- ``latency``: wait ``delay_seconds``, then forward.

``phase="response"`` makes ``error``/``timeout`` happen *after* the emulator processed the
request: the work is done, the answer is lost — what a client retry must survive.

Control (JSON): ``POST /_faults`` ``{"rules": [...], "seed": 7}`` replaces the rules and resets
their budgets; ``GET /_faults`` lists them; ``DELETE /_faults`` removes them; ``GET
/_faults/stats`` counts requests per operation and injected faults per kind and operation;
``DELETE /_faults/stats`` resets the counts.

Python: ``with FaultProxy("http://127.0.0.1:4566") as proxy: proxy.set_rules([...])``.
CLI: ``python -m infra.local.faults --target http://127.0.0.1:4566 --port 4570``.

A threaded stdlib server, no dependency: one thread per client connection (keep-alive), each
with its own keep-alive connection to the emulator; a held connection costs only its thread.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import http.client
import json
import random
import signal
import socket
import sys
import threading
import uuid
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import parse_qs, urlsplit

import structlog

log = structlog.get_logger(__name__)

FaultKind = Literal["error", "throttle", "timeout", "latency"]
FaultPhase = Literal["request", "response"]
KINDS: tuple[FaultKind, ...] = ("error", "throttle", "timeout", "latency")
CONTROL_PATH = "/_faults"
# Longer than botocore's default read timeout (60 s) and pycurl's in kombu (20 s).
DEFAULT_HOLD_SECONDS = 65.0
# Above SQS's longest long poll (20 s): a forwarded ReceiveMessage may legitimately wait.
UPSTREAM_TIMEOUT_SECONDS = 90.0
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "expect",
    "content-length",
}
_SQS_PREFIX = "AmazonSQS."
_DYNAMODB_PREFIXES = ("DynamoDB_20120810.", "DynamoDBStreams_20120810.")
_DYNAMODB_NS = "com.amazonaws.dynamodb.v20120810#"
_DYNAMODB_CODES = {
    500: "InternalServerError",
    503: "ServiceUnavailable",
    "ThrottlingException": "com.amazon.coral.availability#ThrottlingException",
}


@dataclass(frozen=True)
class FaultRule:
    """One way to break requests: which ones (``operation``), how often, how many, how."""

    kind: FaultKind
    rate: float = 1.0
    operation: str | tuple[str, ...] | None = None
    max_count: int | None = None
    status: int | None = None  # error: 500 (default) or another 5xx
    code: str | None = None  # error/throttle: override the AWS error code
    delay_seconds: float = 1.0  # latency
    hold_seconds: float = DEFAULT_HOLD_SECONDS  # timeout
    phase: FaultPhase = "request"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate must be within 0..1, got {self.rate}")
        if self.max_count is not None and self.max_count < 0:
            raise ValueError(f"max_count must be >= 0, got {self.max_count}")
        if self.status is not None and not 500 <= self.status <= 599:
            raise ValueError(f"status must be a 5xx, got {self.status}")
        if self.delay_seconds < 0 or self.hold_seconds < 0:
            raise ValueError("delay_seconds and hold_seconds must be >= 0")
        if self.phase not in ("request", "response"):
            raise ValueError(f"phase must be 'request' or 'response', got {self.phase!r}")
        if isinstance(self.operation, list):  # from JSON
            object.__setattr__(self, "operation", tuple(self.operation))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultRule:
        """A rule from its JSON form; unknown fields are an error, not silently ignored."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown rule fields: {', '.join(sorted(unknown))}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if isinstance(self.operation, tuple):
            data["operation"] = list(self.operation)
        return data

    def matches(self, operation: str) -> bool:
        if self.operation is None:
            return True
        patterns = (self.operation,) if isinstance(self.operation, str) else self.operation
        return any(fnmatch.fnmatchcase(operation, pattern) for pattern in patterns)


def as_rule(rule: FaultRule | Mapping[str, Any]) -> FaultRule:
    return rule if isinstance(rule, FaultRule) else FaultRule.from_dict(rule)


@dataclass
class FaultStats:
    """What went through the proxy: requests per operation, faults per kind and operation."""

    requests: dict[str, int] = field(default_factory=dict)
    injected: dict[str, dict[str, int]] = field(default_factory=dict)

    def count(self, kind: str | None = None, operation: str | None = None) -> int:
        """Injected faults, of one kind and/or one operation (``None``: all)."""
        return sum(
            n
            for k, per_op in self.injected.items()
            if kind is None or k == kind
            for op, n in per_op.items()
            if operation is None or op == operation
        )

    def to_dict(self) -> dict[str, Any]:
        return {"requests": dict(self.requests), "injected": self.injected}


class FaultState:
    """The rules and the counts, shared by every connection thread (one lock)."""

    def __init__(self, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._fired: list[int] = []
        self._random = random.Random(seed)
        self._requests: Counter[str] = Counter()
        self._injected: dict[str, Counter[str]] = {}

    def set_rules(self, rules: Iterable[FaultRule | Mapping[str, Any]], seed: int | None) -> None:
        parsed = [as_rule(rule) for rule in rules]
        with self._lock:
            self._rules, self._fired = parsed, [0] * len(parsed)
            if seed is not None:
                self._random.seed(seed)
        log.info("faults.rules_set", rules=[rule.to_dict() for rule in parsed])

    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def pick(self, operation: str) -> FaultRule | None:
        """Count the request; the rule that breaks it, if any (counted as injected)."""
        with self._lock:
            self._requests[operation] += 1
            for index, rule in enumerate(self._rules):
                if not rule.matches(operation):
                    continue
                if rule.max_count is not None and self._fired[index] >= rule.max_count:
                    continue
                if rule.rate < 1.0 and self._random.random() >= rule.rate:
                    continue
                self._fired[index] += 1
                self._injected.setdefault(rule.kind, Counter())[operation] += 1
                return rule
            return None

    def stats(self) -> FaultStats:
        with self._lock:
            return FaultStats(
                dict(self._requests),
                {kind: dict(per_op) for kind, per_op in self._injected.items()},
            )

    def reset_stats(self) -> None:
        with self._lock:
            self._requests.clear()
            self._injected.clear()


def operation_of(headers: Mapping[str, str] | Message, body: bytes) -> str:
    """The AWS operation of a request: ``X-Amz-Target``, else a query form's ``Action``."""
    target = headers.get("X-Amz-Target")
    if target:
        return target
    if "x-www-form-urlencoded" in (headers.get("Content-Type") or ""):
        actions = parse_qs(body.decode("utf-8", "replace")).get("Action")
        if actions:
            return actions[0]
    return "unknown"


def error_response(
    operation: str, kind: FaultKind, rule: FaultRule, query_protocol: bool
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the AWS error the service would send for this fault."""
    request_id = str(uuid.uuid4())
    throttle = kind == "throttle"
    status = 400 if throttle else (rule.status or 500)
    if operation.startswith(_DYNAMODB_PREFIXES):
        if throttle:
            code = rule.code or "ProvisionedThroughputExceededException"
            type_ = _DYNAMODB_CODES.get(code, f"{_DYNAMODB_NS}{code}")
            message = "Rate of requests exceeds the allowed throughput (injected)."
        else:
            code = rule.code or str(_DYNAMODB_CODES.get(status, "InternalServerError"))
            type_ = f"{_DYNAMODB_NS}{code}"
            message = "Internal server error (injected)."
        body = json.dumps({"__type": type_, "message": message}).encode()
        headers = {
            "Content-Type": "application/x-amz-json-1.0",
            "x-amzn-RequestId": request_id,
            # botocore checks it on DynamoDB responses when present, as DynamoDB sends it.
            "x-amz-crc32": str(zlib.crc32(body)),
        }
        return status, headers, body
    if throttle:
        code, fault_type = rule.code or "RequestThrottled", "Sender"
        message = "Request is throttled (injected)."
    else:
        code = rule.code or ("ServiceUnavailable" if status == 503 else "InternalError")
        fault_type = "Receiver"
        message = "We encountered an internal error. Please try again (injected)."
    if query_protocol:
        body = (
            f"<ErrorResponse><Error><Type>{fault_type}</Type><Code>{code}</Code>"
            f"<Message>{message}</Message><Detail/></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
        return status, {"Content-Type": "text/xml", "x-amzn-RequestId": request_id}, body
    body = json.dumps({"__type": f"com.amazonaws.sqs#{code}", "message": message}).encode()
    headers = {
        "Content-Type": "application/x-amz-json-1.0",
        "x-amzn-RequestId": request_id,
        # SQS's JSON protocol names the error code here (the query-compatible code).
        "x-amzn-query-error": f"{code};{fault_type}",
    }
    return status, headers, body


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], target: str, state: FaultState) -> None:
        parts = urlsplit(target)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"target must be an http:// URL, got {target!r}")
        self.target_host = parts.hostname
        self.target_port = parts.port or 80
        self.state = state
        self.stopping = threading.Event()
        self._clients: set[socket.socket] = set()
        self._clients_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._clients_lock:
            self._clients.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._clients_lock:
            self._clients.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (its own timeout) or a proxy being stopped is expected: one
        line, not socketserver's traceback on stderr."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError) or self.stopping.is_set():
            log.debug("faults.client_gone", client=str(client_address), error=repr(error))
            return
        log.error("faults.handler_failed", client=str(client_address), exc_info=True)

    def drop_clients(self) -> None:
        """Close every client connection, so no keep-alive or held thread outlives the proxy."""
        with self._clients_lock:
            clients = list(self._clients)
        for sock in clients:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer
    _upstream: http.client.HTTPConnection | None = None

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: one access-log line per request would swamp the test output."""

    def finish(self) -> None:
        if self._upstream is not None:
            self._upstream.close()
        super().finish()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        body = self._read_body()
        if self.path == CONTROL_PATH or self.path.startswith(CONTROL_PATH + "/"):
            self._control(body)
            return
        state = self.server.state
        operation = operation_of(self.headers, body)
        rule = state.pick(operation)
        if rule is None:
            self._forward_and_answer(body)
            return
        log.debug("faults.injected", kind=rule.kind, operation=operation, phase=rule.phase)
        if rule.kind == "latency":
            if self.server.stopping.wait(rule.delay_seconds):
                self._drop()
                return
            self._forward_and_answer(body)
            return
        if rule.phase == "response" and self._forward(body) is None:
            return
        if rule.kind == "timeout":
            self.server.stopping.wait(rule.hold_seconds)
            self._drop()
            return
        query = "x-www-form-urlencoded" in self.headers.get("Content-Type", "")
        self._answer(*error_response(operation, rule.kind, rule, query))

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes] | None:
        """The emulator's answer; on a network failure, a 502 has been sent and ``None`` is
        returned. A reused keep-alive connection the emulator closed is retried once."""
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        for attempt in (1, 2):
            reused = self._upstream is not None
            if self._upstream is None:
                self._upstream = http.client.HTTPConnection(
                    self.server.target_host,
                    self.server.target_port,
                    timeout=UPSTREAM_TIMEOUT_SECONDS,
                )
            try:
                self._upstream.request(self.command, self.path, body=body, headers=headers)
                response = self._upstream.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self._upstream.close()
                self._upstream = None
                if reused and attempt == 1:
                    continue
                self._bad_gateway(exc)
                return None
            except (OSError, http.client.HTTPException) as exc:
                self._upstream.close()
                self._upstream = None
                self._bad_gateway(exc)
                return None
            if response.will_close:
                self._upstream.close()
                self._upstream = None
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
            return response.status, kept, data
        raise AssertionError("unreachable")

    def _forward_and_answer(self, body: bytes) -> None:
        answer = self._forward(body)
        if answer is not None:
            status, headers, data = answer
            self._answer(status, headers, data)

    def _bad_gateway(self, exc: Exception) -> None:
        log.warning("faults.upstream_failed", error=repr(exc), path=self.path)
        message = json.dumps({"__type": "BadGateway", "message": repr(exc)}).encode()
        self._answer(502, {"Content-Type": "application/json"}, message)

    def _answer(
        self, status: int, headers: Mapping[str, str] | Sequence[tuple[str, str]], body: bytes
    ) -> None:
        items = headers.items() if isinstance(headers, Mapping) else headers
        self.send_response_only(status)
        for key, value in items:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def _drop(self) -> None:
        """Close the client's connection without an answer (what a client sees as a timeout)."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _control(self, body: bytes) -> None:
        state = self.server.state
        try:
            if self.path == CONTROL_PATH and self.command == "POST":
                document = json.loads(body or b"{}")
                state.set_rules(document.get("rules", []), document.get("seed"))
            elif self.path == CONTROL_PATH and self.command == "DELETE":
                state.set_rules([], None)
            elif self.path == f"{CONTROL_PATH}/stats" and self.command == "GET":
                self._json(200, state.stats().to_dict())
                return
            elif self.path == f"{CONTROL_PATH}/stats" and self.command == "DELETE":
                state.reset_stats()
            elif not (self.path == CONTROL_PATH and self.command == "GET"):
                self._json(404, {"error": f"no route {self.command} {self.path}"})
                return
        except (ValueError, TypeError, AttributeError) as exc:
            self._json(400, {"error": str(exc)})
            return
        self._json(200, {"rules": [rule.to_dict() for rule in state.rules()]})

    def _json(self, status: int, document: Any) -> None:
        self._answer(status, {"Content-Type": "application/json"}, json.dumps(document).encode())


class FaultProxy:
    """A fault-injecting proxy in front of ``target``, served from a thread of this process.

    ``with FaultProxy(localstack_url) as proxy:`` starts it on a free loopback port
    (``proxy.url``), and stops it — dropping held connections — at the end.
    """

    def __init__(
        self, target: str, *, host: str = "127.0.0.1", port: int = 0, seed: int | None = None
    ) -> None:
        self.target = target
        self.state = FaultState(seed)
        self._address = (host, port)
        self._server: _ProxyServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the proxy is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("the proxy is already running")
        self._server = _ProxyServer(self._address, self.target, self.state)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"fault-proxy-{self._server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        log.info("faults.started", url=self.url, target=self.target)
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.stopping.set()
        server.shutdown()
        server.drop_clients()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        log.info("faults.stopped", target=self.target)

    def set_rules(
        self, rules: Iterable[FaultRule | Mapping[str, Any]], *, seed: int | None = None
    ) -> None:
        """Replace the rules (their ``max_count`` budgets start again)."""
        self.state.set_rules(rules, seed)

    def clear(self) -> None:
        self.state.set_rules([], None)

    def stats(self) -> FaultStats:
        return self.state.stats()

    def reset_stats(self) -> None:
        self.state.reset_stats()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m infra.local.faults",
        description="A fault-injecting proxy in front of an AWS emulator; rules via POST /_faults.",
    )
    parser.add_argument("--target", required=True, help="the emulator, e.g. http://127.0.0.1:4566")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: a free one)")
    parser.add_argument("--rules", default=None, help="initial rules: a JSON list, or @file")
    parser.add_argument("--seed", type=int, default=None, help="seed for the rules' draws")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    proxy = FaultProxy(args.target, host=args.host, port=args.port, seed=args.seed)
    if args.rules:
        text = args.rules
        if text.startswith("@"):
            with open(text[1:], encoding="utf-8") as handle:
                text = handle.read()
        proxy.set_rules(json.loads(text))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with proxy:
        print(f"fault proxy {proxy.url} -> {args.target}", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
