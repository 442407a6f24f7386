"""Entry point run by *LocalStack's* virtualenv: fixes, counters, then ``localstack.runtime.main``.

This file is executed as a script by the interpreter in ``.stack/localstack-venv`` (with
``python -P`` so this directory is not put on ``sys.path``); it imports nothing from the
project, only the standard library, LocalStack and LocalStack's own dependencies.

Fixes for LocalStack 4.9.2 run on the host, all seen on this machine:

1. The gateway's TLS certificate. LocalStack tries to download one (no internet here) and then
   generates a self-signed one with ``OpenSSL.crypto.X509.add_extensions``, which pyOpenSSL 26
   (the version its own dependency set resolves to) no longer has: startup dies with
   ``'X509' object has no attribute 'add_extensions'``. We write the certificate ourselves with
   ``cryptography`` to ``CUSTOM_SSL_CERT_PATH``, which LocalStack then reuses.
2. Loopback only. The default (twisted) gateway ignores the host of ``GATEWAY_LISTEN`` for
   IPv4 and listens on ``0.0.0.0`` (``localstack/runtime/server/twisted.py``: "TODO: interface
   = host?"). An emulator that accepts any credentials must not be reachable from the network,
   so the gateway's TCP4 endpoints are given the configured host as their interface.
3. Memory. Without a cached service catalog, the first request that needs it makes LocalStack
   load every botocore service spec: the emulator then idles at ~550 MB instead of ~190 MB
   (Python keeps the freed arenas). The catalog is built once per LocalStack virtualenv, in a
   short-lived child process, and copied to where LocalStack looks first (``static_libs``).

And one addition: exact request counters, as the DynamoDB emulator keeps, so benchmarks
(``bench/stats.py``) count SQS calls server-side, from every process (kombu's pycurl client in
the Celery workers included). A handler in LocalStack's gateway chain counts each request once
its ``service.Operation`` is parsed (before the provider runs, so a refused call counts too);
health checks and other ``/_localstack``/``/_flashsale`` routes are answered before that point
and are not counted (SQS's query API, also served before parsing, is counted where it is
served). Served on the gateway's port:

- ``GET  /_flashsale/stats``        ``{"calls": {"SendMessageBatch": n, ...}, "other":
  {"sns.Publish": n, ...}, "internal": {"cloudwatch.PutMetricData": n, ...}, "total": n}``:
  ``calls`` is SQS only (the shape ``bench/stats.py`` reads), ``other`` every other service,
  ``internal`` LocalStack's calls to itself (SQS's CloudWatch metrics, SNS deliveries to SQS),
  kept apart so they never inflate the client counts; ``total`` sums ``calls``; ``uncounted``
  requests the counter failed on (it never fails the request itself).
- ``POST /_flashsale/stats/reset``  the same document, then every counter back to zero.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any


def ensure_certificate(path: Path) -> None:
    """A self-signed certificate and key for localhost/127.0.0.1, one PEM file, if missing."""
    if path.is_file() and path.stat().st_size > 0:
        return
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ) + cert.public_bytes(serialization.Encoding.PEM)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(pem)
    tmp.replace(path)


def bind_gateway_to_listen_host() -> None:
    """Make the twisted gateway listen on GATEWAY_LISTEN's host instead of every interface."""
    from localstack import config
    from localstack.runtime.server import twisted as gateway_server
    from twisted.internet import endpoints

    hosts = {listen.host for listen in config.GATEWAY_LISTEN}
    if len(hosts) != 1:
        raise SystemExit(f"expected one GATEWAY_LISTEN host, got {sorted(hosts)}")
    host = hosts.pop()

    class _Endpoints:
        """``twisted.internet.endpoints`` as the gateway module sees it, TCP4 bound to host."""

        def __getattr__(self, name: str) -> Any:
            return getattr(endpoints, name)

        @staticmethod
        def TCP4ServerEndpoint(  # the name the gateway module calls
            reactor: Any, port: int, backlog: int = 50, interface: str = ""
        ) -> Any:
            return endpoints.TCP4ServerEndpoint(reactor, port, backlog, interface or host)

    gateway_server.endpoints = _Endpoints()  # type: ignore[assignment]


_BUILD_CATALOG = (
    "import sys; from localstack.aws.spec import build_service_index_cache; "
    "build_service_index_cache(sys.argv[1])"
)


def ensure_service_catalog() -> None:
    """Put a prebuilt service catalog index where LocalStack loads it from, if it is missing."""
    from localstack import config
    from localstack.aws.spec import _get_catalog_filename

    name = _get_catalog_filename()
    target = Path(config.dirs.static_libs) / name
    if target.is_file():
        return
    shared = Path(sys.prefix) / "flashsale-cache" / name  # one build per virtualenv
    if not shared.is_file():
        shared.parent.mkdir(parents=True, exist_ok=True)
        tmp = shared.with_name(f".{name}.{os.getpid()}.tmp")
        subprocess.run([sys.executable, "-P", "-c", _BUILD_CATALOG, str(tmp)], check=True)
        tmp.replace(shared)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{name}.{os.getpid()}.tmp")
    shutil.copyfile(shared, tmp)
    tmp.replace(target)


