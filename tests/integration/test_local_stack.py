"""The local stack for real: both emulators started by ``infra.local.up`` in a temporary stack
directory on free ports (a developer's running stack is never touched), then stopped by
``down`` with nothing left behind.

The LocalStack virtualenv is shared with the repository's ``.stack`` (installed there on first
use, ~1 min) through ``up(localstack_venv=...)``; everything else lives in the temp dir.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from kombu import Connection
from kombu.asynchronous import Hub, get_event_loop, set_event_loop
from local_stacks import SHARED_LOCALSTACK_VENV, free_ports

from infra.local import StackError, down, environment, status, up
from infra.local.config import (
    DYNAMODB,
    DYNAMODB_PORT_ENV,
    EMULATORS,
    LOCALSTACK,
    LOCALSTACK_PORT_ENV,
    LOCALSTACK_VENV_ENV,
    STACK_DIR_ENV,
    StackConfig,
)
from infra.local.ports import listen_addresses
from infra.local.processes import MARKER_ENV, read_cmdline, read_environ, read_pid_file

pytestmark = pytest.mark.integration

NO_RETRIES = Config(retries={"max_attempts": 1, "mode": "standard"}, max_pool_connections=16)


@dataclass(frozen=True)
class RunningStack:
    config: StackConfig
    env: dict[str, str]

    def client(self, service: str) -> Any:
        """A boto3 client configured only through the stack's standard AWS variables."""
        session = boto3.session.Session(
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region_name=self.env["AWS_DEFAULT_REGION"],
        )
        return session.client(service, config=NO_RETRIES)  # endpoint from AWS_ENDPOINT_URL_*

    def stats(self, *, reset: bool = False, emulator: str = DYNAMODB) -> dict[str, Any]:
        url = f"{self.config.url(emulator)}/_flashsale/stats" + ("/reset" if reset else "")
        request = urllib.request.Request(url, method="POST" if reset else "GET")
        with urllib.request.urlopen(request, timeout=5) as response:
            return dict(json.load(response))


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def stack_processes(stack_dir: Path, pgids: set[int]) -> list[tuple[int, str]]:
    """Live processes that belong to the stack: by command line, marker or process group."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if fields[0] in ("Z", "X"):
            continue
        cmdline = " ".join(read_cmdline(pid))
        marked = str(stack_dir) in read_environ(pid).get(MARKER_ENV, "")
        if str(stack_dir) in cmdline or marked or int(fields[2]) in pgids:
            found.append((pid, cmdline))
    return found


@pytest.fixture(scope="module")
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A temp stack dir, with no FLASHSALE_* variable from the developer's shell in play."""
    with pytest.MonkeyPatch.context() as patch:
        for key in (STACK_DIR_ENV, LOCALSTACK_PORT_ENV, DYNAMODB_PORT_ENV, LOCALSTACK_VENV_ENV):
            patch.delenv(key, raising=False)
        yield tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="module")
def stack(stack_dir: Path) -> Iterator[RunningStack]:
    """This module's own stack (it tests ``down``), its client environment exported as the
    application would see it."""
    localstack_port, dynamodb_port = free_ports(2)
    env = up(
        stack_dir,
        provision=False,
        localstack_port=localstack_port,
        dynamodb_port=dynamodb_port,
        localstack_venv=SHARED_LOCALSTACK_VENV,
        timeout=180,
    )
    try:
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            yield RunningStack(StackConfig.load(stack_dir), env)
    finally:
        down(stack_dir)


def test_up__returns_the_standard_sdk_environment(stack: RunningStack) -> None:
    env, config = stack.env, stack.config
    assert env["AWS_ENDPOINT_URL_SQS"] == f"http://127.0.0.1:{config.localstack_port}"
    assert env["AWS_ENDPOINT_URL_DYNAMODB_STREAMS"] == f"http://127.0.0.1:{config.dynamodb_port}"
    assert config.env_file.read_text().count("export ") == len(env)


def test_up__is_idempotent_and_leaves_healthy_emulators_alone(stack: RunningStack) -> None:
    pids = {name: read_pid_file(stack.config.pid_file(name)) for name in EMULATORS}
    began = time.monotonic()
    assert up(stack.config.stack_dir, provision=False) == stack.env
    assert time.monotonic() - began < 10
    assert {name: read_pid_file(stack.config.pid_file(name)) for name in EMULATORS} == pids


def test_env_and_status__find_the_stack_by_its_directory_alone(stack: RunningStack) -> None:
    # No port argument or variable: ports and virtualenv come from what `up` recorded.
    assert environment(stack.config.stack_dir) == stack.env
    assert StackConfig.load(stack.config.stack_dir) == stack.config
    assert stack.config.venv == SHARED_LOCALSTACK_VENV


