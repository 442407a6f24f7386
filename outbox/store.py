"""The unit of work: the caller's business writes and their outbox records, one transaction.

Each write registers the domain error to raise if its condition fails; ``commit`` sends one
``TransactWriteItems`` and maps DynamoDB's cancellation reasons (one per item, in order) back to
those errors. Limits are checked before the call, so an oversized transaction fails with a
clear error rather than a ``ValidationException``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from botocore.exceptions import ClientError

from outbox.exceptions import (
    DuplicateEvent,
    TransactionConflict,
    TransactionFailed,
    TransactionTooLarge,
)
from outbox.records import OutboxRecord, item_size, put_item, value_size

MAX_TRANSACTION_ITEMS = 100
MAX_TRANSACTION_BYTES = 4 * 1024 * 1024

ErrorFactory = Callable[[], Exception]
_ACTIONS = ("Put", "Update", "Delete", "ConditionCheck")


def _action(entry: dict[str, Any]) -> dict[str, Any]:
    for name in _ACTIONS:
        if name in entry:
            return dict(entry[name])
    raise TransactionTooLarge(f"not a TransactItems entry: {sorted(entry)}")


def _target(action: dict[str, Any]) -> tuple[str, str]:
    return action["TableName"], json.dumps(action["Key"], sort_keys=True)


def entry_size(entry: dict[str, Any]) -> int:
    """What an entry adds to the transaction's size: its item, key and expression values."""
    action = _action(entry)
    size = item_size(action.get("Item", {})) + item_size(action.get("Key", {}))
    size += sum(value_size(v) for v in action.get("ExpressionAttributeValues", {}).values())
    for expression in ("ConditionExpression", "UpdateExpression"):
        size += len(str(action.get(expression, "")).encode())
    return size


def check_transaction_limits(items: Sequence[dict[str, Any]]) -> None:
    """Raise TransactionTooLarge if DynamoDB would refuse ``items`` as one transaction."""
    if not items:
        raise TransactionTooLarge("a transaction needs at least one item")
    if len(items) > MAX_TRANSACTION_ITEMS:
        raise TransactionTooLarge(
            f"{len(items)} items in one transaction; DynamoDB allows {MAX_TRANSACTION_ITEMS}"
        )
    total = sum(entry_size(entry) for entry in items)
    if total > MAX_TRANSACTION_BYTES:
        raise TransactionTooLarge(
            f"{total} bytes in one transaction; DynamoDB allows {MAX_TRANSACTION_BYTES}"
        )
    seen: set[tuple[str, str]] = set()
    for entry in items:
        action = _action(entry)
        if "Key" not in action:
            continue  # a Put's key cannot be told apart from its attributes without the schema
        target = _target(action)
        if target in seen:
            raise TransactionTooLarge(f"item {target[1]} of {target[0]} twice in a transaction")
        seen.add(target)


class UnitOfWork:
    """Writes collected for one ``TransactWriteItems``; a session, used once per commit.

    >>> uow = UnitOfWork(outbox_table="flashsale-dev-outbox", shards=8)
    >>> uow.add({"Update": {...}}, on_failure=lambda: SoldOut(event_id))
    >>> uow.add_event(OutboxRecord(...))
    >>> uow.commit(dynamodb)
    """

    def __init__(self, *, outbox_table: str, shards: int) -> None:
        self.outbox_table = outbox_table
        self.shards = shards
        self.items: list[dict[str, Any]] = []
        self.records: list[OutboxRecord] = []
        self._errors: list[ErrorFactory | None] = []

    def add(self, entry: dict[str, Any], on_failure: ErrorFactory | None = None) -> None:
        """Add a business write (a ``TransactItems`` entry); ``on_failure`` makes the error to
        raise if its condition fails (a ``ConditionCheck`` entry is a pure guard)."""
        _action(entry)
        self.items.append(entry)
        self._errors.append(on_failure)

    def add_event(self, record: OutboxRecord) -> None:
        """Add ``record`` as a conditional put; raises RecordTooLarge at once if it is."""
        entry = put_item(record, table=self.outbox_table, shards=self.shards)
        if any(
            (r.aggregate_id, r.sequence) == (record.aggregate_id, record.sequence)
            for r in self.records
        ):
            raise DuplicateEvent(
                f"outbox record {record.aggregate_id}#{record.sequence} twice in one unit of work"
            )

        def duplicate() -> Exception:
            return DuplicateEvent(
                f"outbox record {record.aggregate_id}#{record.sequence} exists already "
                f"(event {record.event_id})"
            )

        self.add(entry, duplicate)
        self.records.append(record)

    def commit(self, dynamodb: Any) -> None:
        """Commit every write at once, or none.

        Raises the registered error of the first item whose condition failed, DuplicateEvent
        for an outbox record written before, TransactionConflict if another transaction was in
        the way (retry), TransactionTooLarge before calling DynamoDB, TransactionFailed else.
        """
        check_transaction_limits(self.items)
        try:
            dynamodb.transact_write_items(TransactItems=self.items)
        except ClientError as exc:
            raise self._error_for(exc) from exc
        self.items, self.records, self._errors = [], [], []

    def _error_for(self, exc: ClientError) -> Exception:
        error = exc.response.get("Error", {})
        if error.get("Code") != "TransactionCanceledException":
            return TransactionFailed(f"{error.get('Code')}: {error.get('Message')}")
        reasons = exc.response.get("CancellationReasons") or []
        codes = [str(r.get("Code", "None")) for r in reasons]
        for code, factory in zip(codes, self._errors, strict=False):
            if code == "ConditionalCheckFailed" and factory is not None:
                return factory()
        if "TransactionConflict" in codes:
            return TransactionConflict("another transaction changed the same items; retry")
        return TransactionFailed(f"transaction cancelled: {codes or error.get('Message')}")
