"""``python -m outbox.parked``: see the records the relay gave up on, and send them again.

    python -m outbox.parked list                  every parked record, with its reason
    python -m outbox.parked requeue EVENT_ID...   back to pending (the relay sends it next round)

Parked records have left the pending index, so listing them is a scan with a filter: an
operator's command, run after the ``parked`` alarm, never something the relay does. Requeueing
puts the record back on its aggregate's shard with its attempts reset, only if it is still
parked; fix what made it undeliverable first (the reason says what SQS answered).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from flashsale import aws
from flashsale.dynamo import from_item
from flashsale.names import OUTBOX_PENDING_SHARD, OUTBOX_PK, OUTBOX_SK
from flashsale.settings import get_settings
from outbox.pending import record_key
from outbox.records import ATTEMPTS, PARKED, PARKED_REASON, shard_of


@dataclass(frozen=True)
class Parked:
    aggregate_id: str
    sequence: int
    event_id: str
    destination: str
    task: str
    attempts: int
    reason: str


def parked_records(dynamodb: Any, table: str) -> list[Parked]:
    """Every parked record of the outbox table (a filtered scan: operators only)."""
    kwargs: dict[str, Any] = {
        "TableName": table,
        "FilterExpression": "#parked = :true",
        "ExpressionAttributeNames": {"#parked": PARKED},
        "ExpressionAttributeValues": {":true": {"BOOL": True}},
    }
    found = []
    while True:
        page = dynamodb.scan(**kwargs)
        for item in map(from_item, page.get("Items", [])):
            found.append(
                Parked(
                    aggregate_id=item[OUTBOX_PK],
                    sequence=int(item[OUTBOX_SK]),
                    event_id=item["event_id"],
                    destination=item["destination"],
                    task=item["task"],
                    attempts=int(item.get(ATTEMPTS, 0)),
                    reason=str(item.get(PARKED_REASON, "")),
                )
            )
        if "LastEvaluatedKey" not in page:
            return sorted(found, key=lambda p: (p.aggregate_id, p.sequence))
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def requeue(dynamodb: Any, table: str, shards: int, records: Iterable[Parked]) -> int:
    """Put parked records back in the pending index; returns how many were still parked."""
    requeued = 0
    for record in records:
        try:
            dynamodb.update_item(
                TableName=table,
                Key=record_key((record.aggregate_id, record.sequence)),
                UpdateExpression="SET #shard = :shard, #attempts = :zero REMOVE #parked, #reason",
                ConditionExpression="#parked = :true",
                ExpressionAttributeNames={
                    "#shard": OUTBOX_PENDING_SHARD,
                    "#attempts": ATTEMPTS,
                    "#parked": PARKED,
                    "#reason": PARKED_REASON,
                },
                ExpressionAttributeValues={
                    ":shard": {"N": str(shard_of(record.aggregate_id, shards))},
                    ":zero": {"N": "0"},
                    ":true": {"BOOL": True},
                },
            )
        except dynamodb.exceptions.ConditionalCheckFailedException:
            continue  # requeued by someone else meanwhile
        requeued += 1
    return requeued


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m outbox.parked", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every parked record, with its reason")
    again = commands.add_parser("requeue", help="send parked records again")
    again.add_argument("event_ids", nargs="+", metavar="EVENT_ID")
    args = parser.parse_args(argv)
    settings, dynamodb, console = get_settings(), aws.client("dynamodb"), Console()
    parked = parked_records(dynamodb, settings.outbox_table)
    if args.command == "list":
        table = Table("event id", "aggregate", "seq", "destination", "task", "attempts", "reason")
        for p in parked:
            table.add_row(p.event_id, p.aggregate_id, str(p.sequence), p.destination, p.task,
                          str(p.attempts), p.reason)  # fmt: skip
        console.print(table)
        console.print(f"{len(parked)} parked")
        return 0
    wanted = set(args.event_ids)
    chosen = [p for p in parked if p.event_id in wanted]
    missing = wanted - {p.event_id for p in chosen}
    done = requeue(dynamodb, settings.outbox_table, settings.outbox_shards, chosen)
    console.print(
        f"requeued {done} of {len(wanted)}"
        + (f"; not parked: {sorted(missing)}" if missing else "")
    )
    return 0 if not missing else 1


if __name__ == "__main__":
    sys.exit(main())
