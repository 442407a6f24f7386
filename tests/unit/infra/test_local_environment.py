"""The client environment of the local stack: only standard AWS SDK variables, named as botocore
names them, and ports from the running stack."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import botocore.configprovider
import pytest

from infra.local import environment
from infra.local.config import StackConfig
from infra.local.environment import ENDPOINTS, client_environment, render_exports

SERVICES = {
    "sqs": "http://127.0.0.1:41000",
    "sns": "http://127.0.0.1:41000",
    "cloudwatch": "http://127.0.0.1:41000",
    "ses": "http://127.0.0.1:41000",
    "dynamodb": "http://127.0.0.1:41001",
    "dynamodbstreams": "http://127.0.0.1:41001",
}


@pytest.fixture
def config(tmp_path: Path) -> StackConfig:
    return StackConfig.load(tmp_path / "stack", localstack_port=41000, dynamodb_port=41001)


@pytest.mark.parametrize("client_name", sorted(SERVICES))
def test_environment__points_each_boto3_client_at_its_emulator(
    config: StackConfig, client_name: str
) -> None:
    env = client_environment(config)
    provider = botocore.configprovider.ConfiguredEndpointProvider(
        full_config={}, scoped_config={}, client_name=client_name, environ=env
    )
    assert provider.provide() == SERVICES[client_name]


def test_environment__streams_variable_is_botocores_name_for_the_service_id() -> None:
    # Service id "DynamoDB Streams" -> AWS_ENDPOINT_URL_DYNAMODB_STREAMS, not ..._DYNAMODBSTREAMS.
    provider = botocore.configprovider.ConfiguredEndpointProvider(
        full_config={}, scoped_config={}, client_name="dynamodbstreams", environ={}
    )
    assert provider._get_service_env_var_name() == "AWS_ENDPOINT_URL_DYNAMODB_STREAMS"
    assert "AWS_ENDPOINT_URL_DYNAMODB_STREAMS" in ENDPOINTS


def test_environment__has_credentials_region_and_the_outputs_file(config: StackConfig) -> None:
    env = client_environment(config)
    assert env["AWS_ACCESS_KEY_ID"] == env["AWS_SECRET_ACCESS_KEY"] == "test"
    assert env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert env["FLASHSALE_OUTPUTS_FILE"] == str(config.stack_dir / "outputs.json")
    assert Path(env["FLASHSALE_OUTPUTS_FILE"]).is_absolute()


def test_environment__without_a_running_stack_uses_the_configured_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASHSALE_LOCALSTACK_PORT", "42000")
    monkeypatch.setenv("FLASHSALE_DYNAMODB_PORT", "42001")
    env = environment(tmp_path)
    assert env["AWS_ENDPOINT_URL_SQS"] == "http://127.0.0.1:42000"
    assert env["AWS_ENDPOINT_URL_DYNAMODB"] == "http://127.0.0.1:42001"


def test_render_exports__round_trips_through_a_shell(config: StackConfig) -> None:
    env = client_environment(config) | {"FLASHSALE_OUTPUTS_FILE": "/tmp/with space/it's.json"}
    script = render_exports(env) + 'printf %s "$FLASHSALE_OUTPUTS_FILE"'
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout == "/tmp/with space/it's.json"
    assert all(line.startswith("export ") for line in render_exports(env).splitlines())
    assert shlex.split(render_exports({"A": "b c"})) == ["export", "A=b c"]
