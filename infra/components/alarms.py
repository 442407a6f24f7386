"""The SNS topic every alarm notifies, and who hears it.

Encryption is opt-in with a customer-managed key: CloudWatch alarms cannot publish to a topic
encrypted with the AWS-managed ``alias/aws/sns`` key (its key policy does not let CloudWatch
use it, and it cannot be edited), and alarm notifications carry no customer data.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from flashsale.names import ALARM_TOPIC, PROJECT


@dataclass(frozen=True)
class AlarmTopicArgs:
    stack: str
    email: str | None = None
    # Secret: a webhook URL embeds its token.
    webhook_url: pulumi.Input[str] | None = None
    # A customer-managed key whose policy grants cloudwatch.amazonaws.com Decrypt/GenerateDataKey*.
    kms_key_id: str | None = None


class AlarmTopic(pulumi.ComponentResource):
    """The alarm topic with its optional e-mail and HTTPS-webhook subscriptions."""

    topic: aws.sns.Topic

    def __init__(
        self, name: str, args: AlarmTopicArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("flashsale:monitoring:AlarmTopic", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.topic = aws.sns.Topic(
            name,
            name=f"{PROJECT}-{args.stack}-{ALARM_TOPIC}",
            kms_master_key_id=args.kms_key_id,
            opts=child,
        )
        if args.email:
            aws.sns.TopicSubscription(
                f"{name}-email",
                topic=self.topic.arn,
                protocol="email",
                endpoint=args.email,
                opts=child,
            )
        if args.webhook_url is not None:
            aws.sns.TopicSubscription(
                f"{name}-webhook",
                topic=self.topic.arn,
                protocol="https",
                endpoint=args.webhook_url,
                opts=child,
            )
        self.register_outputs({"arn": self.topic.arn})


ALARM_PERIOD_SECONDS = 60


@dataclass(frozen=True)
class AlarmRule:
    """What one alarm watches: ``metric`` (``statistic``) above ``threshold`` for ``periods``."""

    name: str
    namespace: str
    metric: str
    statistic: str
    threshold: int
    meaning: str
    periods: int = 1
    dimensions: dict[str, pulumi.Input[str]] | None = None


def notifying_alarm(
    resource_name: str, rule: AlarmRule, topic_arn: pulumi.Input[str], parent: pulumi.Resource
) -> aws.cloudwatch.MetricAlarm:
    """An alarm that notifies the topic when it fires and again when it is back to OK.

    Missing data does not breach: an idle queue or relay publishes nothing.
    """
    return aws.cloudwatch.MetricAlarm(
        resource_name,
        name=rule.name,
        alarm_description=f"{rule.metric} {rule.statistic} > {rule.threshold}: {rule.meaning}",
        namespace=rule.namespace,
        metric_name=rule.metric,
        dimensions=rule.dimensions,
        statistic=rule.statistic,
        period=ALARM_PERIOD_SECONDS,
        evaluation_periods=rule.periods,
        threshold=rule.threshold,
        comparison_operator="GreaterThanThreshold",
        treat_missing_data="notBreaching",
        alarm_actions=[topic_arn],
        ok_actions=[topic_arn],
        opts=pulumi.ResourceOptions(parent=parent),
    )
