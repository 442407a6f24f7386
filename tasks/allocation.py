"""Seat allocation: one batch of requests, one DynamoDB transaction, no oversell.

Why it holds under any concurrency or redelivery:

* the seat counter is updated with a condition on the value we read (``sold = :read``) and on
  capacity, so two writers cannot both spend the same seats — the loser re-reads and retries;
* each order is put with ``attribute_not_exists``, in the same transaction, so a request id
  can never become two orders, and a redelivered batch changes nothing;
* requests are decided in the batch's order (the intake's acceptance order), and batches of
  one event arrive one at a time from the FIFO queue: first come, first served;
* a confirmed seat is a *hold*: its purchase saga (state and first command, through the
  outbox) is created in the same transaction, so no seat is held without a saga to finish or
  release it.

Why a batch usually costs one call. Deciding a batch needs the exact seat count only when the
batch straddles the edge (some of its buyers get seats, some do not). Far from the edge, "every
buyer gets a seat" holds for any count up to ``capacity - seats``, and past it "nobody does"
holds for any count above ``capacity - smallest request``. So the allocator guesses the regime
from the count it last saw for the event (its own read or write; another worker may have sold
since) and writes with that range as the counter's condition, without reading. A wrong guess,
or an order that already exists (a redelivered batch, a request id seen in an earlier batch),
cancels the transaction, and the retry reads first and decides exactly against the count it
read. The conditions, not the guess, keep the invariants; the guess only saves the
``BatchGetItem`` when it is right, which two workers taking turns on one event do not spoil.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from tenacity import (
    retry,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from flashsale.dynamo import cancellation_codes, from_item, to_item
from flashsale.messages import AcceptedRequest, Fulfilment, OrderStatus, PurchaseBatch
from flashsale.names import INVENTORY_PK, ORDERS_PK
from tasks.exceptions import ConcurrentAllocation

# Codes for which a cancelled transaction is worth re-reading and retrying.
_RETRYABLE_CANCELLATIONS = {"ConditionalCheckFailed", "TransactionConflict"}

# DynamoDB errors that say "not now" rather than "no": worth waiting out inside the task.
_TRANSIENT_CODES = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
}
# Longest a batch waits out DynamoDB trouble before its task fails (the task's soft limit is
# 25 s). Failing is what breaks first come, first served: the later batches of the event that
# the worker already received would run before this one's redelivery.
TRANSIENT_PATIENCE_SECONDS = 20.0


def transient_dynamodb_error(exc: BaseException) -> bool:
    if isinstance(exc, BotoCoreError):  # no connection, read timeout
        return True
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        return error.get("Code") in _TRANSIENT_CODES or status >= 500
    return False


# Each DynamoDB call of a batch waits out transient trouble (a write that happened but whose
# answer was lost is harmless: the retry's conditions see it and re-read).
_patient = retry(
    retry=retry_if_exception(transient_dynamodb_error),
    wait=wait_random_exponential(multiplier=0.1, max=2.0),
    stop=stop_after_delay(TRANSIENT_PATIENCE_SECONDS),
    reraise=True,
)

# Events whose last written counter an allocator remembers (least recently used dropped).
KNOWN_EVENTS = 1024

# The transaction entries that start a confirmed order's saga (see tasks.purchase_saga).
SagaStarter = Callable[[str, AcceptedRequest], list[dict[str, Any]]]


@dataclass
class Decision:
    request: AcceptedRequest
    status: OrderStatus
    reason: str = ""


@dataclass
class BatchOutcome:
    """What one batch did; ``duplicates`` had been decided before (retry or redelivery)."""

    event_id: str
    decisions: list[Decision] = field(default_factory=list)
    duplicates: int = 0

    def count(self, status: OrderStatus) -> int:
        return sum(1 for d in self.decisions if d.status is status)

    def summary(self) -> dict[str, int]:
        counts = {status.value: self.count(status) for status in OrderStatus}
        return counts | {"duplicates": self.duplicates}


def decide(
    requests: Iterable[AcceptedRequest],
    inventory: dict[str, Any] | None,
    max_per_request: int,
) -> list[Decision]:
    """Decide each request in order against the seats left; pure, so it is unit-tested."""
    if inventory is None:
        return [Decision(r, OrderStatus.REJECTED, "unknown event") for r in requests]
    remaining = int(inventory["capacity"]) - int(inventory["sold"])
    decisions = []
    for request in requests:
        if request.quantity > max_per_request:
            decisions.append(
                Decision(request, OrderStatus.REJECTED, f"more than {max_per_request} tickets")
            )
        elif request.quantity <= remaining:
            remaining -= request.quantity
            decisions.append(Decision(request, OrderStatus.CONFIRMED))
        else:
            decisions.append(Decision(request, OrderStatus.SOLD_OUT))
    return decisions


class SeatAllocator:
    """Allocates seats for purchase batches against the inventory and orders tables."""

    def __init__(
        self,
        dynamodb: Any,
        *,
        inventory_table: str,
        orders_table: str,
        max_per_request: int,
        start_saga: SagaStarter | None = None,
    ) -> None:
        self._ddb = dynamodb
        self._inventory = inventory_table
        self._orders = orders_table
        self._max_per_request = max_per_request
        self._start_saga = start_saga
        # The inventory this allocator last read or wrote, per event: a hint (see above).
        self._known: OrderedDict[str, dict[str, Any]] = OrderedDict()

    @retry(
        retry=retry_if_exception_type(ConcurrentAllocation),
        wait=wait_random_exponential(multiplier=0.01, max=0.5),
        stop=stop_after_attempt(20),
        reraise=True,
    )
    def allocate(self, batch: PurchaseBatch) -> BatchOutcome:
        """Decide every new request of the batch; raises ConcurrentAllocation if contended."""
        hint = self._known.pop(batch.event_id, None)  # trusted for one attempt at most
        if hint is not None:
            outcome = self._decide_and_write(batch, hint, set(), exact=False)
            if outcome is not None:
                return outcome
        inventory, decided = self._read(batch)
        outcome = self._decide_and_write(batch, inventory, decided, exact=True)
        assert outcome is not None  # an exact count decides any batch
        return outcome

    def _decide_and_write(
        self,
        batch: PurchaseBatch,
        inventory: dict[str, Any] | None,
        decided: set[str],
        *,
        exact: bool,
    ) -> BatchOutcome | None:
        """Decide against ``inventory`` (read just now if ``exact``, else a hint) and commit;
        None if a hint cannot decide the batch without the exact count."""
        fresh = []
        for request in batch.requests:  # a request repeated within the batch counts once
            if request.order_id not in decided:
                decided.add(request.order_id)
                fresh.append(request)
        outcome = BatchOutcome(batch.event_id, duplicates=len(batch.requests) - len(fresh))
        if not fresh:
            return outcome
        outcome.decisions = decide(fresh, inventory, self._max_per_request)
        guard = None
        if inventory is not None:
            guard = (
                self._exact_guard(batch.event_id, inventory, outcome.decisions)
                if exact
                else self._range_guard(batch.event_id, inventory, outcome.decisions)
            )
            if guard is None:
                return None
        self._write(batch.event_id, outcome.decisions, guard)
        if inventory is not None:
            seats = _seats(outcome.decisions)
            self._known[batch.event_id] = inventory | {"sold": int(inventory["sold"]) + seats}
            if len(self._known) > KNOWN_EVENTS:
                self._known.popitem(last=False)
        return outcome

    def _exact_guard(
        self, event_id: str, inventory: dict[str, Any], decisions: list[Decision]
    ) -> dict[str, Any]:
        """The counter must still be the one read (sold-out decisions rely on it too)."""
        seats, read = _seats(decisions), int(inventory["sold"])
        if not seats:
            return {"ConditionCheck": self._counter(event_id, "#sold = :read", {":read": read})}
        guard = self._counter(
            event_id,
            "#sold = :read AND #capacity >= :after",
            {":read": read, ":after": read + seats},
        )
        return {"Update": _add_seats(guard, seats)}

    def _range_guard(
        self, event_id: str, inventory: dict[str, Any], decisions: list[Decision]
    ) -> dict[str, Any] | None:
        """The range of counts for which the hint's decisions are the exact ones; None when
        the hint splits the batch (or rejects all of it) and only a read can tell."""
        capacity = int(inventory["capacity"])
        contested = [d for d in decisions if d.status is not OrderStatus.REJECTED]
        if not contested or len({d.status for d in contested}) > 1:
            return None
        if contested[0].status is OrderStatus.CONFIRMED:
            seats = _seats(decisions)
            guard = self._counter(
                event_id, "#capacity = :capacity AND #sold <= :limit",
                {":capacity": capacity, ":limit": capacity - seats},
            )  # fmt: skip
            return {"Update": _add_seats(guard, seats)}
        smallest = min(d.request.quantity for d in contested)
        guard = self._counter(
            event_id, "#capacity = :capacity AND #sold > :limit",
            {":capacity": capacity, ":limit": capacity - smallest},
        )  # fmt: skip
        return {"ConditionCheck": guard}

    def _counter(self, event_id: str, condition: str, values: dict[str, int]) -> dict[str, Any]:
        return {
            "TableName": self._inventory,
            "Key": {INVENTORY_PK: {"S": event_id}},
            "ConditionExpression": condition,
            "ExpressionAttributeNames": {
                name: name[1:] for name in ("#sold", "#capacity") if name in condition
            },
            "ExpressionAttributeValues": {k: {"N": str(v)} for k, v in values.items()},
        }

    @_patient
    def _read(self, batch: PurchaseBatch) -> tuple[dict[str, Any] | None, set[str]]:
        """The event's inventory and the batch's already-decided order ids, in one call."""
        keys = {
            self._inventory: {
                "Keys": [{INVENTORY_PK: {"S": batch.event_id}}],
                "ConsistentRead": True,
            },
            self._orders: {
                "Keys": [
                    {ORDERS_PK: {"S": order_id}}
                    for order_id in dict.fromkeys(r.order_id for r in batch.requests)
                ],
                "ConsistentRead": True,
                "ProjectionExpression": ORDERS_PK,
            },
        }
        found: dict[str, list[dict[str, Any]]] = {self._inventory: [], self._orders: []}
        while keys:
            response = self._ddb.batch_get_item(RequestItems=keys)
            for table, items in response.get("Responses", {}).items():
                found[table].extend(from_item(item) for item in items)
            keys = response.get("UnprocessedKeys") or {}
        inventory = found[self._inventory][0] if found[self._inventory] else None
        return inventory, {item[ORDERS_PK] for item in found[self._orders]}

    @_patient
    def _write(
        self, event_id: str, decisions: list[Decision], guard: dict[str, Any] | None
    ) -> None:
        now_ms = int(time.time() * 1000)
        items: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self._orders,
                    "Item": to_item(
                        {
                            ORDERS_PK: d.request.order_id,
                            "event_id": event_id,
                            "buyer_id": d.request.buyer_id,
                            "request_id": d.request.request_id,
                            "quantity": d.request.quantity,
                            "status": d.status.value,
                            "fulfilment": (
                                Fulfilment.HELD.value if d.status is OrderStatus.CONFIRMED else None
                            ),
                            "reason": d.reason or None,
                            "accepted_seq": d.request.accepted_seq,
                            "accepted_at_ms": d.request.accepted_at_ms,
                            "decided_at_ms": now_ms,
                        }
                    ),
                    "ConditionExpression": f"attribute_not_exists({ORDERS_PK})",
                }
            }
            for d in decisions
        ]
        if self._start_saga is not None:
            for d in decisions:
                if d.status is OrderStatus.CONFIRMED:
                    items.extend(self._start_saga(event_id, d.request))
        if guard is not None:
            items.append(guard)
        try:
            self._ddb.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "TransactionCanceledException":
                raise
            if set(cancellation_codes(exc)) & _RETRYABLE_CANCELLATIONS:
                raise ConcurrentAllocation(event_id) from exc
            raise


def _seats(decisions: list[Decision]) -> int:
    return sum(d.request.quantity for d in decisions if d.status is OrderStatus.CONFIRMED)


def _add_seats(guard: dict[str, Any], seats: int) -> dict[str, Any]:
    guard["ExpressionAttributeNames"]["#sold"] = "sold"
    guard["ExpressionAttributeValues"][":seats"] = {"N": str(seats)}
    guard["UpdateExpression"] = "SET #sold = #sold + :seats"
    return guard
