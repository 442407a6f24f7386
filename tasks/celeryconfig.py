"""Celery settings for the SQS broker.

Pulumi owns the queues: the worker only uses the predefined ones and never creates or
reconfigures a queue. Failures reach the dead-letter queue through each queue's redrive policy,
which needs late acks and no ack on failure (the message stays in SQS and is received again
until ``maxReceiveCount``). Results are not stored: state lives in DynamoDB.
"""

from __future__ import annotations

from kombu import Queue

from flashsale.names import TASK_TIME_LIMIT_SECONDS, QueueRole
from flashsale.settings import get_settings
from tasks.consumer import REJECT_BACKOFF_SECONDS

_settings = get_settings()

TASK_QUEUES: dict[str, QueueRole] = {
    "tasks.purchase.allocate": QueueRole.PURCHASES,
    "tasks.payment.charge": QueueRole.PAYMENTS,
    "tasks.payment.refund": QueueRole.PAYMENTS,
    "tasks.tickets.issue": QueueRole.TICKETS,
    "tasks.tickets.release_seat": QueueRole.TICKETS,
    "tasks.notify.confirmation": QueueRole.NOTIFICATIONS,
    "tasks.notify.cancellation": QueueRole.NOTIFICATIONS_LOW,
}

broker_url = "sqs://"
broker_connection_retry_on_startup = True
broker_transport_options = {
    "predefined_queues": {
        role.celery_queue: {
            "url": _settings.queue_url(role),
            "backoff_policy": REJECT_BACKOFF_SECONDS,
            "backoff_tasks": [name for name, r in TASK_QUEUES.items() if r is role],
        }
        for role in QueueRole
    },
    # Long polling: an idle worker waits in ReceiveMessage, it does not sleep and re-poll.
    "wait_time_seconds": _settings.sqs_wait_time_seconds,
    "polling_interval": 0,
    # Needed for the reject backoff above and for FIFO diagnostics.
    "fetch_message_attributes": ["ApproximateReceiveCount", "SequenceNumber"],
    # kombu's own boto3 client (deletes, visibility changes): botocore's legacy retries do not
    # retry a throttled call, and its 60 s read timeout would block the worker's event loop.
    "client-config": {
        "retries": {"mode": "standard", "max_attempts": 5},
        "connect_timeout": 5,
        "read_timeout": _settings.sqs_wait_time_seconds + 10,
    },
}

task_queues = [Queue(role.celery_queue) for role in QueueRole]
task_default_queue = QueueRole.PURCHASES.celery_queue
task_routes = {name: {"queue": role.celery_queue} for name, role in TASK_QUEUES.items()}
task_create_missing_queues = False

task_acks_late = True
task_acks_on_failure_or_timeout = False
# A pool process killed mid-task (OOM, kill -9): Celery then rejects without requeue, which on
# SQS leaves the message in the queue, visible again after the reject backoff, its receive
# counted — so a task that always kills its process still ends in the DLQ. (``True`` would make
# kombu send a *copy* of the message and never count a receive: an endless loop.)
task_reject_on_worker_lost = False
task_ignore_result = True
result_backend = None
task_serializer = "json"
accept_content = ["json"]

# Purchase workers run with concurrency 1: the messages of one FIFO group that a receive
# returns (up to 10, in order) then run one after the other, and SQS hands no message of that
# group to any other worker while they are in flight — strict order per event.
worker_prefetch_multiplier = 10
worker_consumer = "tasks.consumer:DeadLetteringConsumer"
# Wake the worker's event loop this often (see tasks.consumer.HubTicker).
flashsale_hub_tick_seconds = 0.01
worker_hijack_root_logger = False
worker_send_task_events = False
task_send_sent_event = False

# Each task's hard limit is its queue's (the queue's visibility timeout is derived from it).
task_annotations = {
    name: {
        "time_limit": TASK_TIME_LIMIT_SECONDS[role],
        "soft_time_limit": TASK_TIME_LIMIT_SECONDS[role] - 5,
    }
    for name, role in TASK_QUEUES.items()
}
