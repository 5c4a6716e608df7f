"""A token bucket, used to throttle the management API like AWS's account limit."""

from __future__ import annotations

import time

__all__ = ["TokenBucket"]


class TokenBucket:
    """Allows ``rate`` operations per second on average, ``burst`` at once.

    Not thread-safe: the gateway calls it from its event loop only.
    """

    __slots__ = ("_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int | None = None) -> None:
        """Start full: ``burst`` (default ``max(1, rate)``) tokens available."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(1.0, rate))
        self._tokens = self.burst
        self._stamp = time.monotonic()

    def try_acquire(self) -> bool:
        """Take one token if available; return whether the operation may proceed."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
