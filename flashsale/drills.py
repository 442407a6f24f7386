"""Crash drills: kill this process at a named point, to prove recovery from a crash there.

Off unless configured, never for production. A test sets, say, ``after_work`` with a
probability, runs its load, restarts whatever died and checks the exact counts afterwards:
what a ``kill -9`` at that precise moment would have done, without racing a signal against it.
"""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Iterable
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger("drill")


@dataclass
class CrashDrill:
    points: frozenset[str] = frozenset()
    probability: float = 0.0
    rng: random.Random = field(default_factory=random.Random)

    @classmethod
    def parse(cls, points: str | Iterable[str], probability: float) -> CrashDrill:
        """``points`` as a comma-separated list (an environment variable) or names."""
        names = points.split(",") if isinstance(points, str) else points
        return cls(frozenset(p.strip() for p in names if p.strip()), probability)

    def maybe_crash(self, point: str, **fields: object) -> None:
        """SIGKILL this process at ``point``, with the drill's probability."""
        if point in self.points and self.rng.random() < self.probability:
            log.warning("drill.crash", point=point, pid=os.getpid(), **fields)
            os.kill(os.getpid(), signal.SIGKILL)
