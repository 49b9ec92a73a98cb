"""The relay's per-device rate limit (SPEC.md §10.7): a token bucket shared by every relay
process on one database, with per-process leases and a per-process first check."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["RateLimit"]


class RateLimit:
    """The per-device request limit: ``rate`` requests per second, bursts of ``burst``.

    The limit holds across every relay process on one database: each device's token bucket
    is a row of the relay store, taken from in a request's own transaction
    (:meth:`~e2e.relay.store.Tx.take_token`, Unix time from ``clock``), so a refused request
    changes nothing. A request for which its process holds no token of the device
    (:meth:`spend`) takes ``lease`` tokens at once if the bucket holds that many (else one),
    and its process keeps the rest (:meth:`keep`) for the device's next requests, which then
    touch no bucket row. Every request admitted anywhere has taken a token from the shared
    bucket, so N processes admit at most the rate in all; tokens a process holds for a device
    it no longer hears from are at most ``lease - 1`` per process, and make up for themselves
    as the bucket refills. Each process also keeps the same bucket in memory (:meth:`take`),
    checked before any store work, so a flood from one device into one process is refused
    without a transaction."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.time,
                 lease: int | None = None) -> None:  # fmt: skip
        if not rate > 0 or not burst >= 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.lease = lease if lease is not None else max(1, min(int(burst) // 8, int(rate) // 10))
        if not 1 <= self.lease <= burst:
            raise ValueError("a lease is between 1 and the burst")
        self._buckets: dict[tuple[bytes, int], tuple[float, float]] = {}
        self._held: dict[tuple[bytes, int], int] = {}

    def take(self, key: tuple[bytes, int], now: float) -> bool:
        """This process's bucket (``now`` from a monotonic clock)."""
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1, now)
        if len(self._buckets) > 100_000:  # bounded: forget buckets that have refilled
            full = self.burst / self.rate
            self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full}
        return True

    def spend(self, key: tuple[bytes, int]) -> bool:
        """Use one token this process took from the device's bucket before, if it holds one
        (the request then takes none in its transaction); :meth:`keep` it back if the
        request is refused."""
        held = self._held.get(key, 0)
        if held < 1:
            return False
        if held == 1:
            del self._held[key]
        else:
            self._held[key] = held - 1
        return True

    def keep(self, key: tuple[bytes, int], tokens: int) -> None:
        """Hold ``tokens`` the device's committed requests took from its bucket and did not
        use."""
        if tokens > 0:
            if len(self._held) > 100_000:  # bounded: forgetting only ever admits less
                self._held.clear()
            self._held[key] = self._held.get(key, 0) + tokens
