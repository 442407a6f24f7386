"""The intake's view of each event — unknown, on sale or sold out — cached for a short TTL.

This is what lets the intake answer the buyers of a sold-out event at the edge, without
enqueuing them, and refuse an unknown event with a 404, without one DynamoDB read per request:

- a hot event is re-read in the background every ``ttl / 2`` (one ``BatchGetItem`` for every
  event used lately), so its buyers never wait for a read;
- an event not in the cache (or whose entry is older than ``ttl``) is read once, however many
  requests ask for it at the same moment (single flight);
- entries expire after ``ttl``: seats released by a declined payment (``sold`` goes down) are
  on sale again at the edge within ``ttl``;
- at most ``max_events`` entries (least recently used evicted): random event ids cannot grow it.

The cache only ever *refuses* early what the worker would refuse too (``sold >= capacity``
means no request can get a seat); when the inventory cannot be read it fails open, and the
worker, which reads the inventory in its own transaction, decides.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import structlog

from flashsale.dynamo import from_item
from flashsale.names import INVENTORY_PK
from intake.blocking import Blocking

log = structlog.get_logger(__name__)

BATCH_GET_LIMIT = 100  # keys per BatchGetItem
# Events not asked for in this long stop being refreshed and leave the cache.
IDLE_AFTER_SECONDS = 10.0
# The event id the readiness probe reads: never a real event (not a valid identifier).
PROBE_EVENT_ID = "__intake_ready__"


class EventState(StrEnum):
    ON_SALE = "on_sale"
    SOLD_OUT = "sold_out"  # sold >= capacity: no request can get a seat now
    NOT_FOUND = "not_found"
    UNCHECKED = "unchecked"  # the inventory could not be read: enqueue, the worker decides


@dataclass(frozen=True)
class Inventory:
    capacity: int
    sold: int

    @property
    def state(self) -> EventState:
        return EventState.SOLD_OUT if self.sold >= self.capacity else EventState.ON_SALE


class InventoryReader(Protocol):
    def read(self, event_ids: Sequence[str]) -> dict[str, Inventory]:
        """The inventory of each event that exists; absent ids are unknown events."""
        ...


class DynamoInventory:
    """Reads the inventory table with ``BatchGetItem``: many events, one call."""

    def __init__(self, dynamodb: Any, table: str) -> None:
        self._ddb = dynamodb
        self._table = table

    def read(self, event_ids: Sequence[str]) -> dict[str, Inventory]:
        found: dict[str, Inventory] = {}
        ids = list(dict.fromkeys(event_ids))
        names = {"#e": INVENTORY_PK, "#c": "capacity", "#s": "sold"}
        for start in range(0, len(ids), BATCH_GET_LIMIT):
            chunk = ids[start : start + BATCH_GET_LIMIT]
            keys: dict[str, Any] = {
                self._table: {
                    "Keys": [{INVENTORY_PK: {"S": e}} for e in chunk],
                    # Eventually consistent (half the cost): the cache is stale by design anyway.
                    "ConsistentRead": False,
                    "ProjectionExpression": "#e, #c, #s",
                    "ExpressionAttributeNames": names,
                }
            }
            while keys:
                response = self._ddb.batch_get_item(RequestItems=keys)
                for item in response.get("Responses", {}).get(self._table, []):
                    values = from_item(item)
                    found[values[INVENTORY_PK]] = Inventory(
                        int(values["capacity"]), int(values["sold"])
                    )
                keys = response.get("UnprocessedKeys") or {}
        return found


@dataclass
class _Entry:
    state: EventState
    fetched_at: float
    used_at: float


class EventCache:
    """Event states for the request path; all methods run on the event loop."""

    def __init__(
        self,
        reader: InventoryReader,
        *,
        ttl: float,
        max_events: int,
        blocking: Blocking,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reader = reader
        self._ttl = ttl
        self._max_events = max_events
        self._blocking = blocking
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._loading: dict[str, asyncio.Future[dict[str, EventState]]] = {}
        self._last_ok: float | None = None
        self.reads = 0  # calls to the reader: what the TTL saves is visible in tests and stats

    def __len__(self) -> int:
        return len(self._entries)

    async def state(self, event_id: str) -> EventState:
        now = self._clock()
        entry = self._entries.get(event_id)
        if entry is not None and now - entry.fetched_at < self._ttl:
            entry.used_at = now
            self._entries.move_to_end(event_id)
            return entry.state
        loading = self._loading.get(event_id)
        if loading is None:
            loading = asyncio.ensure_future(self._fetch([event_id]))
            self._loading[event_id] = loading
            loading.add_done_callback(lambda _: self._loading.pop(event_id, None))
        # Shielded: a request that goes away must not cancel the read the others wait for.
        states = await asyncio.shield(loading)
        return states[event_id]

    async def refresh(self) -> None:
        """Re-read every event used lately in one go; forget the others."""
        now = self._clock()
        idle = [e for e, entry in self._entries.items() if now - entry.used_at > IDLE_AFTER_SECONDS]
        for event_id in idle:
            del self._entries[event_id]
        if self._entries:
            await self._fetch(list(self._entries))

    async def run_refresher(self) -> None:
        """Refresh twice per TTL, for as long as the intake runs (cancelled at shutdown)."""
        while True:
            await asyncio.sleep(self._ttl / 2)
            await self.refresh()

    async def reachable(self, max_age: float = 5.0) -> bool:
        """Whether the inventory table answered within ``max_age`` seconds (reads it if not)."""
        if self._last_ok is not None and self._clock() - self._last_ok <= max_age:
            return True
        try:
            await self._blocking.run(self._reader.read, [PROBE_EVENT_ID])
        except Exception as exc:  # readiness reports it; the caller decides
            log.warning("intake.inventory_unreachable", error=repr(exc))
            return False
        self._last_ok = self._clock()
        return True

    async def _fetch(self, event_ids: list[str]) -> dict[str, EventState]:
        self.reads += 1
        try:
            found = await self._blocking.run(self._reader.read, event_ids)
        except Exception as exc:  # an optimisation must not fail buyers: fail open for one TTL
            log.warning("intake.inventory_read_failed", events=len(event_ids), error=repr(exc))
            states = dict.fromkeys(event_ids, EventState.UNCHECKED)
        else:
            self._last_ok = self._clock()
            states = {e: found[e].state if e in found else EventState.NOT_FOUND for e in event_ids}
        now = self._clock()
        for event_id, state in states.items():
            self._store(event_id, state, now)
        return states

    def _store(self, event_id: str, state: EventState, now: float) -> None:
        entry = self._entries.get(event_id)
        if entry is None:
            while len(self._entries) >= self._max_events:
                self._entries.popitem(last=False)  # least recently used
            self._entries[event_id] = _Entry(state, now, now)
        else:
            entry.state, entry.fetched_at = state, now