def test_status__shows_both_emulators_healthy_on_their_ports(stack: RunningStack) -> None:
    rows = {row.name: row for row in status(stack.config.stack_dir)}
    assert rows[LOCALSTACK].healthy and rows[DYNAMODB].healthy, rows
    assert rows[LOCALSTACK].port == stack.config.localstack_port
    assert rows[DYNAMODB].port == stack.config.dynamodb_port


def create_pk_table(dynamodb: Any, name: str, **extra: Any) -> dict[str, Any]:
    """An on-demand table keyed by a string ``pk``; returns its description."""
    return dict(
        dynamodb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            **extra,
        )["TableDescription"]
    )


def test_emulators__listen_on_loopback_only(stack: RunningStack) -> None:
    for name in EMULATORS:
        assert listen_addresses(stack.config.port(name)) == {"127.0.0.1"}, name


def test_dynamodb__concurrent_conditional_decrements_never_oversell(stack: RunningStack) -> None:
    dynamodb = stack.client("dynamodb")
    table = "counter-atomicity"
    create_pk_table(dynamodb, table)
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "seats"}, "n": {"N": "100"}})
    succeeded: list[int] = []
    refused: list[str] = []
    errors: list[str] = []
    start = threading.Barrier(8)

    def buyer() -> None:
        client = stack.client("dynamodb")
        start.wait()
        for _ in range(50):
            try:
                client.update_item(
                    TableName=table,
                    Key={"pk": {"S": "seats"}},
                    UpdateExpression="SET n = n - :one",
                    ConditionExpression="n > :zero",
                    ExpressionAttributeValues={":one": {"N": "1"}, ":zero": {"N": "0"}},
                )
                succeeded.append(1)
            except ClientError as exc:
                code = exc.response["Error"]["Code"]
                (refused if code == "ConditionalCheckFailedException" else errors).append(code)

    threads = [threading.Thread(target=buyer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert (len(succeeded), len(refused)) == (100, 300)
    item = dynamodb.get_item(TableName=table, Key={"pk": {"S": "seats"}}, ConsistentRead=True)
    assert item["Item"]["n"] == {"N": "0"}


def test_dynamodb__stats_count_every_call_exactly(stack: RunningStack) -> None:
    dynamodb = stack.client("dynamodb")
    table = "counted"
    create_pk_table(dynamodb, table)
    stack.stats(reset=True)
    for i in range(7):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{i}"}})
    dynamodb.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": table, "Item": {"pk": {"S": "t1"}}}},
            {"Put": {"TableName": table, "Item": {"pk": {"S": "t2"}}}},
        ]
    )
    with pytest.raises(ClientError):  # a refused write is still a call
        dynamodb.put_item(
            TableName=table,
            Item={"pk": {"S": "k0"}},
            ConditionExpression="attribute_not_exists(pk)",
        )
    dynamodb.get_item(TableName=table, Key={"pk": {"S": "k1"}})

    stats = stack.stats()
    assert stats["calls"] == {"GetItem": 1, "PutItem": 8, "TransactWriteItems": 1}
    assert stats["total"] == 10
    assert stack.stats(reset=True)["total"] == 10
    assert stack.stats()["calls"] == {}


def test_dynamodb_streams__served_by_the_same_emulator(stack: RunningStack) -> None:
    dynamodb, streams = stack.client("dynamodb"), stack.client("dynamodbstreams")
    assert streams.meta.endpoint_url == stack.env["AWS_ENDPOINT_URL_DYNAMODB_STREAMS"]
    table = create_pk_table(
        dynamodb,
        "streamed",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    )
    stack.stats(reset=True)
    dynamodb.put_item(TableName="streamed", Item={"pk": {"S": "a"}})
    shard = streams.describe_stream(StreamArn=table["LatestStreamArn"])["StreamDescription"][
        "Shards"
    ][0]
    iterator = streams.get_shard_iterator(
        StreamArn=table["LatestStreamArn"],
        ShardId=shard["ShardId"],
        ShardIteratorType="TRIM_HORIZON",
    )["ShardIterator"]
    records = streams.get_records(ShardIterator=iterator)["Records"]
    assert [(r["eventName"], r["dynamodb"]["Keys"]) for r in records] == [
        ("INSERT", {"pk": {"S": "a"}})
    ]
    stats = stack.stats()
    assert stats["calls"] == {"PutItem": 1}  # stream reads are counted apart
    assert stats["streams"] == {"DescribeStream": 1, "GetRecords": 1, "GetShardIterator": 1}


