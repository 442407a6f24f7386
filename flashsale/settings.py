"""One settings object per process.

Queue URLs and table names come from the stack outputs (``.stack/outputs.json`` for the local
stack, or ``pulumi stack output --json > outputs.json`` for AWS); any of them can be overridden
by an environment variable ``FLASHSALE_<KEY>``. AWS credentials, region and endpoints are not
settings of ours: boto3 reads them from its standard configuration (``AWS_PROFILE``,
``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL_SQS``, ...), so the same code runs against the
emulators and against AWS.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    JsonConfigSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from flashsale.names import Output, QueueRole, Table

OUTPUTS_FILE_ENV = "FLASHSALE_OUTPUTS_FILE"
DEFAULT_OUTPUTS_FILE = Path(".stack/outputs.json")


def outputs_file() -> Path:
    """Where the stack outputs are read from (env ``FLASHSALE_OUTPUTS_FILE``)."""
    return Path(os.environ.get(OUTPUTS_FILE_ENV, DEFAULT_OUTPUTS_FILE))


class Settings(BaseSettings):
    """Stack outputs the application needs, plus its own tunables."""

    model_config = SettingsConfigDict(env_prefix="FLASHSALE_", extra="ignore", frozen=True)

    purchases_queue_url: str
    purchases_dlq_url: str
    payments_queue_url: str
    payments_dlq_url: str
    tickets_queue_url: str
    tickets_dlq_url: str
    notifications_queue_url: str
    notifications_dlq_url: str
    notifications_low_queue_url: str
    notifications_low_dlq_url: str
    inventory_table: str
    orders_table: str
    idempotency_table: str
    outbox_table: str
    sagas_table: str
    alarm_topic_arn: str = ""
    sender_email: str = ""  # the verified SES identity notifications are sent from

    # Requests per purchase message: one SQS message and one DynamoDB transaction carry
    # this many buyers, which is what lets one FIFO message group (one hot event) keep up.
    # At most 32: a batch's transaction holds 3 items per confirmed order (order, saga, outbox
    # record) plus the seat counter, and DynamoDB allows 100 items per transaction.
    purchase_batch_size: int = Field(default=32, ge=1, le=32)
    # Longest a buyer may wait in the intake's buffer before their batch is flushed.
    intake_linger_ms: int = Field(default=20, ge=0, le=1000)
    max_tickets_per_request: int = Field(default=8, ge=1, le=100)
    # The HTTP intake (``python -m intake``). Every bound below turns overload into a quick
    # ``503`` with ``Retry-After`` instead of a slow answer or a growing process.
    # Purchase messages on the queue (visible + in flight, polled at most once per
    # ``intake_backlog_poll_seconds``) past which new purchases are refused. A message carries
    # up to ``purchase_batch_size`` buyers, so the default is about 64,000 buyers waiting.
    intake_backlog_limit: int = Field(default=2000, ge=1)
    intake_backlog_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    # Buyers accepted by this process but not yet on the queue (SQS slow or failing).
    intake_buffer_limit: int = Field(default=5000, ge=1)
    # Requests being handled at once by one intake process (the memory bound under any load);
    # uvicorn's own connection limit, past which it answers a bare 503, is a last resort.
    intake_max_in_flight: int = Field(default=1024, ge=1)
    intake_max_connections: int = Field(default=4096, ge=1)
    # The HTTP intake's own linger (``intake_linger_ms`` is the in-process intake's): short,
    # because with ``intake_ack=queued`` every buyer waits for it, and batches fill anyway
    # while the previous send is in flight (5 ms: about +25% requests/s over 20 ms here).
    intake_http_linger_ms: int = Field(default=5, ge=0, le=1000)
    # When the intake answers 202: ``queued`` once the request's batch is on SQS (nothing
    # accepted is lost if the intake dies), ``buffered`` as soon as it is in the intake's buffer
    # (about twice the requests/s here; a crash loses what was not sent yet).
    intake_ack: Literal["queued", "buffered"] = "queued"
    # How long a purchase may wait for its batch to reach SQS before the answer is 503 (the
    # buyer retries with the same request id, which cannot make a second order).
    intake_enqueue_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # Order ids an intake process remembers having queued (about 200 bytes each), so that a
    # repeat of a request (double click, retry) is answered without queuing it again.
    intake_recent_orders: int = Field(default=100_000, ge=0)
    # How stale the intake's view of an event (unknown, on sale, sold out) may be: sold-out
    # buyers are answered at the edge from it, and released seats show up within this time.
    # A hot event is re-read every half of it, one call per intake process whatever the load;
    # buyers who arrive in the second after a sell-out are queued and refused by a worker.
    intake_sold_out_ttl_seconds: float = Field(default=1.0, gt=0, le=60)
    intake_event_cache_size: int = Field(default=10_000, ge=1)
    # The ``Retry-After`` of every 503 the intake gives.
    intake_retry_after_seconds: int = Field(default=1, ge=1, le=3600)
    # Long-poll wait of the workers' ReceiveMessage. 20 s on AWS (fewest empty receives); the
    # local stack sets 1 s because LocalStack's FIFO long poll does not wake up when a message
    # group is released by a delete, which idles a hot group for the rest of the wait.
    sqs_wait_time_seconds: int = Field(default=20, ge=0, le=20)
    # Shards of the outbox's sparse pending index. Writers and relays must agree on it: a
    # record is written to shard hash(aggregate) % n and a relay only reads shards 0..n-1.
    outbox_shards: int = Field(default=8, ge=1, le=256)
    # Shards of the sagas' sparse ``active`` index, read by the sweeper.
    saga_shards: int = Field(default=8, ge=1, le=256)

    # The purchase saga. A held seat returns to inventory if the saga has not charged the
    # buyer within ``hold_seconds``.
    hold_seconds: int = Field(default=600, ge=1)
    ticket_price_cents: int = Field(default=5000, ge=0)
    currency: str = "usd"
    # A step is tried this many times (with exponential backoff and jitter, capped) before it
    # counts as failed; a compensation that fails this often quarantines its saga.
    saga_step_attempts: int = Field(default=5, ge=1, le=50)
    saga_backoff_seconds: float = Field(default=1.0, ge=0)
    saga_backoff_cap_seconds: float = Field(default=60.0, ge=0, le=900)
    # How long a step may go without a result before the sweeper retries it: longer than the
    # longest task time limit plus a relay round and a queue wait.
    saga_step_timeout_seconds: float = Field(default=120.0, gt=0)
    # Fault drills, off in production: this fraction of orders fails at ticket issuing; saga
    # workers SIGKILL themselves at these points (``after_work``, ``after_commit``).
    ticket_fault_rate: float = Field(default=0.0, ge=0, le=1)
    saga_crash_at: str = ""
    saga_crash_probability: float = Field(default=0.0, ge=0, le=1)

    # The payment provider (``payments/``): base URL of its HTTP API and the client timeout.
    payment_provider_url: str = "http://127.0.0.1:4590"
    payment_timeout_seconds: float = Field(default=5.0, gt=0)
    # Notifications: sends per second per worker process and channel.
    email_per_second: float = Field(default=14.0, gt=0)
    sms_per_second: float = Field(default=5.0, gt=0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment wins over the outputs file, which wins over defaults.
        outputs = JsonConfigSettingsSource(settings_cls, json_file=outputs_file())
        return init_settings, env_settings, outputs

    def queue_url(self, role: QueueRole) -> str:
        return str(getattr(self, Output.queue_url(role)))

    def dlq_url(self, role: QueueRole) -> str:
        return str(getattr(self, Output.dlq_url(role)))

    def table(self, table: Table) -> str:
        return str(getattr(self, Output.table_name(table)))


@cache
def get_settings(**overrides: Any) -> Settings:
    """The process's settings, read once."""
    return Settings(**overrides)
