"""The relay's DynamoDB adapter: read pending records, mark them, count failures, park.

Every write for a shard's records is a transaction that also checks the shard's lease (owner
and token, ``Leases.fence``): a relay that lost the lease cannot mark, fail or park anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from flashsale.names import (
    OUTBOX_PENDING_INDEX,
    OUTBOX_PENDING_SHARD,
    OUTBOX_PK,
    OUTBOX_SK,
)
from outbox.exceptions import LeaseLost, StoreError
from outbox.ordering import Key, Pending, State, to_pending
from outbox.records import (
    ATTEMPTS,
    DELAY_SECONDS,
    DISPATCHED_AT,
    DISPATCHES,
    LAST_ERROR,
    PARKED,
    PARKED_REASON,
    RETRY_AFTER,
)

_CONDITION_FAILED = "ConditionalCheckFailed"
_BATCH_GET_KEYS = 100
MARKS_PER_TRANSACTION = 99  # plus the lease check: DynamoDB's 100


def record_key(key: Key) -> dict[str, Any]:
    return {OUTBOX_PK: {"S": key[0]}, OUTBOX_SK: {"N": str(key[1])}}


def _state(item: dict[str, Any]) -> State:
    if OUTBOX_PENDING_SHARD in item:
        return State(pending=True)
    delay = float(item.get(DELAY_SECONDS, {}).get("N", "0"))
    sent = float(item.get(DISPATCHED_AT, {}).get("N", "0"))
    return State(pending=False, visible_at=sent + delay if delay and sent else 0.0)


@dataclass
class MarkResult:
    marked: list[Pending] = field(default_factory=list)
    duplicates: list[Pending] = field(default_factory=list)  # already marked by another send


class PendingStore:
    """Reads and fenced writes of outbox records, over an injected DynamoDB client."""

    def __init__(self, dynamodb: Any, table: str) -> None:
        self._ddb = dynamodb
        self._table = table

    def oldest(self, shard: int, limit: int) -> list[Pending]:
        """Up to ``limit`` pending records of ``shard``, oldest first (one Query, no scan)."""
        try:
            response = self._ddb.query(
                TableName=self._table,
                IndexName=OUTBOX_PENDING_INDEX,
                KeyConditionExpression="#shard = :shard",
                ExpressionAttributeNames={"#shard": OUTBOX_PENDING_SHARD},
                ExpressionAttributeValues={":shard": {"N": str(shard)}},
                ScanIndexForward=True,
                Limit=limit,
            )
        except ClientError as exc:
            raise StoreError(f"querying shard {shard}: {exc}") from exc
        return [to_pending(item) for item in response.get("Items", [])]

    def states(self, keys: Iterable[Key]) -> dict[Key, State]:
        """A consistent read of whether each key is pending and, once dispatched with a delay,
        when its message turns visible (absent keys are left out)."""
        wanted = list(dict.fromkeys(keys))
        out: dict[Key, State] = {}
        for start in range(0, len(wanted), _BATCH_GET_KEYS):
            request: dict[str, Any] = {
                self._table: {
                    "Keys": [record_key(k) for k in wanted[start : start + _BATCH_GET_KEYS]],
                    "ConsistentRead": True,
                    "ProjectionExpression": "#pk, #sk, #shard, #at, #delay",
                    "ExpressionAttributeNames": {
                        "#pk": OUTBOX_PK,
                        "#sk": OUTBOX_SK,
                        "#shard": OUTBOX_PENDING_SHARD,
                        "#at": DISPATCHED_AT,
                        "#delay": DELAY_SECONDS,
                    },
                }
            }
            while request:
                try:
                    response = self._ddb.batch_get_item(RequestItems=request)
                except ClientError as exc:
                    raise StoreError(f"reading record state: {exc}") from exc
                for item in response.get("Responses", {}).get(self._table, []):
                    key = (item[OUTBOX_PK]["S"], int(item[OUTBOX_SK]["N"]))
                    out[key] = _state(item)
                request = response.get("UnprocessedKeys") or {}
        return out

    def mark_dispatched(
        self, fence: dict[str, Any], sent: Sequence[Pending], now: float
    ) -> MarkResult:
        """Mark ``sent`` dispatched; raises LeaseLost if the fence fails (nothing is marked).

        A record some other send marked first is a duplicate delivery: it is reported and the
        rest are marked without it.
        """
        result = MarkResult()
        for start in range(0, len(sent), MARKS_PER_TRANSACTION):
            chunk = list(sent[start : start + MARKS_PER_TRANSACTION])
            while chunk:
                updates = [self._mark(p, now) for p in chunk]
                failed = self._transact(fence, updates)
                if failed is None:
                    result.marked.extend(chunk)
                    break
                result.duplicates.extend(chunk[i] for i in failed)
                chunk = [p for i, p in enumerate(chunk) if i not in failed]
        return result

    def record_failure(
        self,
        fence: dict[str, Any],
        pending: Pending,
        error: str,
        *,
        retry_after: float,
        park: bool,
        counted: bool = True,
    ) -> bool:
        """Record a failed send (counted towards parking if ``counted``); park the record (out
        of the pending index) if ``park``.

        Returns False if the record was no longer pending (someone else dispatched it).
        """
        values: dict[str, Any] = {
            ":one": {"N": "1" if counted else "0"},
            ":error": {"S": error[:1000]},
        }
        names = {"#shard": OUTBOX_PENDING_SHARD, "#attempts": ATTEMPTS, "#error": LAST_ERROR}
        if park:
            names |= {"#parked": PARKED, "#reason": PARKED_REASON}
            values[":true"] = {"BOOL": True}
            expression = (
                "REMOVE #shard SET #attempts = #attempts + :one, #error = :error, "
                "#parked = :true, #reason = :error"
            )
        else:
            names["#retry"] = RETRY_AFTER
            values[":retry"] = {"N": f"{retry_after:.3f}"}
            expression = "SET #attempts = #attempts + :one, #error = :error, #retry = :retry"
        update = {
            "Update": {
                "TableName": self._table,
                "Key": record_key(pending.key),
                "UpdateExpression": expression,
                "ConditionExpression": "attribute_exists(#shard)",
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }
        return self._transact(fence, [update]) is None

    def _mark(self, pending: Pending, now: float) -> dict[str, Any]:
        return {
            "Update": {
                "TableName": self._table,
                "Key": record_key(pending.key),
                "UpdateExpression": (
                    "REMOVE #shard, #retry SET #at = :now, #dispatches = #dispatches + :one"
                ),
                "ConditionExpression": "attribute_exists(#shard)",
                "ExpressionAttributeNames": {
                    "#shard": OUTBOX_PENDING_SHARD,
                    "#retry": RETRY_AFTER,
                    "#at": DISPATCHED_AT,
                    "#dispatches": DISPATCHES,
                },
                "ExpressionAttributeValues": {
                    ":now": {"N": f"{now:.3f}"},
                    ":one": {"N": "1"},
                },
            }
        }

    def _transact(self, fence: dict[str, Any], updates: list[dict[str, Any]]) -> set[int] | None:
        """Run fence + updates; None if committed, else the indexes of updates whose condition
        failed. Raises LeaseLost if the fence failed, StoreError on anything else."""
        try:
            self._ddb.transact_write_items(TransactItems=[fence, *updates])
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") != "TransactionCanceledException":
                raise StoreError(f"marking records: {error.get('Code')}") from exc
            codes = [
                str(r.get("Code", "None")) for r in exc.response.get("CancellationReasons", [])
            ]
            if codes and codes[0] == "ConditionalCheckFailed":
                raise LeaseLost("the shard's lease moved to another relay") from exc
            failed = {
                i - 1 for i, code in enumerate(codes) if i and code == "ConditionalCheckFailed"
            }
            if not failed:
                raise StoreError(f"marking records: cancelled {codes}") from exc
            return failed
        return None