STATS_PATH = "/_flashsale/stats"
COUNTED_SERVICE = "sqs"  # the service counted under "calls"
# botocore's service names for the same API under another protocol spec.
_SERVICE_ALIASES = {"sqs-query": "sqs"}


class RequestCounter:
    """AWS requests per ``service.Operation``; a LocalStack request handler, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: Counter[str] = Counter()  # SQS, by operation
        self._other: Counter[str] = Counter()  # other services, by service.Operation
        self._internal: Counter[str] = Counter()  # LocalStack calling itself
        self._failed = 0  # requests the counter could not count (never expected)

    def __call__(self, _chain: Any, context: Any, _response: Any) -> None:
        """Count one parsed request; runs right after ``parse_service_request``."""
        try:
            if context.service is not None and context.operation is not None:
                name = context.service.service_name
                self.add(name, context.operation.name, internal=context.is_internal_call)
        except Exception:  # never fail a request over a counter
            self._failed += 1

    def add(self, service: str, operation: str, *, internal: bool = False) -> None:
        try:
            service = _SERVICE_ALIASES.get(service, service)
            with self._lock:
                if internal:
                    self._internal[f"{service}.{operation}"] += 1
                elif service == COUNTED_SERVICE:
                    self._calls[operation] += 1
                else:
                    self._other[f"{service}.{operation}"] += 1
        except Exception:  # never fail a request over a counter
            self._failed += 1

    def snapshot(self, *, reset: bool = False) -> dict[str, Any]:
        with self._lock:
            doc = {
                "calls": dict(sorted(self._calls.items())),
                "other": dict(sorted(self._other.items())),
                "internal": dict(sorted(self._internal.items())),
                "total": sum(self._calls.values()),
                "uncounted": self._failed,
            }
            if reset:
                self._calls.clear()
                self._other.clear()
                self._internal.clear()
                self._failed = 0
        return doc


def count_sqs_query_api(counter: RequestCounter) -> None:
    """Count calls to SQS's "query API" (form-encoded, POSTed to a queue URL, as older kombu
    versions send them) as the client's. The edge router serves those before the gateway parses
    anything and re-sends each one to SQS as an internal call, which alone would land under
    "internal"."""
    from localstack.services.sqs import query_api

    operations = frozenset(query_api.service.operation_names)
    try_call_sqs = query_api.try_call_sqs

    def counted(request: Any, region: str) -> Any:
        try:
            action = request.values.get("Action")
            if action in operations:
                counter.add(COUNTED_SERVICE, action)
        except Exception:  # never fail a request over a counter
            pass
        return try_call_sqs(request, region)

    query_api.try_call_sqs = counted  # looked up as a module global by ``handle_request``


def install_request_counter() -> RequestCounter:
    """Count parsed requests in LocalStack's gateway and serve the counts on its edge router."""
    from localstack.aws import handlers
    from localstack.http import Response
    from localstack.services.edge import ROUTER

    counter = RequestCounter()
    # The chain's extension point right after the request is parsed (``localstack.aws.app``).
    handlers.serve_custom_service_request_handlers.append(counter)
    count_sqs_query_api(counter)

    def endpoint(method: str, reset: bool) -> Any:
        def serve(request: Any, **_args: Any) -> Any:
            if request.method != method:
                return Response(f"use {method}", status=405, headers={"Allow": method})
            return counter.snapshot(reset=reset)  # a dict: served as JSON

        return serve

    # Routes of the edge router are served before the AWS request is parsed: never counted.
    ROUTER.add(STATS_PATH, endpoint=endpoint("GET", reset=False))
    ROUTER.add(f"{STATS_PATH}/reset", endpoint=endpoint("POST", reset=True))
    return counter


def main() -> None:
    ensure_certificate(Path(os.environ["CUSTOM_SSL_CERT_PATH"]))
    try:
        ensure_service_catalog()
    except Exception as exc:  # only memory is at stake: LocalStack builds it lazily instead
        print(f"flashsale: could not prebuild LocalStack's service catalog: {exc}", flush=True)
    bind_gateway_to_listen_host()
    try:
        install_request_counter()
    except Exception as exc:  # only benchmarks' call counts are at stake: start anyway
        print(f"flashsale: no request counters in LocalStack: {exc!r}", flush=True)
    from localstack.runtime.main import main as localstack_main

    localstack_main()


if __name__ == "__main__":
    main()
