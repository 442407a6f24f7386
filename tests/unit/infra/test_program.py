"""The program as a whole: its stack outputs, and timing refused at definition."""

from __future__ import annotations

import pytest
from mocked_stack import PlainMocks, ProgramRun
from pulumi.runtime import rpc

from flashsale.names import Output, QueueRole, Table
from flashsale.settings import Settings
from infra.components.work_queue import WorkQueueArgs
from infra.program import run_program, stack_files


def expected_output_keys() -> set[str]:
    constants = {v for k, v in vars(Output).items() if k.isupper()}
    per_queue = {f(role) for role in QueueRole for f in (Output.queue_url, Output.queue_arn)}
    per_dlq = {f(role) for role in QueueRole for f in (Output.dlq_url, Output.dlq_arn)}
    per_table = {f(table) for table in Table for f in (Output.table_name, Output.table_arn)}
    return constants | per_queue | per_dlq | per_table


def test_stack_files__dev_and_local_are_committed() -> None:
    assert {p.name for p in stack_files()} >= {"Pulumi.dev.yaml", "Pulumi.local.yaml"}


def test_outputs__are_exactly_the_names_output_keys(run: ProgramRun) -> None:
    missing = expected_output_keys() - set(run.outputs)
    extra = set(run.outputs) - expected_output_keys()
    assert not missing, f"stack {run.stack} does not export {sorted(missing)}"
    assert not extra, f"stack {run.stack} exports keys unknown to flashsale.names: {sorted(extra)}"
    empty = [k for k, v in run.outputs.items() if not v]
    assert not empty, f"stack {run.stack} exports empty values for {empty}"


def test_outputs__build_the_application_settings(run: ProgramRun) -> None:
    required = {n for n, f in Settings.model_fields.items() if f.is_required()}
    assert required <= set(run.outputs), f"Settings needs {sorted(required - set(run.outputs))}"
    settings = Settings(**run.outputs)
    for role in QueueRole:
        assert settings.queue_url(role) == run.outputs[Output.queue_url(role)]
    for table in Table:
        assert settings.table(table) == table.physical_name(run.stack)


def test_visibility_not_above_time_limit__raises_at_definition() -> None:
    with pytest.raises(ValueError, match="purchases: visibility timeout 30s must exceed"):
        WorkQueueArgs(
            role=QueueRole.PURCHASES,
            stack="test",
            time_limit_seconds=30,
            visibility_timeout_seconds=30,
            max_receive_count=3,
            dlq_retention_seconds=1_209_600,
            backlog_alarm_threshold=1,
            oldest_message_age_alarm_seconds=1,
            alarm_topic_arn="arn:aws:sns:us-east-1:123456789012:alarms",
        )


def test_alarm_webhook__is_a_config_secret_that_subscribes_the_topic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Committed files hold only ciphertext; an in-process run takes the secret from the
    # environment, as pulumi.Config does for PULUMI_CONFIG_<KEY>.
    url = "https://hooks.example.com/T0/secret-token"
    monkeypatch.setenv("PULUMI_CONFIG_FLASHSALE_ALARMWEBHOOKURL", url)
    mocks = PlainMocks()
    run_program(mocks, "local")
    (webhook,) = [d for d in mocks.declared if d.inputs.get("protocol") == "https"]
    endpoint = webhook.inputs["endpoint"]
    assert rpc.is_rpc_secret(endpoint), f"{webhook.name}: the webhook URL is not a secret"
    assert rpc.unwrap_rpc_secret(endpoint) == url
