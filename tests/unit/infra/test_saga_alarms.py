"""The saga's quarantine alarm: on the sweeper's gauge, to the alarm topic."""

from __future__ import annotations

from mocked_stack import ProgramRun
from test_relay_alarms import assert_notifies_the_topic, relay_alarm

from flashsale.names import SAGAS_QUARANTINED_METRIC


def test_quarantined_sagas__any_one_alarms(run: ProgramRun) -> None:
    alarm = relay_alarm(run, SAGAS_QUARANTINED_METRIC)

    inputs = alarm.inputs
    assert (inputs["statistic"], inputs["threshold"]) == ("Maximum", 0), alarm.name
    assert inputs["comparisonOperator"] == "GreaterThanThreshold", alarm.name
    assert not inputs.get("dimensions"), f"alarm {alarm.name}: the sweeper publishes none"
    assert inputs["name"] == f"flashsale-{run.stack}-sagas-quarantined"
    assert_notifies_the_topic(run, alarm)