def test_localstack__queue_urls_point_at_the_loopback_gateway(stack: RunningStack) -> None:
    sqs = stack.client("sqs")
    url = sqs.create_queue(
        QueueName="probe.fifo",
        Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"},
    )["QueueUrl"]
    assert url == (
        f"http://127.0.0.1:{stack.config.localstack_port}/queue/us-east-1/000000000000/probe.fifo"
    )
    sqs.send_message(QueueUrl=url, MessageBody="hello", MessageGroupId="g")
    received = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"]
    assert [m["Body"] for m in received] == ["hello"]
    assert stack.client("ses").list_identities()["Identities"] == []
    assert stack.client("sns").list_topics()["Topics"] == []
    assert "Metrics" in stack.client("cloudwatch").list_metrics()


def test_localstack__stats_count_every_call_exactly(stack: RunningStack) -> None:
    sqs = stack.client("sqs")
    url = sqs.create_queue(QueueName="counted")["QueueUrl"]
    stack.stats(reset=True, emulator=LOCALSTACK)
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
    assert len(sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]) == 3
    stack.client("sns").list_topics()
    health_url = f"{stack.config.url(LOCALSTACK)}/_localstack/health"
    with urllib.request.urlopen(health_url, timeout=5) as health:
        assert health.status == 200  # health checks are not counted

    stats = stack.stats(emulator=LOCALSTACK)
    assert stats["calls"] == {"ReceiveMessage": 1, "SendMessage": 3}  # SQS only
    assert stats["other"] == {"sns.ListTopics": 1}
    assert stats["total"] == 4
    assert stack.stats(reset=True, emulator=LOCALSTACK)["calls"] == stats["calls"]
    assert stack.stats(emulator=LOCALSTACK)["calls"] == {}

    # SQS's query API (a form POSTed to the queue URL) is re-sent internally: counted once.
    form = urllib.parse.urlencode({"Action": "SendMessage", "MessageBody": "m3"}).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=form), timeout=5) as sent:
        assert sent.status == 200
    assert stack.stats(emulator=LOCALSTACK)["calls"] == {"SendMessage": 1}


def test_localstack__stats_count_kombu_async_receives(stack: RunningStack) -> None:
    """A Celery worker receives through kombu's own pycurl client, not boto3: counted too."""
    url = stack.client("sqs").create_queue(QueueName="kombu-counted")["QueueUrl"]
    stack.client("sqs").send_message(QueueUrl=url, MessageBody="hello")
    stack.stats(reset=True, emulator=LOCALSTACK)
    received: list[dict[str, Any]] = []
    previous_loop, hub = get_event_loop(), Hub()
    set_event_loop(hub)  # the SQS channel takes the current loop, as in a worker
    try:
        options = {"predefined_queues": {"kombu-counted": {"url": url}}, "wait_time_seconds": 1}
        with Connection("sqs://", transport_options=options) as connection:
            channel = connection.default_channel
            channel.connection._callbacks["kombu-counted"] = received.append
            # What the worker's consumer loop calls for each poll (_schedule_queue).
            channel._get_async("kombu-counted", count=1)
            deadline = time.monotonic() + 10
            while not received and time.monotonic() < deadline:
                hub.run_once()
    finally:
        hub.close()
        set_event_loop(previous_loop)

    assert [message["body"] for message in received] == ["hello"]
    assert stack.stats(emulator=LOCALSTACK)["calls"] == {"ReceiveMessage": 1}


def test_up__fails_clearly_on_a_taken_port_and_stops_what_it_started(
    stack: RunningStack, tmp_path: Path
) -> None:
    localstack_port, dynamodb_port = free_ports(2)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", dynamodb_port))
        squatter.listen()
        with pytest.raises(StackError, match=f"port {dynamodb_port} is in use"):
            up(
                tmp_path / "clash",
                provision=False,
                localstack_port=localstack_port,
                dynamodb_port=dynamodb_port,
                localstack_venv=SHARED_LOCALSTACK_VENV,
            )
    # LocalStack was started before the clash was found; it must be gone again.
    assert stack_processes((tmp_path / "clash").resolve(), set()) == []
    assert not (tmp_path / "clash" / "pids" / "localstack.pid").exists()


def test_down__stops_everything_and_leaves_no_process_behind(stack: RunningStack) -> None:
    stack_dir = stack.config.stack_dir
    records = [read_pid_file(stack.config.pid_file(name)) for name in EMULATORS]
    pgids = {record.pid for record in records if record is not None}
    assert len(pgids) == 2
    assert stack_processes(stack_dir, pgids), "the stack should be running before down"

    assert sorted(down(stack_dir)) == sorted(EMULATORS)

    assert stack_processes(stack_dir, pgids) == []
    assert list(stack.config.pids_dir.iterdir()) == []
    assert wait_for(lambda: all(not listen_addresses(stack.config.port(n)) for n in EMULATORS))
    assert down(stack_dir) == []  # idempotent too
