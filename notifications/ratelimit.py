"""A per-process, per-channel send rate: a blocking token bucket with a bounded wait.

SES (the account's maximum send rate) and SNS (SMS transactions per second) cap how fast an
account sends and answer above it with throttling errors; pacing ourselves is cheaper than
retrying those. Each worker process has one
bucket per channel, so the fleet's rate is processes x rate: size the settings
(``email_per_second``, ``sms_per_second``) for the fleet.

Why not ``pyrate-limiter`` (4.5.1 read): it counts integer hits per window of integer
milliseconds (a sliding-window log, not a token bucket), runs a background leak thread per
bucket, and its blocking wait calls ``time.sleep`` imported into its module, so a test of the
bounded wait must either really wait or patch the library's internals. What we need — one
bucket, a fractional rate, a bounded blocking wait, an injectable clock and sleep — is the
twenty lines below.

A caller that would wait longer than its bound gets ``RateLimited`` (transient) at once and
takes no token; the task retries later. Low-priority callers (cancellations) get a shorter
bound than high-priority ones (confirmations), so when a process is saturated it spends its
tokens on confirmations and pushes cancellations back to the queue.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from notifications.exceptions import RateLimited


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; ``acquire`` takes one.

    A token may be reserved ahead of time (the count goes negative): the caller sleeps until
    its token would have accrued, and later callers queue behind it, so waits are fair and the
    long-run rate is exact. The clock and the sleep are injectable for tests.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float = 1.0,
        name: str = "bucket",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate, self.burst, self.name = rate, burst, name
        self._clock, self._sleep = clock, sleep
        self._tokens = burst
        self._updated = clock()
        self._lock = threading.Lock()

    def acquire(self, max_wait: float) -> float:
        """Take a token, sleeping up to ``max_wait`` seconds for it; return the wait.

        Raises ``RateLimited`` (taking nothing) if the token would come later than that.
        """
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            wait = max(0.0, (1.0 - self._tokens) / self.rate)
            if wait > max_wait:
                raise RateLimited(f"{self.name}: next token in {wait:.2f} s > {max_wait:.2f} s")
            self._tokens -= 1.0
        if wait > 0:
            self._sleep(wait)
        return wait
