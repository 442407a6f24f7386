"""The outbox relay's lag and parked alarms: on the relay's own metrics, to the alarm topic."""

from __future__ import annotations

from mocked_stack import ALARM, TOPIC, Declared, ProgramRun

from flashsale.names import METRICS_NAMESPACE, OUTBOX_LAG_METRIC, OUTBOX_PARKED_METRIC


def relay_alarm(run: ProgramRun, metric: str) -> Declared:
    alarms = run.find(
        ALARM,
        lambda d: d.inputs["namespace"] == METRICS_NAMESPACE and d.inputs["metricName"] == metric,
    )
    assert len(alarms) == 1, f"stack {run.stack}: {len(alarms)} alarms on {metric}"
    return alarms[0]


def assert_notifies_the_topic(run: ProgramRun, alarm: Declared) -> None:
    (topic,) = run.of_type(TOPIC)
    actions = [topic.state["arn"]]
    assert alarm.inputs["alarmActions"] == alarm.inputs["okActions"] == actions, alarm.name


def test_outbox_lag__max_over_a_minute_above_the_configured_seconds(run: ProgramRun) -> None:
    alarm = relay_alarm(run, OUTBOX_LAG_METRIC)
    inputs = alarm.inputs
    assert (
        inputs["statistic"],
        inputs["period"],
        inputs["comparisonOperator"],
        inputs["threshold"],
        inputs["treatMissingData"],
    ) == (
        "Maximum",
        60,
        "GreaterThanThreshold",
        run.config.outbox_lag_alarm_seconds,
        "notBreaching",
    ), f"alarm {alarm.name}"
    assert not inputs.get("dimensions"), f"alarm {alarm.name}: the relay publishes no dimensions"
    assert_notifies_the_topic(run, alarm)


def test_outbox_parked__any_parked_record_alarms(run: ProgramRun) -> None:
    alarm = relay_alarm(run, OUTBOX_PARKED_METRIC)
    inputs = alarm.inputs
    assert (inputs["statistic"], inputs["comparisonOperator"], inputs["threshold"]) == (
        "Sum",
        "GreaterThanThreshold",
        0,
    ), f"alarm {alarm.name}"
    assert not inputs.get("dimensions"), f"alarm {alarm.name}: the relay publishes no dimensions"
    assert_notifies_the_topic(run, alarm)


def test_relay_alarms__are_named_for_the_stack(run: ProgramRun) -> None:
    names = {relay_alarm(run, m).state["name"] for m in (OUTBOX_LAG_METRIC, OUTBOX_PARKED_METRIC)}
    assert names == {f"flashsale-{run.stack}-outbox-lag", f"flashsale-{run.stack}-outbox-parked"}
