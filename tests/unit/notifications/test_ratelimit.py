"""``notifications.ratelimit.TokenBucket`` on a fake clock: exact waits, no real sleeping."""

from __future__ import annotations

import re

import pytest
from notification_fakes import FakeClock

from notifications.exceptions import RateLimited
from notifications.ratelimit import TokenBucket


def bucket(clock: FakeClock, rate: float = 2.0, burst: float = 1.0) -> TokenBucket:
    return TokenBucket(rate, burst=burst, clock=clock, sleep=clock.sleep)


def test_acquire__paces_callers_at_the_rate() -> None:
    clock = FakeClock()
    limiter = bucket(clock, rate=2.0)
    waits = [limiter.acquire(max_wait=5) for _ in range(5)]
    assert waits == [0.0, 0.5, 0.5, 0.5, 0.5]
    assert clock.slept == [0.5, 0.5, 0.5, 0.5]


def test_acquire__idle_time_saves_up_to_burst_tokens_only() -> None:
    clock = FakeClock()
    limiter = bucket(clock, rate=2.0, burst=3.0)
    clock.advance(3600)
    waits = [limiter.acquire(max_wait=5) for _ in range(4)]
    assert waits == [0.0, 0.0, 0.0, 0.5]


def test_acquire__concurrent_callers_queue_behind_reservations() -> None:
    """Callers that do not sleep (time stands still) each reserve the next token."""
    clock = FakeClock()
    limiter = TokenBucket(4.0, clock=clock, sleep=lambda _: None)
    assert [limiter.acquire(max_wait=1) for _ in range(4)] == [0.0, 0.25, 0.5, 0.75]


def test_acquire__longer_than_max_wait__raises_and_takes_no_token() -> None:
    clock = FakeClock()
    limiter = TokenBucket(1.0, clock=clock, sleep=lambda _: None)
    assert limiter.acquire(max_wait=0.5) == 0.0
    with pytest.raises(RateLimited, match=re.escape("next token in 1.00 s")):
        limiter.acquire(max_wait=0.5)
    clock.advance(0.6)
    assert limiter.acquire(max_wait=0.5) == pytest.approx(0.4)


def test_acquire__low_priority_bound_gives_up_while_high_waits() -> None:
    clock = FakeClock()
    limiter = TokenBucket(1.0, clock=clock, sleep=lambda _: None)
    limiter.acquire(max_wait=10)
    with pytest.raises(RateLimited):
        limiter.acquire(max_wait=0.1)  # a cancellation: back to the queue
    assert limiter.acquire(max_wait=10) == 1.0  # a confirmation: waits its turn


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1.0), (-1.0, 1.0), (1.0, 0.5)])
def test_bucket__invalid_parameters__are_refused(rate: float, burst: float) -> None:
    with pytest.raises(ValueError, match="rate must be positive"):
        TokenBucket(rate, burst=burst)
