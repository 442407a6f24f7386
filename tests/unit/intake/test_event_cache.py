"""``EventCache``: one read however many ask at once, bounded size, background refresh."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from intake_http_fakes import FakeClock, FakeInventory, run_async

from intake.blocking import Blocking
from intake.events import IDLE_AFTER_SECONDS, EventCache, EventState, Inventory


@pytest.fixture
def blocking() -> Iterator[Blocking]:
    pool = Blocking(2, "test-events")
    yield pool
    pool.close()


def make_cache(
    inventory: FakeInventory, blocking: Blocking, clock: FakeClock, *, max_events: int = 100
) -> EventCache:
    return EventCache(inventory, ttl=1.0, max_events=max_events, blocking=blocking, clock=clock)


def test_cache__many_requests_at_once_for_a_new_event_make_one_read(blocking: Blocking) -> None:
    inventory = FakeInventory({"gig": Inventory(10, 10)})
    cache = make_cache(inventory, blocking, FakeClock())

    async def fifty_at_once() -> list[EventState]:
        return await asyncio.gather(*(cache.state("gig") for _ in range(50)))

    states = run_async(fifty_at_once())

    assert states == [EventState.SOLD_OUT] * 50
    assert inventory.reads == [["gig"]]


def test_cache__holds_at_most_max_events_dropping_the_least_recently_used(
    blocking: Blocking,
) -> None:
    inventory = FakeInventory({f"e{n}": Inventory(1, 0) for n in range(5)})
    cache = make_cache(inventory, blocking, FakeClock(), max_events=3)

    async def ask(*events: str) -> None:
        for event in events:
            await cache.state(event)

    run_async(ask("e0", "e1", "e2", "e0", "e3", "e4", "e0"))

    assert len(cache) == 3
    # e0 was used again before e3 and e4 came: e1 and e2 were evicted, e0 never re-read.
    assert inventory.reads == [["e0"], ["e1"], ["e2"], ["e3"], ["e4"]]


def test_cache__refresh_rereads_events_in_use_in_one_call_and_forgets_idle_ones(
    blocking: Blocking,
) -> None:
    inventory = FakeInventory({"hot": Inventory(5, 4), "cold": Inventory(5, 0)})
    clock = FakeClock()
    cache = make_cache(inventory, blocking, clock)

    async def scenario() -> tuple[EventState, EventState]:
        await cache.state("cold")
        clock.advance(IDLE_AFTER_SECONDS / 2)
        before = await cache.state("hot")
        inventory.events["hot"] = Inventory(5, 5)  # the last seat went
        clock.advance(IDLE_AFTER_SECONDS / 2 + 0.1)  # cold is idle now, hot is not
        await cache.refresh()
        return before, await cache.state("hot")

    before, after = run_async(scenario())

    assert (before, after) == (EventState.ON_SALE, EventState.SOLD_OUT)
    assert inventory.reads == [["cold"], ["hot"], ["hot"]]
    assert len(cache) == 1


def test_cache__a_failed_read_is_unchecked_for_one_ttl_then_read_again(blocking: Blocking) -> None:
    inventory = FakeInventory({"gig": Inventory(1, 1)}, failing=True)
    clock = FakeClock()
    cache = make_cache(inventory, blocking, clock)

    async def scenario() -> list[EventState]:
        states = [await cache.state("gig"), await cache.state("gig")]
        inventory.failing = False
        clock.advance(1.0)
        return [*states, await cache.state("gig")]

    states = run_async(scenario())

    assert states == [EventState.UNCHECKED, EventState.UNCHECKED, EventState.SOLD_OUT]
    assert inventory.reads == [["gig"], ["gig"]]
