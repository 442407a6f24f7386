"""The standard AWS SDK variables that point any boto3 client at the local emulators.

Application code never branches on "local": it reads only what every AWS SDK reads
(``AWS_ENDPOINT_URL_<SERVICE_ID>``, credentials, region), so the same code runs against AWS.
The variable for a service is named after its botocore service id, upper-cased with spaces
turned into underscores: "DynamoDB Streams" gives ``AWS_ENDPOINT_URL_DYNAMODB_STREAMS``
(botocore ``ConfiguredEndpointProvider._get_service_env_var_name``).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from pathlib import Path

from flashsale.settings import OUTPUTS_FILE_ENV

from .config import DYNAMODB, EMULATORS, LOCALSTACK, StackConfig
from .processes import is_running, read_pid_file

# Endpoint variable -> the emulator serving that service.
ENDPOINTS: dict[str, str] = {
    "AWS_ENDPOINT_URL_SQS": LOCALSTACK,
    "AWS_ENDPOINT_URL_SNS": LOCALSTACK,
    "AWS_ENDPOINT_URL_CLOUDWATCH": LOCALSTACK,
    "AWS_ENDPOINT_URL_SES": LOCALSTACK,
    "AWS_ENDPOINT_URL_DYNAMODB": DYNAMODB,
    "AWS_ENDPOINT_URL_DYNAMODB_STREAMS": DYNAMODB,
}

# The emulators accept any credentials; LocalStack maps access key "test" to account
# 000000000000, and the DynamoDB emulator is started with the same account id.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
}
ACCOUNT_ID = "000000000000"

# Application tunables the local stack needs (settings, not code branches): LocalStack's FIFO
# long poll does not wake when a delete releases a message group, so a worker waiting 20 s
# would idle a hot event's group; 1 s bounds that stall.
LOCAL_TUNING = {"FLASHSALE_SQS_WAIT_TIME_SECONDS": "1"}


def running_config(config: StackConfig) -> StackConfig:
    """``config`` with the ports of the emulators actually running from its stack directory.

    The pid files record each emulator's port, so ``env`` and ``status`` describe the stack
    that is up even if the ``FLASHSALE_*_PORT`` variables changed since.
    """
    ports = {}
    for name in EMULATORS:
        record = read_pid_file(config.pid_file(name))
        if record is not None and record.port is not None and is_running(record):
            ports[name] = record.port
    return dataclasses.replace(
        config,
        localstack_port=ports.get(LOCALSTACK, config.localstack_port),
        dynamodb_port=ports.get(DYNAMODB, config.dynamodb_port),
    )


def client_environment(config: StackConfig) -> dict[str, str]:
    """The variables for ``config``'s emulators (ports as configured)."""
    env = {name: config.url(emulator) for name, emulator in ENDPOINTS.items()}
    env.update(CREDENTIALS)
    env.update(LOCAL_TUNING)
    env[OUTPUTS_FILE_ENV] = str(config.outputs_file)
    return env


def environment(stack_dir: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """The client environment for the stack in ``stack_dir`` (default ``$FLASHSALE_STACK_DIR``
    or ``.stack``): the ports of its running emulators, else the configured ones."""
    return client_environment(running_config(StackConfig.load(stack_dir)))


def render_exports(env: dict[str, str]) -> str:
    """``export K=V`` lines, shell-quoted, for ``eval "$(python -m infra.local env)"``."""
    return "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items())


def write_env_file(path: Path, env: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render_exports(env))
    tmp.replace(path)
