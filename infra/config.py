"""The stack's configuration, read once into a dataclass.

Stack config (``Pulumi.<stack>.yaml``) is the only knob: ``__main__`` reads it here and hands
plain values to the components, which never read config themselves. Task time limits are not
config: Celery and this program both take them from ``flashsale.names`` so they cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from flashsale.names import PROJECT, TASK_TIME_LIMIT_SECONDS, QueueRole

DAY_SECONDS = 86_400
SQS_MAX_RETENTION_DAYS = 14


@dataclass(frozen=True)
class InfraConfig:
    """Everything the program may vary per stack; defaults are the production choices."""

    stack: str
    region: str
    sender_email: str
    max_receive_count: int = 3
    # Visibility timeout = the task's hard time limit + this margin (time to ack after finishing).
    visibility_margin_seconds: int = 30
    dlq_retention_days: int = SQS_MAX_RETENTION_DAYS
    backlog_alarm_threshold: int = 1_000
    oldest_message_age_alarm_seconds: int = 300
    # The relay's OutboxLagSeconds above this (seconds) alarms.
    outbox_lag_alarm_seconds: int = 120
    deletion_protection: bool = True
    point_in_time_recovery: bool = True
    alarm_email: str | None = None
    # A chat/paging webhook URL carries its token, so it is a Pulumi config secret.
    alarm_webhook_url: pulumi.Output[str] | None = None
    alarm_topic_kms_key_id: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.max_receive_count <= 1000:
            raise ValueError(f"maxReceiveCount must be 1..1000, got {self.max_receive_count}")
        if not 1 <= self.dlq_retention_days <= SQS_MAX_RETENTION_DAYS:
            raise ValueError(f"dlqRetentionDays must be 1..14, got {self.dlq_retention_days}")

    @classmethod
    def load(cls, stack: str) -> InfraConfig:
        """Read ``aws:region`` and the ``flashsale:*`` keys of the running stack."""
        config = pulumi.Config(PROJECT)
        return cls(
            stack=stack,
            region=pulumi.Config("aws").require("region"),
            sender_email=config.require("senderEmail"),
            max_receive_count=config.get_int("maxReceiveCount", cls.max_receive_count),
            visibility_margin_seconds=config.get_int(
                "visibilityMarginSeconds", cls.visibility_margin_seconds
            ),
            dlq_retention_days=config.get_int("dlqRetentionDays", cls.dlq_retention_days),
            backlog_alarm_threshold=config.get_int(
                "backlogAlarmThreshold", cls.backlog_alarm_threshold
            ),
            oldest_message_age_alarm_seconds=config.get_int(
                "oldestMessageAgeAlarmSeconds", cls.oldest_message_age_alarm_seconds
            ),
            outbox_lag_alarm_seconds=config.get_int(
                "outboxLagAlarmSeconds", cls.outbox_lag_alarm_seconds
            ),
            deletion_protection=config.get_bool("deletionProtection", cls.deletion_protection),
            point_in_time_recovery=config.get_bool(
                "pointInTimeRecovery", cls.point_in_time_recovery
            ),
            alarm_email=config.get("alarmEmail"),
            alarm_webhook_url=config.get_secret("alarmWebhookUrl"),
            alarm_topic_kms_key_id=config.get("alarmTopicKmsKeyId"),
        )

    @staticmethod
    def time_limit(role: QueueRole) -> int:
        """The hard time limit Celery enforces on the role's task."""
        return TASK_TIME_LIMIT_SECONDS[role]

    def visibility_timeout(self, role: QueueRole) -> int:
        return self.time_limit(role) + self.visibility_margin_seconds

    @property
    def dlq_retention_seconds(self) -> int:
        return self.dlq_retention_days * DAY_SECONDS
