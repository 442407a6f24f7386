"""One source for every name shared by the Pulumi program and the application.

Queue roles, table names, key attributes and stack-output keys live here so that the
infrastructure (``infra/``) and the code that uses it (``tasks/``, ``outbox/``, ``saga/``)
cannot drift apart.
"""

from __future__ import annotations

from enum import StrEnum

PROJECT = "flashsale"


class QueueRole(StrEnum):
    """A work queue, named for the work on it; each has a dead-letter queue of the same type."""

    PURCHASES = "purchases"
    PAYMENTS = "payments"  # charges and refunds at the payment provider
    TICKETS = "tickets"  # issuing tickets and returning held seats to inventory
    NOTIFICATIONS = "notifications"  # high priority: purchase confirmations
    NOTIFICATIONS_LOW = "notifications-low"  # low priority: cancellation notices

    @property
    def key(self) -> str:
        """The role as an identifier: stack-output keys and settings fields start with it."""
        return self.value.replace("-", "_")

    @property
    def fifo(self) -> bool:
        """Purchases need first-come-first-served order per event; the rest do not."""
        return self is QueueRole.PURCHASES

    @property
    def celery_queue(self) -> str:
        """The queue name Celery routes to; kombu treats names ending in ``.fifo`` as FIFO."""
        return f"{self.value}.fifo" if self.fifo else self.value

    def physical_name(self, stack: str, *, dlq: bool = False) -> str:
        """The SQS queue name for a stack; a FIFO queue's name must end in ``.fifo``."""
        base = f"{PROJECT}-{stack}-{self.value}" + ("-dlq" if dlq else "")
        return f"{base}.fifo" if self.fifo else base


def alarm_name_prefix(queue_name: str) -> str:
    """What the names of a work queue's alarms start with (its DLQ's alarm included).

    Derived from the queue's SQS name, so an operator command that knows only the queue URL
    finds the queue's alarms with ``describe_alarms(AlarmNamePrefix=...)``.
    """
    return f"{queue_name.removesuffix('.fifo')}-"


def alarm_name(queue_name: str, kind: str) -> str:
    """A work queue's alarm of one ``kind`` (``dlq-depth``, ``backlog``, ...)."""
    return f"{alarm_name_prefix(queue_name)}{kind}"


class Table(StrEnum):
    """DynamoDB tables."""

    INVENTORY = "inventory"
    ORDERS = "orders"
    IDEMPOTENCY = "idempotency"
    OUTBOX = "outbox"
    SAGAS = "sagas"

    def physical_name(self, stack: str) -> str:
        return f"{PROJECT}-{stack}-{self.value}"


# Key schema and attributes, by table. Components and adapters both import these.
INVENTORY_PK = "event_id"
ORDERS_PK = "order_id"
ORDERS_BY_EVENT_INDEX = "by_event"  # hash event_id, range accepted_seq: the sale's ledger
IDEMPOTENCY_PK = "id"
OUTBOX_PK = "aggregate_id"
OUTBOX_SK = "sequence"
OUTBOX_PENDING_INDEX = "pending"  # sparse: only records not yet dispatched carry pending_shard
SAGAS_PK = "saga_id"
TTL_ATTRIBUTE = "expires_at"

# Secondary-index key attributes (DynamoDB type in the comment). A shard attribute holds an
# integer in 0..n-1 so a sparse index's writes spread over n partitions; removing the attribute
# drops the item out of the index.
ORDERS_EVENT_ID = "event_id"  # S
ORDERS_ACCEPTED_SEQ = "accepted_seq"  # N
OUTBOX_PENDING_SHARD = "pending_shard"  # N
OUTBOX_CREATED_AT = "created_at"  # S, ISO-8601 UTC so it sorts by time
SAGAS_ACTIVE_INDEX = "active"  # sparse: only sagas still running carry active_shard
SAGAS_ACTIVE_SHARD = "active_shard"  # N
SAGAS_DEADLINE = "deadline"  # N, epoch seconds after which the sweeper takes the saga over

# Alarm-action topic and IAM roles.
ALARM_TOPIC = "alarms"
WORKER_ROLE = "worker"
RELAY_ROLE = "relay"
SWEEPER_ROLE = "sweeper"
INTAKE_ROLE = "intake"  # the HTTP intake (python -m intake): enqueue purchases, read status
# The only CloudWatch namespace the relay may put metrics in.
METRICS_NAMESPACE = "Flashsale"
# Relay metrics (no dimensions) that the stack's relay alarms watch.
OUTBOX_LAG_METRIC = "OutboxLagSeconds"
OUTBOX_PARKED_METRIC = "OutboxParked"
# Saga sweeper metric (no dimensions): sagas waiting for an operator.
SAGAS_QUARANTINED_METRIC = "SagasQuarantined"


class Output:
    """Stack-output keys (the names ``pulumi stack output --json`` prints)."""

    ALARM_TOPIC_ARN = "alarm_topic_arn"
    WORKER_ROLE_ARN = "worker_role_arn"
    RELAY_ROLE_ARN = "relay_role_arn"
    SWEEPER_ROLE_ARN = "sweeper_role_arn"
    INTAKE_ROLE_ARN = "intake_role_arn"
    REGION = "region"
    OUTBOX_STREAM_ARN = "outbox_stream_arn"
    SENDER_EMAIL = "sender_email"

    @staticmethod
    def queue_url(role: QueueRole) -> str:
        return f"{role.key}_queue_url"

    @staticmethod
    def queue_arn(role: QueueRole) -> str:
        return f"{role.key}_queue_arn"

    @staticmethod
    def dlq_url(role: QueueRole) -> str:
        return f"{role.key}_dlq_url"

    @staticmethod
    def dlq_arn(role: QueueRole) -> str:
        return f"{role.key}_dlq_arn"

    @staticmethod
    def table_name(table: Table) -> str:
        return f"{table.value}_table"

    @staticmethod
    def table_arn(table: Table) -> str:
        return f"{table.value}_table_arn"


# Hard time limit of each queue's task, in seconds. Celery enforces it; the Pulumi program
# derives the queue's visibility timeout from it, so a message never reappears while its
# task may still be running.
TASK_TIME_LIMIT_SECONDS: dict[QueueRole, int] = {
    QueueRole.PURCHASES: 30,
    QueueRole.PAYMENTS: 60,
    QueueRole.TICKETS: 30,
    QueueRole.NOTIFICATIONS: 30,
    QueueRole.NOTIFICATIONS_LOW: 30,
}
