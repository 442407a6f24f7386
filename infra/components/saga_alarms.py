"""The saga's alarm: any saga quarantined, waiting for an operator.

The sweeper (``python -m saga sweep``) publishes ``SagasQuarantined`` (a gauge, no
dimensions) in ``METRICS_NAMESPACE`` about once a minute.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from flashsale.names import METRICS_NAMESPACE, SAGAS_QUARANTINED_METRIC, Table, alarm_name
from infra.components.alarms import AlarmRule, notifying_alarm


@dataclass(frozen=True)
class SagaAlarmsArgs:
    stack: str
    alarm_topic_arn: pulumi.Input[str]


class SagaAlarms(pulumi.ComponentResource):
    """A quarantined saga notifies the topic (``python -m saga list`` shows which)."""

    quarantined: aws.cloudwatch.MetricAlarm

    def __init__(
        self, name: str, args: SagaAlarmsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("flashsale:saga:SagaAlarms", name, None, opts)
        rule = AlarmRule(
            name=alarm_name(Table.SAGAS.physical_name(args.stack), "quarantined"),
            namespace=METRICS_NAMESPACE,
            metric=SAGAS_QUARANTINED_METRIC,
            statistic="Maximum",
            threshold=0,
            meaning="a saga could not compensate and waits for an operator: python -m saga list",
        )
        self.quarantined = notifying_alarm(f"{name}-quarantined", rule, args.alarm_topic_arn, self)
        self.register_outputs({"quarantined_alarm_arn": self.quarantined.arn})
