"""``pulumi up`` for the local stack without the CLI: the real program, emulator-backed mocks.

The same ``infra/__main__.py`` runs in-process (``infra.program``) with ``EmulatorMocks``,
which creates every declared resource in LocalStack and the DynamoDB emulator. The outputs are
written where ``flashsale.settings`` reads them, with the keys ``pulumi stack output --json``
prints. Re-running updates in place; nothing here can reach AWS, because every client needs an
explicit emulator endpoint.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import boto3

from flashsale.settings import OUTPUTS_FILE_ENV
from infra.local.config import STACK_DIR_ENV, resolve_stack_dir
from infra.local.emulator_mocks import EmulatorMocks
from infra.program import load_stack_config, run_program

SERVICES = ("sqs", "sns", "cloudwatch", "ses", "dynamodb")
IAM_RECORD = "iam.json"


class ProvisionError(Exception):
    """The local stack cannot be provisioned as asked."""


def emulator_clients(env: Mapping[str, str], region: str) -> dict[str, Any]:
    """One boto3 client per service, each with its emulator endpoint from ``env``."""
    session = boto3.session.Session(
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID", "test"),
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY", "test"),
        region_name=region,
    )
    clients = {}
    for service in SERVICES:
        variable = f"AWS_ENDPOINT_URL_{service.upper()}"
        endpoint = env.get(variable) or env.get("AWS_ENDPOINT_URL")
        if not endpoint:
            raise ProvisionError(f"{variable} is not set: the provisioner only targets emulators")
        clients[service] = session.client(service, endpoint_url=endpoint)
    return clients


def outputs_path(env: Mapping[str, str]) -> Path:
    """``$FLASHSALE_OUTPUTS_FILE`` (what Settings reads), else ``<stack dir>/outputs.json``."""
    if env.get(OUTPUTS_FILE_ENV):
        return Path(env[OUTPUTS_FILE_ENV])
    return resolve_stack_dir(env.get(STACK_DIR_ENV)) / "outputs.json"


def provision(stack: str = "local", environment: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Create or update ``stack``'s resources in the emulators; write and return its outputs.

    ``environment`` holds the emulator endpoints and credentials (``infra.local.up`` returns
    it); it defaults to ``os.environ``. Raises ``UnsupportedResourceError`` for anything the
    program declares that the emulators cannot hold, and ``ProvisionError`` without endpoints.
    """
    env = {**os.environ, **(environment or {})}
    region = load_stack_config(stack)[0]["aws:region"]
    mocks = EmulatorMocks(emulator_clients(env, region), region)
    outputs = run_program(mocks, stack)
    path = outputs_path(env)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_json(path, outputs)
    # What IAM would hold on AWS, for review: no emulator enforces it.
    _write_json(path.with_name(IAM_RECORD), mocks.recorded)
    return outputs


def _write_json(path: Path, document: Any) -> None:
    """Write atomically, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
