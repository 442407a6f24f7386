"""The outbox relay's alarms: records waiting too long, and records parked.

The relay publishes its metrics without dimensions in ``METRICS_NAMESPACE``; the metric names
come from ``flashsale.names`` so the alarms watch exactly what the relay puts.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from flashsale.names import (
    METRICS_NAMESPACE,
    OUTBOX_LAG_METRIC,
    OUTBOX_PARKED_METRIC,
    Table,
    alarm_name,
)
from infra.components.alarms import AlarmRule, notifying_alarm


@dataclass(frozen=True)
class RelayAlarmsArgs:
    stack: str
    lag_alarm_seconds: int
    alarm_topic_arn: pulumi.Input[str]


class RelayAlarms(pulumi.ComponentResource):
    """Outbox lag above the configured seconds, and any parked record, notify the topic."""

    lag: aws.cloudwatch.MetricAlarm
    parked: aws.cloudwatch.MetricAlarm

    def __init__(
        self, name: str, args: RelayAlarmsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("flashsale:outbox:RelayAlarms", name, None, opts)
        outbox = Table.OUTBOX.physical_name(args.stack)
        lag = AlarmRule(
            name=alarm_name(outbox, "lag"),
            namespace=METRICS_NAMESPACE,
            metric=OUTBOX_LAG_METRIC,
            statistic="Maximum",
            threshold=args.lag_alarm_seconds,
            meaning="committed outbox records wait too long: relay stuck, slow or too few",
        )
        parked = AlarmRule(
            name=alarm_name(outbox, "parked"),
            namespace=METRICS_NAMESPACE,
            metric=OUTBOX_PARKED_METRIC,
            statistic="Sum",
            threshold=0,
            meaning="the relay parked outbox records it cannot send: inspect and replay them",
        )
        self.lag = notifying_alarm(f"{name}-lag", lag, args.alarm_topic_arn, self)
        self.parked = notifying_alarm(f"{name}-parked", parked, args.alarm_topic_arn, self)
        self.register_outputs({"lag_alarm_arn": self.lag.arn, "parked_alarm_arn": self.parked.arn})
