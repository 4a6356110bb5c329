"""Per-workspace rate limit: a token bucket per workspace, per api process.

`rate` requests per second on average, bursts up to `burst`. With N api processes behind a
balancer the effective limit is N times this; the limit protects each process, it is not a
billing quota."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from uuid import UUID


class RateLimiter:
    def __init__(self, rate: float, burst: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._buckets: dict[UUID, tuple[float, float]] = {}

    def check(self, key: UUID) -> float | None:
        """Take one token; None if allowed, else the seconds until one is available."""
        if self._rate <= 0:
            return None
        now = self._clock()
        tokens, last = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            return None
        self._buckets[key] = (tokens, now)
        return (1 - tokens) / self._rate


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
