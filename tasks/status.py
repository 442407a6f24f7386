"""``python -m tasks.status``: the stack at a glance, in one table.

One row per work queue and per DLQ: messages visible, in flight and delayed, the age of the
oldest (from CloudWatch, ``-`` where it publishes none, as on LocalStack), and the CloudWatch
alarms watching that queue with their states. Then the outbox (records not yet dispatched and
the age of the oldest: the relay's lag) and the sagas that are not final, by state, each with
its alarms. Exit status 0, or 2 on an AWS error.

Each group of rows comes from a probe in ``PROBES``. The outbox and saga rows read only the
sparse indexes (what is pending, what is active), never a whole table.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich.table import Table
from rich.text import Text

from flashsale.names import (
    OUTBOX_CREATED_AT,
    OUTBOX_PENDING_INDEX,
    OUTBOX_PENDING_SHARD,
    SAGAS_ACTIVE_INDEX,
    SAGAS_ACTIVE_SHARD,
    QueueRole,
    alarm_name_prefix,
)
from tasks.operator import (
    Operator,
    format_age,
    oldest_message_age,
    queue_depth,
    queue_name,
    run_command,
)

ALARM_STYLES = {"OK": "green", "ALARM": "bold red", "INSUFFICIENT_DATA": "yellow"}


@dataclass(frozen=True)
class Alarm:
    name: str
    kind: str  # the name without the queue's prefix: dlq-depth, backlog, ...
    state: str
    watched_queue: str | None  # the QueueName dimension of an SQS alarm


@dataclass(frozen=True)
class StatusRow:
    """One line of the table; a figure a component does not have is ``None`` (shown "-")."""

    component: str
    visible: int | None = None
    in_flight: int | None = None
    delayed: int | None = None
    oldest_age_seconds: float | None = None
    alarms: list[Alarm] = field(default_factory=list)


Probe = Callable[[Operator], Iterator[StatusRow]]


def queue_alarms(cloudwatch: Any, work_queue_url: str) -> list[Alarm]:
    """The alarms of a work queue and its DLQ, found by the name prefix the Pulumi component
    gives them (``flashsale.names.alarm_name``)."""
    prefix = alarm_name_prefix(queue_name(work_queue_url))
    alarms = []
    for page in cloudwatch.get_paginator("describe_alarms").paginate(AlarmNamePrefix=prefix):
        for alarm in page.get("MetricAlarms", []):
            dimensions = {d["Name"]: d["Value"] for d in alarm.get("Dimensions", [])}
            watched = dimensions.get("QueueName")
            name = alarm["AlarmName"]
            alarms.append(Alarm(name, name.removeprefix(prefix), alarm["StateValue"], watched))
    return alarms


def queue_rows(ops: Operator) -> Iterator[StatusRow]:
    """Each work queue, then its DLQ; each alarm on the row of the queue it watches."""
    for role in QueueRole:
        work_url, dlq_url = ops.settings.queue_url(role), ops.settings.dlq_url(role)
        alarms = queue_alarms(ops.cloudwatch, work_url)
        dlq_name = queue_name(dlq_url)
        for label, url in ((role.value, work_url), (f"{role.value} DLQ", dlq_url)):
            depth = queue_depth(ops.sqs, url)
            if url == dlq_url:
                watching = [a for a in alarms if a.watched_queue == dlq_name]
            else:  # the work queue's own alarms, and any of the role not on a queue metric
                watching = [a for a in alarms if a.watched_queue != dlq_name]
            yield StatusRow(
                component=label,
                visible=depth.visible,
                in_flight=depth.in_flight,
                delayed=depth.delayed,
                oldest_age_seconds=oldest_message_age(ops.cloudwatch, url),
                alarms=watching,
            )


def _index_items(ops: Operator, table: str, index: str, shard_key: str, shards: int) -> list[Any]:
    """Every item of a sharded sparse index (its projection is the whole item)."""
    items: list[Any] = []
    for shard in range(shards):
        kwargs: dict[str, Any] = {
            "TableName": table,
            "IndexName": index,
            "KeyConditionExpression": "#shard = :shard",
            "ExpressionAttributeNames": {"#shard": shard_key},
            "ExpressionAttributeValues": {":shard": {"N": str(shard)}},
        }
        while True:
            page = ops.dynamodb.query(**kwargs)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return items


def _alarms_named(ops: Operator, table: str) -> list[Alarm]:
    prefix = alarm_name_prefix(table)
    found = ops.cloudwatch.describe_alarms(AlarmNamePrefix=prefix).get("MetricAlarms", [])
    return [
        Alarm(a["AlarmName"], a["AlarmName"].removeprefix(prefix), a["StateValue"], None)
        for a in found
    ]


def outbox_rows(ops: Operator) -> Iterator[StatusRow]:
    """Records committed and not yet dispatched, and how long the oldest has waited."""
    if ops.dynamodb is None:
        return
    settings = ops.settings
    items = _index_items(
        ops,
        settings.outbox_table,
        OUTBOX_PENDING_INDEX,
        OUTBOX_PENDING_SHARD,
        settings.outbox_shards,
    )
    oldest = min((i[OUTBOX_CREATED_AT]["S"] for i in items), default=None)
    age = None
    if oldest is not None:
        created = datetime.strptime(oldest, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        age = (datetime.now(UTC) - created).total_seconds()
    yield StatusRow(
        component="outbox (pending)",
        visible=len(items),
        oldest_age_seconds=age,
        alarms=_alarms_named(ops, settings.outbox_table),
    )


def saga_rows(ops: Operator) -> Iterator[StatusRow]:
    """Sagas that are not final, one row per state; the quarantine alarm on its row."""
    if ops.dynamodb is None:
        return
    settings = ops.settings
    items = _index_items(
        ops, settings.sagas_table, SAGAS_ACTIVE_INDEX, SAGAS_ACTIVE_SHARD, settings.saga_shards
    )
    counts = Counter(i["status"]["S"] for i in items)
    alarms = _alarms_named(ops, settings.sagas_table)
    for status in ("running", "compensating", "quarantined"):
        yield StatusRow(
            component=f"sagas {status}",
            visible=counts[status],
            alarms=[a for a in alarms if a.kind == status],
        )


# Everything the table shows, in order.
PROBES: tuple[Probe, ...] = (queue_rows, outbox_rows, saga_rows)


def status_table(rows: list[StatusRow]) -> Table:
    table = Table(title="flashsale status", caption="alarm names: <queue name>-<kind>")
    table.add_column("component", no_wrap=True)
    for column in ("visible", "in flight", "delayed", "oldest"):
        table.add_column(column, justify="right")
    table.add_column("alarms", no_wrap=True)
    for row in rows:
        alarms = Text()
        for n, alarm in enumerate(sorted(row.alarms, key=lambda a: a.name)):
            alarms.append("\n" if n else "")
            alarms.append(f"{alarm.kind} ")
            alarms.append(alarm.state, style=ALARM_STYLES.get(alarm.state, ""))
        table.add_row(
            row.component,
            *(_count(value) for value in (row.visible, row.in_flight, row.delayed)),
            format_age(row.oldest_age_seconds),
            alarms if row.alarms else Text("-"),
        )
    return table


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def show_status(ops: Operator, args: argparse.Namespace) -> int:
    rows = [row for probe in PROBES for row in probe(ops)]
    ops.console.print(status_table(rows))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tasks.status", description=__doc__)
    parser.set_defaults(run=show_status)
    return parser


def main(argv: list[str] | None = None, *, ops: Operator | None = None) -> int:
    return run_command(_parser(), argv, ops)


if __name__ == "__main__":
    sys.exit(main())
