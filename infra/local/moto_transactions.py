"""Make moto's TransactWriteItems cost what the transaction touches, not what the table holds.

moto 5.2.5 (``DynamoDBBackend.transact_write_items``) backs up each table a transaction names
with ``copy.deepcopy(table)`` -- once per *item* in the transaction, stream records included --
so it can restore the table if the transaction is cancelled. Measured through the emulator:
a 40-item transaction took 16 ms on an empty table, 625 ms at 1,000 items and 2.8 s at 5,000;
a sale writing an order per buyer would grind the (serialized) emulator to a halt, and the
slowdown would be blamed on the system under test.

The patch keeps moto's own transaction logic and swaps only the backup: an undo journal of the
items the transaction can touch (deep copies of those items alone) and of each stream's length.
moto's whole-table copies are turned into no-ops for the duration of the call, so its own
"restore" reassigns the live table, and the journal then puts back the touched items and drops
the stream records the cancelled transaction wrote. Requests are serialized by the emulator
(``dynamodb_server``), so nothing else runs between the journal and the transaction.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

_PATCHED = "_flashsale_journaled"


class _State:
    skip_table_copies = False


@dataclass
class _Journal:
    """What to put back if the transaction is cancelled."""

    items: list[tuple[Any, Any, Any, Any]] = field(default_factory=list)  # table, hash, range, item
    streams: list[tuple[Any, int]] = field(default_factory=list)  # shard, length before

    @classmethod
    def record(cls, backend: Any, transact_items: list[dict[str, Any]]) -> _Journal:
        journal = cls()
        seen_streams: set[int] = set()
        for entry in transact_items:
            if not isinstance(entry, Mapping) or len(entry) != 1:
                continue  # moto rejects it before writing anything
            _, op = next(iter(entry.items()))
            table = backend.tables.get(op.get("TableName")) if isinstance(op, Mapping) else None
            if table is None:
                continue
            key = op.get("Key") or _key_of(table, op.get("Item") or {})
            try:
                hash_value, range_value = backend.get_keys_value(table, key)
            except Exception:
                continue  # an invalid key fails in moto before this entry writes
            original = table.get_item(hash_value, range_value)
            journal.items.append((table, hash_value, range_value, copy.deepcopy(original)))
            shard = table.stream_shard
            if shard is not None and id(shard) not in seen_streams:
                seen_streams.add(id(shard))
                journal.streams.append((shard, len(shard.items)))
        return journal

    def undo(self) -> None:
        for table, hash_value, range_value, original in reversed(self.items):
            if range_value is not None:
                bucket = table.items[hash_value]
                if original is None:
                    bucket.pop(range_value, None)
                else:
                    bucket[range_value] = original
            elif original is None:
                table.items.pop(hash_value, None)
            else:
                table.items[hash_value] = original
        for shard, length in self.streams:
            del shard.items[length:]


def _key_of(table: Any, item: Mapping[str, Any]) -> dict[str, Any]:
    names = [table.hash_key_attr] + ([table.range_key_attr] if table.range_key_attr else [])
    return {name: item[name] for name in names if name in item}


class _CopyModule:
    """``copy`` as moto's DynamoDB models module sees it: tables are not copied in a journaled
    transaction (the journal is the backup), everything else is copied as usual."""

    def __init__(self, real: ModuleType, table_type: type) -> None:
        self._real = real
        self._table_type = table_type

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def deepcopy(self, value: Any, memo: dict[int, Any] | None = None) -> Any:
        if _State.skip_table_copies and isinstance(value, self._table_type):
            return value
        return self._real.deepcopy(value, memo)


def install() -> None:
    """Patch moto's DynamoDB backend (idempotent); call before serving requests."""
    from moto.dynamodb import models
    from moto.dynamodb.models.table import Table

    backend_type = models.DynamoDBBackend
    if getattr(backend_type.transact_write_items, _PATCHED, False):
        return
    original = backend_type.transact_write_items
    models.copy = _CopyModule(copy, Table)  # type: ignore[assignment]

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        journal = _Journal.record(self, transact_items)
        _State.skip_table_copies = True
        try:
            original(self, transact_items)
        except BaseException:
            journal.undo()
            raise
        finally:
            _State.skip_table_copies = False

    setattr(transact_write_items, _PATCHED, True)
    transact_write_items.__doc__ = original.__doc__
    backend_type.transact_write_items = transact_write_items  # type: ignore[method-assign]
