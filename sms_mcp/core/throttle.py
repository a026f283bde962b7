"""Pacing for chunked sends: a per-action rate limiter kept well below Alibaba's quotas."""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio

#: Calls per second we allow ourselves per action (Alibaba: SendSms/SendBatchSms 5,000/s, reads lower).
DEFAULT_RATES: dict[str, float] = {
    "SendSms": 500.0,
    "SendBatchSms": 500.0,
    "QuerySendDetails": 500.0,
    "QuerySendStatistics": 10.0,
    "QuerySmsTemplateList": 5.0,
}


class RateLimiter:
    """A token bucket: ``rate`` calls per second on average, bursts of at most ``burst``."""

    def __init__(self, rate: float, burst: int | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = float(burst or max(1, int(rate // 10)))
        self.tokens = self.capacity
        self.clock = clock
        self.updated = clock()
        self.lock = anyio.Lock()

    async def acquire(self) -> None:
        async with self.lock:
            while True:
                now = self.clock()
                self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await anyio.sleep((1 - self.tokens) / self.rate)


class Limiters:
    """One limiter per action, created on first use."""

    def __init__(self, rates: dict[str, float] | None = None) -> None:
        self.rates = rates or DEFAULT_RATES
        self._limiters: dict[str, RateLimiter] = {}

    def __getitem__(self, action: str) -> RateLimiter:
        if action not in self._limiters:
            self._limiters[action] = RateLimiter(self.rates.get(action, 100.0))
        return self._limiters[action]
