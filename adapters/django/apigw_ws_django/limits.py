"""A rate limiter over Django's cache framework.

::

    APIGW_WS = {
        "RATE_LIMITER": "apigw_ws_django.limits.CacheRateLimiter",
        "RATE_LIMITER_OPTIONS": {"cache": "ratelimit"},      # a CACHES alias
    }

Use a cache shared by every process (Redis, Memcached, the database cache); a local-memory
cache counts per process only. With Django's ``RedisCache`` each hit is one pipelined
``INCR`` + ``EXPIRE`` round trip; other backends use ``add`` + ``incr``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.cache import BaseCache, caches

from apigw_ws_core.limits import RateLimiter

__all__ = ["CacheRateLimiter"]


class CacheRateLimiter(RateLimiter):
    """Fixed-window counters in a Django cache.

    :param cache: a ``CACHES`` alias or a cache object.
    :param prefix: prepended to every key (the cache's own ``KEY_PREFIX`` applies too).
    """

    def __init__(self, cache: str | BaseCache = "default", prefix: str = "apigw-ws:rl:"):
        self.cache: BaseCache = caches[cache] if isinstance(cache, str) else cache
        self.prefix = prefix

    def incr(self, key: str, window: int, now: datetime) -> int:
        """See :meth:`RateLimiter.incr`."""
        epoch = int(now.timestamp())
        bucket = epoch - epoch % window
        name = f"{self.prefix}{key}:{bucket}"
        timeout = window + 1
        client = self._redis_client(name)
        if client is not None:
            full = self.cache.make_and_validate_key(name)
            pipe = client.pipeline()
            pipe.incr(full)
            pipe.expire(full, timeout)
            count, _ = pipe.execute()
            return int(count)
        self.cache.add(name, 0, timeout=timeout)
        try:
            return int(self.cache.incr(name))
        except ValueError:  # expired between add and incr (only at a window's very end)
            self.cache.add(name, 1, timeout=timeout)
            return 1

    def _redis_client(self, name: str) -> Any:
        """The redis-py client behind Django's ``RedisCache`` (``None`` for others)."""
        try:
            from django.core.cache.backends.redis import RedisCache
        except ImportError:  # pragma: no cover - Django < 4.0
            return None
        if not isinstance(self.cache, RedisCache):
            return None
        return getattr(self.cache, "_cache").get_client(name, write=True)  # noqa: B009
