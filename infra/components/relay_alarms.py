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

ALARM_PERIOD_SECONDS = 60


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
        self.lag = self._alarm(
            f"{name}-lag",
            args,
            kind="lag",
            metric=OUTBOX_LAG_METRIC,
            statistic="Maximum",
            threshold=args.lag_alarm_seconds,
            meaning="committed outbox records wait too long: relay stuck, slow or too few",
        )
        self.parked = self._alarm(
            f"{name}-parked",
            args,
            kind="parked",
            metric=OUTBOX_PARKED_METRIC,
            statistic="Sum",
            threshold=0,
            meaning="the relay parked outbox records it cannot send: inspect and replay them",
        )
        self.register_outputs({"lag_alarm_arn": self.lag.arn, "parked_alarm_arn": self.parked.arn})

    def _alarm(
        self,
        name: str,
        args: RelayAlarmsArgs,
        *,
        kind: str,
        metric: str,
        statistic: str,
        threshold: int,
        meaning: str,
    ) -> aws.cloudwatch.MetricAlarm:
        """An alarm on one relay metric that notifies the topic on ALARM and back to OK."""
        topic = args.alarm_topic_arn
        return aws.cloudwatch.MetricAlarm(
            name,
            name=alarm_name(Table.OUTBOX.physical_name(args.stack), kind),
            alarm_description=f"{metric} {statistic} > {threshold}: {meaning}",
            namespace=METRICS_NAMESPACE,
            metric_name=metric,
            statistic=statistic,
            period=ALARM_PERIOD_SECONDS,
            evaluation_periods=1,
            threshold=threshold,
            comparison_operator="GreaterThanThreshold",
            treat_missing_data="notBreaching",
            alarm_actions=[topic],
            ok_actions=[topic],
            opts=pulumi.ResourceOptions(parent=self),
        )
