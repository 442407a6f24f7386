"""Which pending records may go out this round, and how they are packed into SQS batches.

Pure functions, unit-tested without AWS. Per-aggregate order is kept by sending at most one
record per aggregate per round, the lowest pending sequence, and only once the record before
it (``sequence - 1``) is no longer pending, as read consistently from the table: the pending
index is eventually consistent and sorted by creation time, so it alone proves neither. A
predecessor sent with ``delay_seconds`` also holds its successor back until its message is
visible, so a delayed event is not overtaken by the next one on a standard queue.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from flashsale.dynamo import from_item
from flashsale.names import QueueRole
from outbox.records import ATTEMPTS, RETRY_AFTER, OutboxRecord

Key = tuple[str, int]  # (aggregate_id, sequence)

SQS_BATCH_ENTRIES = 10


@dataclass(frozen=True)
class Pending:
    """A record read from the pending index, with its delivery state."""

    record: OutboxRecord
    attempts: int = 0
    retry_after: float = 0.0

    @property
    def key(self) -> Key:
        return (self.record.aggregate_id, self.record.sequence)


def heads(pending: Iterable[Pending], now: float) -> list[Pending]:
    """The lowest-sequence record of each aggregate, oldest first; an aggregate whose head is
    backing off after a failed send waits (its later records must not overtake it)."""
    lowest: dict[str, Pending] = {}
    for item in pending:
        current = lowest.get(item.record.aggregate_id)
        if current is None or item.record.sequence < current.record.sequence:
            lowest[item.record.aggregate_id] = item
    chosen = [p for p in lowest.values() if p.retry_after <= now]
    return sorted(chosen, key=lambda p: (p.record.created_at, p.key))


@dataclass(frozen=True)
class State:
    """A consistent read of one record: still pending, or dispatched (or parked)."""

    pending: bool
    visible_at: float = 0.0  # epoch seconds its delayed message turns visible (dispatched_at
    # + delay_seconds); 0 for a record sent without a delay


def predecessor(key: Key) -> Key | None:
    aggregate_id, sequence = key
    return (aggregate_id, sequence - 1) if sequence > 1 else None


def ready(candidates: Iterable[Pending], states: Mapping[Key, State], now: float) -> list[Pending]:
    """Candidates that are still pending and whose predecessor is neither pending nor, sent
    with a delay, still invisible at ``now``.

    ``states`` is a consistent read of the candidates and their predecessors: a missing key
    counts as not pending (a predecessor that expired, or a candidate that vanished).
    """
    out = []
    for candidate in candidates:
        state = states.get(candidate.key)
        if state is None or not state.pending:
            continue  # dispatched or parked since the index was read
        before = predecessor(candidate.key)
        prior = states.get(before) if before is not None else None
        if prior is not None and (prior.pending or prior.visible_at > now):
            continue  # the aggregate's earlier event is still on its way
        out.append(candidate)
    return out


def batches(
    records: Iterable[Pending], *, byte_limit: int, entry_limit: int = SQS_BATCH_ENTRIES
) -> Iterator[tuple[QueueRole, list[Pending]]]:
    """``SendMessageBatch`` loads per destination: at most ``entry_limit`` entries whose bodies
    add up to at most ``byte_limit`` bytes (SQS limits the whole batch, not only each message).
    """
    by_destination: dict[QueueRole, list[Pending]] = {}
    for item in records:
        by_destination.setdefault(item.record.destination, []).append(item)
    for destination, items in by_destination.items():
        batch: list[Pending] = []
        size = 0
        for item in items:
            message = item.record.message_size
            if batch and (len(batch) == entry_limit or size + message > byte_limit):
                yield destination, batch
                batch, size = [], 0
            batch.append(item)
            size += message
        if batch:
            yield destination, batch


def to_pending(item: Mapping[str, Any]) -> Pending:
    """A pending-index item (every attribute projected) as a :class:`Pending`."""
    values = from_item(item)
    return Pending(
        record=OutboxRecord.from_item(item),
        attempts=int(values.get(ATTEMPTS, 0)),
        retry_after=float(values.get(RETRY_AFTER, 0)),
    )
