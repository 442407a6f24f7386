"""The flashsale stack: wiring only. Config is read once; components hold the decisions."""

from __future__ import annotations

import pulumi

from flashsale.names import (
    INTAKE_ROLE,
    RELAY_ROLE,
    SWEEPER_ROLE,
    WORKER_ROLE,
    Output,
    QueueRole,
    Table,
)
from infra.components.alarms import AlarmTopic, AlarmTopicArgs
from infra.components.iam import (
    ServiceRole,
    ServiceRoleArgs,
    intake_statements,
    relay_statements,
    sweeper_statements,
    worker_statements,
)
from infra.components.relay_alarms import RelayAlarms, RelayAlarmsArgs
from infra.components.saga_alarms import SagaAlarms, SagaAlarmsArgs
from infra.components.sender import SenderIdentity
from infra.components.tables import DataTables, DataTablesArgs
from infra.components.work_queue import WorkQueue, WorkQueueArgs
from infra.config import InfraConfig

config = InfraConfig.load(pulumi.get_stack())

alarms = AlarmTopic(
    "alarms",
    AlarmTopicArgs(
        stack=config.stack,
        email=config.alarm_email,
        webhook_url=config.alarm_webhook_url,
        kms_key_id=config.alarm_topic_kms_key_id,
    ),
)
queues = {
    role: WorkQueue(
        role.value,
        WorkQueueArgs(
            role=role,
            stack=config.stack,
            time_limit_seconds=config.time_limit(role),
            visibility_timeout_seconds=config.visibility_timeout(role),
            max_receive_count=config.max_receive_count,
            dlq_retention_seconds=config.dlq_retention_seconds,
            backlog_alarm_threshold=config.backlog_alarm_threshold,
            oldest_message_age_alarm_seconds=config.oldest_message_age_alarm_seconds,
            alarm_topic_arn=alarms.topic.arn,
        ),
    )
    for role in QueueRole
}
RelayAlarms(
    "relay-alarms",
    RelayAlarmsArgs(
        stack=config.stack,
        lag_alarm_seconds=config.outbox_lag_alarm_seconds,
        alarm_topic_arn=alarms.topic.arn,
    ),
)
SagaAlarms("saga-alarms", SagaAlarmsArgs(stack=config.stack, alarm_topic_arn=alarms.topic.arn))
data = DataTables(
    "tables",
    DataTablesArgs(
        stack=config.stack,
        deletion_protection=config.deletion_protection,
        point_in_time_recovery=config.point_in_time_recovery,
    ),
)
sender = SenderIdentity("sender", config.sender_email)
worker = ServiceRole(
    WORKER_ROLE,
    ServiceRoleArgs(
        stack=config.stack,
        role=WORKER_ROLE,
        description="Celery worker: purchase, payment and notification tasks",
        statements=worker_statements(queues.values(), data, sender),
    ),
)
relay = ServiceRole(
    RELAY_ROLE,
    ServiceRoleArgs(
        stack=config.stack,
        role=RELAY_ROLE,
        description="Outbox relay: publishes committed outbox records to the work queues",
        statements=relay_statements(queues.values(), data),
    ),
)
sweeper = ServiceRole(
    SWEEPER_ROLE,
    ServiceRoleArgs(
        stack=config.stack,
        role=SWEEPER_ROLE,
        description="Saga sweeper: resumes stuck sagas, undoes expired ones",
        statements=sweeper_statements(data),
    ),
)
intake = ServiceRole(
    INTAKE_ROLE,
    ServiceRoleArgs(
        stack=config.stack,
        role=INTAKE_ROLE,
        description="HTTP intake: enqueues purchase requests, answers order status",
        statements=intake_statements(queues[QueueRole.PURCHASES], data),
    ),
)

pulumi.export(Output.REGION, config.region)
pulumi.export(Output.ALARM_TOPIC_ARN, alarms.topic.arn)
pulumi.export(Output.WORKER_ROLE_ARN, worker.role.arn)
pulumi.export(Output.RELAY_ROLE_ARN, relay.role.arn)
pulumi.export(Output.SWEEPER_ROLE_ARN, sweeper.role.arn)
pulumi.export(Output.INTAKE_ROLE_ARN, intake.role.arn)
pulumi.export(Output.SENDER_EMAIL, sender.email)
pulumi.export(Output.OUTBOX_STREAM_ARN, data.tables[Table.OUTBOX].stream_arn)
for role, work_queue in queues.items():
    pulumi.export(Output.queue_url(role), work_queue.queue.url)
    pulumi.export(Output.queue_arn(role), work_queue.queue.arn)
    pulumi.export(Output.dlq_url(role), work_queue.dlq.url)
    pulumi.export(Output.dlq_arn(role), work_queue.dlq.arn)
for table, resource in data.tables.items():
    pulumi.export(Output.table_name(table), resource.name)
    pulumi.export(Output.table_arn(table), resource.arn)
