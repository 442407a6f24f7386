"""The transactional outbox: events committed with the state they announce, then relayed.

Writers add records to their own DynamoDB transaction (``UnitOfWork.add_event`` or
``put_item``); ``python -m outbox.relay`` delivers them to their queues as Celery tasks.
The relay module is not imported here, so ``-m outbox.relay`` runs it exactly once.
"""

from __future__ import annotations

from outbox.exceptions import (
    DuplicateEvent,
    LeaseLost,
    OutboxError,
    RecordTooLarge,
    StoreError,
    TransactionConflict,
    TransactionFailed,
    TransactionTooLarge,
)
from outbox.records import OutboxRecord, put_item, shard_of
from outbox.store import UnitOfWork, check_transaction_limits

__all__ = [
    "DuplicateEvent",
    "LeaseLost",
    "OutboxError",
    "OutboxRecord",
    "RecordTooLarge",
    "StoreError",
    "TransactionConflict",
    "TransactionFailed",
    "TransactionTooLarge",
    "UnitOfWork",
    "check_transaction_limits",
    "put_item",
    "shard_of",
]
