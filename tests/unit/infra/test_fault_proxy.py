"""The fault-injecting proxy, in-process: forwarding, AWS-shaped faults, budgets, control API.

The emulator behind it is a small recording HTTP server; the clients are real boto3 clients,
so "AWS-shaped" means: botocore parses the injected answer into the error code AWS would send.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError

from infra.local.faults import FaultProxy, FaultRule, main

RECEIVE = "AmazonSQS.ReceiveMessage"
LIST_TABLES = "DynamoDB_20120810.ListTables"


@dataclass
class Upstream:
    """What the emulator stand-in received: (method, path, X-Amz-Target, Host, body)."""

    url: str
    seen: list[tuple[str, str, str, str, bytes]] = field(default_factory=list)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    record = Upstream(url="")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            record.seen.append(
                (
                    self.command,
                    self.path,
                    self.headers.get("X-Amz-Target", ""),
                    self.headers.get("Host", ""),
                    body,
                )
            )
            answer = b"{}"
            self.send_response(200)
            self.send_header("Content-Type", "application/x-amz-json-1.0")
            self.send_header("X-Upstream", "yes")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    record.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield record
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(upstream: Upstream) -> Iterator[FaultProxy]:
    with FaultProxy(upstream.url, seed=1) as proxy:
        yield proxy


def client(service: str, proxy: FaultProxy, **config: Any) -> Any:
    options = {"retries": {"mode": "standard", "total_max_attempts": 1}, **config}
    return boto3.client(
        service,
        endpoint_url=proxy.url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(**options),
    )


def receive(sqs: Any) -> Any:
    return sqs.receive_message(QueueUrl="http://127.0.0.1:1/queue/q", WaitTimeSeconds=0)


def error_of(call: Any) -> tuple[str, int]:
    with pytest.raises(ClientError) as caught:
        call()
    response = caught.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def test_forwarding__passes_requests_and_answers_through_unchanged(
    proxy: FaultProxy, upstream: Upstream
) -> None:
    sqs = client("sqs", proxy)
    response = receive(sqs)

    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-upstream"] == "yes"
    ((method, path, target, host, body),) = upstream.seen
    assert (method, path, target) == ("POST", "/", RECEIVE)
    assert host == proxy.url.removeprefix("http://")  # the signed Host header, kept
    assert json.loads(body)["QueueUrl"] == "http://127.0.0.1:1/queue/q"
    assert proxy.stats().requests == {RECEIVE: 1}
    assert proxy.stats().count() == 0


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (FaultRule("error"), ("InternalError", 500)),
        (FaultRule("error", status=503), ("ServiceUnavailable", 503)),
        (FaultRule("throttle"), ("RequestThrottled", 400)),
    ],
)
def test_sqs_faults__parse_as_the_aws_error_codes(
    proxy: FaultProxy, upstream: Upstream, rule: FaultRule, expected: tuple[str, int]
) -> None:
    proxy.set_rules([rule])
    assert error_of(lambda: receive(client("sqs", proxy))) == expected
    assert upstream.seen == []  # the emulator never saw it
    assert proxy.stats().count(rule.kind, RECEIVE) == 1


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (FaultRule("error"), ("InternalServerError", 500)),
        (FaultRule("throttle"), ("ProvisionedThroughputExceededException", 400)),
        (FaultRule("throttle", code="ThrottlingException"), ("ThrottlingException", 400)),
    ],
)
def test_dynamodb_faults__parse_as_the_aws_error_codes(
    proxy: FaultProxy, rule: FaultRule, expected: tuple[str, int]
) -> None:
    proxy.set_rules([rule])
    dynamodb = client("dynamodb", proxy)
    assert error_of(lambda: dynamodb.list_tables()) == expected
    assert proxy.stats().injected == {rule.kind: {LIST_TABLES: 1}}


def test_sdk_retries__absorb_faults_within_their_budget(
    proxy: FaultProxy, upstream: Upstream
) -> None:
    # Throttling and 5xx are retryable for botocore: two faults, then the third try passes.
    proxy.set_rules([FaultRule("throttle", max_count=1), FaultRule("error", max_count=1)])
    sqs = client("sqs", proxy, retries={"mode": "standard", "total_max_attempts": 3})
    assert receive(sqs)["ResponseMetadata"]["HTTPStatusCode"] == 200
    stats = proxy.stats()
    assert stats.injected == {"throttle": {RECEIVE: 1}, "error": {RECEIVE: 1}}
    assert stats.requests == {RECEIVE: 3}
    assert len(upstream.seen) == 1


def test_rules__match_by_operation_pattern_rate_and_budget(
    proxy: FaultProxy, upstream: Upstream
) -> None:
    proxy.set_rules(
        [
            FaultRule("error", operation="DynamoDB_*", rate=1.0),
            FaultRule("error", operation=("AmazonSQS.SendMessage",), rate=0.0),
            FaultRule("throttle", operation="AmazonSQS.Receive*", max_count=3),
        ]
    )
    sqs = client("sqs", proxy)
    codes = [error_of(lambda: receive(sqs))[0] for _ in range(3)]
    assert codes == ["RequestThrottled"] * 3
    for _ in range(2):
        receive(sqs)  # budget spent: forwarded
    sqs.send_message(QueueUrl="http://127.0.0.1:1/queue/q", MessageBody="x")  # rate 0
    stats = proxy.stats()
    assert stats.injected == {"throttle": {RECEIVE: 3}}
    assert stats.requests == {RECEIVE: 5, "AmazonSQS.SendMessage": 1}
    assert len(upstream.seen) == 3


def test_rate__is_a_seeded_draw_the_same_in_every_run(upstream: Upstream) -> None:
    def injected_pattern() -> list[bool]:
        with FaultProxy(upstream.url) as proxy:
            proxy.set_rules([FaultRule("error", rate=0.5)], seed=42)
            sqs = client("sqs", proxy)
            pattern = []
            for _ in range(20):
                before = proxy.stats().count()
                with contextlib.suppress(ClientError):
                    receive(sqs)
                pattern.append(proxy.stats().count() > before)
            return pattern

    first = injected_pattern()
    assert first == injected_pattern()
    assert 0 < sum(first) < 20


def test_timeout__longer_than_the_read_timeout_is_a_client_timeout(
    proxy: FaultProxy, upstream: Upstream
) -> None:
    proxy.set_rules([FaultRule("timeout", hold_seconds=5.0, max_count=1)])
    sqs = client("sqs", proxy, read_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(ReadTimeoutError):
        receive(sqs)
    assert time.monotonic() - started < 3
    assert receive(sqs)["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert proxy.stats().count("timeout", RECEIVE) == 1
    assert len(upstream.seen) == 1


def test_timeout__shorter_than_the_read_timeout_is_a_dropped_connection(
    proxy: FaultProxy,
) -> None:
    proxy.set_rules([FaultRule("timeout", hold_seconds=0.2)])
    with pytest.raises(ConnectionClosedError):
        receive(client("sqs", proxy, read_timeout=5))


def test_stop__ends_held_connections_at_once(upstream: Upstream) -> None:
    proxy = FaultProxy(upstream.url).start()
    proxy.set_rules([FaultRule("timeout", hold_seconds=60)])
    sqs = client("sqs", proxy, read_timeout=30)
    failures: list[BaseException] = []

    def call() -> None:
        try:
            receive(sqs)
        except Exception as exc:
            failures.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    while proxy.stats().count() == 0:
        time.sleep(0.01)
    started = time.monotonic()
    proxy.stop()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert time.monotonic() - started < 5
    assert len(failures) == 1


def test_latency__delays_then_forwards(proxy: FaultProxy, upstream: Upstream) -> None:
    proxy.set_rules([FaultRule("latency", delay_seconds=0.3, operation=RECEIVE)])
    started = time.monotonic()
    assert receive(client("sqs", proxy))["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert time.monotonic() - started >= 0.3
    assert len(upstream.seen) == 1
    assert proxy.stats().count("latency") == 1


def test_response_phase__the_emulator_did_the_work_and_the_answer_is_lost(
    proxy: FaultProxy, upstream: Upstream
) -> None:
    proxy.set_rules([FaultRule("error", phase="response")])
    dynamodb = client("dynamodb", proxy)
    assert error_of(lambda: dynamodb.list_tables())[0] == ("InternalServerError")
    assert [seen[2] for seen in upstream.seen] == [LIST_TABLES]


def test_query_protocol__operation_from_the_form_and_an_xml_error(proxy: FaultProxy) -> None:
    proxy.set_rules([FaultRule("throttle", operation="ReceiveMessage")])
    request = urllib.request.Request(
        proxy.url + "/",
        data=b"Action=ReceiveMessage&Version=2012-11-05",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    assert caught.value.code == 400
    body = caught.value.read().decode()
    assert "<Code>RequestThrottled</Code>" in body and "<Type>Sender</Type>" in body


def control(proxy: FaultProxy, method: str, path: str, document: Any = None) -> tuple[int, Any]:
    data = None if document is None else json.dumps(document).encode()
    request = urllib.request.Request(proxy.url + path, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_control_endpoint__sets_lists_counts_and_clears(proxy: FaultProxy) -> None:
    rules = [{"kind": "throttle", "operation": [RECEIVE], "rate": 1.0, "max_count": 1}]
    status, listed = control(proxy, "POST", "/_faults", {"rules": rules, "seed": 3})
    assert status == 200
    assert listed["rules"][0]["operation"] == [RECEIVE]
    assert control(proxy, "GET", "/_faults")[1] == listed

    assert error_of(lambda: receive(client("sqs", proxy)))[0] == "RequestThrottled"
    assert control(proxy, "GET", "/_faults/stats")[1] == {
        "requests": {RECEIVE: 1},
        "injected": {"throttle": {RECEIVE: 1}},
    }
    assert control(proxy, "DELETE", "/_faults/stats")[0] == 200
    assert control(proxy, "GET", "/_faults/stats")[1] == {"requests": {}, "injected": {}}
    assert control(proxy, "DELETE", "/_faults")[1] == {"rules": []}


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"kind": "explode"}, "kind must be one of"),
        ({"kind": "error", "rate": 1.5}, "rate must be within 0..1"),
        ({"kind": "error", "status": 404}, "status must be a 5xx"),
        ({"kind": "error", "retries": 3}, "unknown rule fields: retries"),
    ],
)
def test_control_endpoint__refuses_a_bad_rule_and_keeps_the_old_ones(
    proxy: FaultProxy, rule: dict[str, Any], message: str
) -> None:
    proxy.set_rules([FaultRule("latency", delay_seconds=0)])
    status, answer = control(proxy, "POST", "/_faults", {"rules": [rule]})
    assert status == 400
    assert message in answer["error"]
    assert [r.kind for r in proxy.state.rules()] == ["latency"]


def test_cli__serves_until_signalled(upstream: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    # main() blocks on an event set by SIGTERM/SIGINT; here the handler is called directly.
    handlers: dict[int, Any] = {}
    monkeypatch.setattr("signal.signal", lambda sig, handler: handlers.setdefault(sig, handler))
    done: list[int] = []
    thread = threading.Thread(
        target=lambda: done.append(
            main(["--target", upstream.url, "--rules", '[{"kind":"error"}]'])
        )
    )
    thread.start()
    while len(handlers) < 2:
        time.sleep(0.01)
    next(iter(handlers.values()))()
    thread.join(timeout=10)
    assert done == [0]
