"""DynamoDB and DynamoDB Streams emulator: moto's server, one request at a time, with counters.

Why not plain ``moto_server``: moto's UpdateItem evaluates the condition expression and then
applies the update without a lock, while its server handles requests on many threads, so two
conditional decrements can both pass the same check. DynamoDB makes each conditional write
atomic, and the flash sale's "never oversell" invariant relies on it, so this wrapper runs
every request alone behind one lock (moto is CPU-bound under the GIL: little is lost).

It also makes moto's TransactWriteItems cost proportional to the transaction rather than to
the table (see ``moto_transactions``), and counts requests per operation (the ``X-Amz-Target``
header) so benchmarks can report exact DynamoDB call counts, writes also by the tables they
touch (a saga's commit and a relay's lease renewal are both writes; only this tells them apart):

- ``GET  /_flashsale/stats``        ``{"calls": {"TransactWriteItems": n, ...}, "streams": {...},
  "writes": {"UpdateItem outbox-table": n, "TransactWriteItems orders-table+sagas-table": n}}``
- ``POST /_flashsale/stats/reset``  the same document, then every counter back to zero
- ``GET  /_flashsale/health``       ``{"status": "ok", "pid": ...}`` once moto is loaded

Run: ``python -m infra.local.dynamodb_server --port 4567`` (loopback only).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

DYNAMODB_TARGET_PREFIX = "DynamoDB_20120810."
STREAMS_TARGET_PREFIX = "DynamoDBStreams_20120810."
ADMIN_PREFIX = "/_flashsale/"
WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})

# What moto needs to route a request without a real signature: service and region come from
# the credential scope; moto does not verify signatures.
_WARMUP_AUTH = (
    "AWS4-HMAC-SHA256 Credential=test/20200101/us-east-1/dynamodb/aws4_request, "
    "SignedHeaders=host, Signature=0"
)


class RequestCounter:
    """Requests per operation, split by API; safe to use from many threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: Counter[str] = Counter()
        self._streams: Counter[str] = Counter()
        self._other: Counter[str] = Counter()
        self._writes: Counter[str] = Counter()

    def count(self, environ: WSGIEnvironment) -> None:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        operation = target.removeprefix(DYNAMODB_TARGET_PREFIX)
        tables = _tables_written(environ) if operation in WRITES else ""
        with self._lock:
            if tables:
                self._writes[f"{operation} {tables}"] += 1
            if target.startswith(DYNAMODB_TARGET_PREFIX):
                self._calls[operation] += 1
            elif target.startswith(STREAMS_TARGET_PREFIX):
                self._streams[target.removeprefix(STREAMS_TARGET_PREFIX)] += 1
            else:
                self._other[target or f"{environ.get('REQUEST_METHOD')} {_path(environ)}"] += 1

    def snapshot(self, *, reset: bool = False) -> dict[str, Any]:
        with self._lock:
            doc = {
                "calls": dict(sorted(self._calls.items())),
                "streams": dict(sorted(self._streams.items())),
                "other": dict(sorted(self._other.items())),
                "writes": dict(sorted(self._writes.items())),
                "total": sum(self._calls.values()),
            }
            if reset:
                for counter in (self._calls, self._streams, self._other, self._writes):
                    counter.clear()
        return doc


def _tables_written(environ: WSGIEnvironment) -> str:
    """The tables a write names, joined by ``+``; the body is put back for moto to read."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(body)
    try:
        request = json.loads(body)
    except ValueError:
        return "?"
    if not isinstance(request, dict):
        return "?"
    names = {str(request["TableName"])} if "TableName" in request else set()
    names.update(str(name) for name in request.get("RequestItems") or {})
    for entry in request.get("TransactItems") or []:
        names.update(str(part.get("TableName")) for part in entry.values())
    return "+".join(sorted(names)) or "?"


def _path(environ: WSGIEnvironment) -> str:
    return str(environ.get("PATH_INFO", "") or "/")


class SerializedApp:
    """WSGI middleware: count each request, then run it alone on the wrapped app."""

    def __init__(self, app: WSGIApplication) -> None:
        self._app = app
        self._lock = threading.Lock()
        self.counter = RequestCounter()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if _path(environ).startswith(ADMIN_PREFIX):
            return self._admin(environ, start_response)
        self.counter.count(environ)
        with self._lock:
            result = self._app(environ, start_response)
            try:
                # Produce the whole body under the lock: a lazy body could still be reading
                # moto's state while the next request changes it.
                body = b"".join(result)
            finally:
                close: Callable[[], None] | None = getattr(result, "close", None)
                if close is not None:
                    close()
        return [body]

    def _admin(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method, path = environ.get("REQUEST_METHOD", "GET"), _path(environ)
        if path == "/_flashsale/health" and method == "GET":
            return _json(start_response, "200 OK", {"status": "ok", "pid": os.getpid()})
        if path == "/_flashsale/stats" and method == "GET":
            return _json(start_response, "200 OK", self.counter.snapshot())
        if path == "/_flashsale/stats/reset" and method == "POST":
            return _json(start_response, "200 OK", self.counter.snapshot(reset=True))
        return _json(start_response, "404 Not Found", {"error": f"no route {method} {path}"})


def _json(start_response: StartResponse, status: str, doc: dict[str, Any]) -> list[bytes]:
    body = json.dumps(doc).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def build_app() -> SerializedApp:
    """moto's dispatcher (every service; DynamoDB Streams is routed by its target prefix),
    with TransactWriteItems made independent of table size (``moto_transactions``)."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    from . import moto_transactions

    moto_transactions.install()
    return SerializedApp(DomainDispatcherApplication(create_backend_app))


def warm_up(app: SerializedApp) -> None:
    """Load moto's DynamoDB and Streams backends now, so health means ready (and not counted)."""
    from werkzeug.test import Client

    client = Client(app._app)
    for target in (f"{DYNAMODB_TARGET_PREFIX}ListTables", f"{STREAMS_TARGET_PREFIX}ListStreams"):
        response = client.post(
            "/",
            data="{}",
            headers={
                "X-Amz-Target": target,
                "Content-Type": "application/x-amz-json-1.0",
                "Authorization": _WARMUP_AUTH,
            },
        )
        if response.status_code != 200:
            raise RuntimeError(f"moto warm-up {target} failed: {response.status_code}")


def serve(host: str, port: int, *, verbose: bool = False) -> None:
    """Serve until SIGTERM/SIGINT; many connections, one request in moto at a time."""
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import make_server

    if not verbose:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = build_app()
    warm_up(app)
    server = make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"DynamoDB emulator (moto, serialized) on http://{host}:{port} pid {os.getpid()}")
    print("Ready.", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=4567)
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    serve(args.host, args.port, verbose=args.verbose)


if __name__ == "__main__":
    main()
