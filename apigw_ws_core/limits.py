"""Rate limits: fixed-window counters behind a one-method interface.

:class:`StorageRateLimiter` (the default) keeps counters in the app's :class:`Storage`, so a
multi-process deployment shares them through the database. :class:`RedisRateLimiter` uses
Redis ``INCR``/``EXPIRE`` for deployments that prefer a cache; the Django adapter adds one on
Django's cache framework.
"""

from __future__ import annotations

import abc
import hashlib
import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from apigw_ws_core.config import RateLimit
from apigw_ws_core.errors import RateLimited
from apigw_ws_core.storage import CounterHit, Storage

log = logging.getLogger("apigw_ws")

__all__ = [
    "MemoryRateLimiter",
    "RateLimiter",
    "RedisRateLimiter",
    "StorageRateLimiter",
]


def _window_start(now: datetime, window: int) -> datetime:
    epoch = int(now.timestamp())
    return datetime.fromtimestamp(epoch - epoch % window, UTC)


@attrs.frozen
class Decision:
    """The outcome of one hit: the count in the current window and seconds until it ends."""

    count: int
    retry_after: int


def _retry_after(now: datetime, window: int) -> int:
    """Seconds until the window containing ``now`` ends (at least 1)."""
    start = _window_start(now, window)
    return int((start + timedelta(seconds=window) - now).total_seconds()) + 1


class RateLimiter(abc.ABC):
    """Counts hits per key in fixed windows."""

    @abc.abstractmethod
    def incr(self, key: str, window: int, now: datetime) -> int:
        """Add one hit to ``key`` in the window containing ``now``; return the count."""

    def hit(self, key: str, rate: RateLimit | None, now: datetime) -> None:
        """Count a hit and raise :class:`RateLimited` (with ``Retry-After``) past the limit.

        ``rate=None`` disables the limit.
        """
        if rate is None:
            return
        count = self.incr(key, rate.window, now)
        if count > rate.limit:
            raise RateLimited(retry_after=_retry_after(now, rate.window))


#: Longest counter key stored as is; longer keys are shortened with a digest so that they
#: always fit the storage column (255 characters) whatever a user id looks like.
MAX_KEY_LENGTH = 200


def storage_key(key: str) -> str:
    """``key`` itself, or a prefix plus its SHA-256 when longer than :data:`MAX_KEY_LENGTH`."""
    if len(key) <= MAX_KEY_LENGTH:
        return key
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{key[:64]}#{digest}"


class StorageRateLimiter(RateLimiter):
    """Counters in the app's storage (one atomic upsert per hit)."""

    def __init__(self, storage: Storage):
        self.storage = storage

    def incr(self, key: str, window: int, now: datetime) -> int:
        """See :meth:`RateLimiter.incr`."""
        start = _window_start(now, window)
        return self.storage.incr_counter(storage_key(key), start, start + timedelta(seconds=window))

    def counter_hit(self, key: str, rate: RateLimit, now: datetime) -> CounterHit:
        """The hit as a :class:`~apigw_ws_core.storage.CounterHit`, for :attr:`storage` to
        count inside the transaction of the operation it limits (a ``$connect``, a token):
        no commit of its own."""
        start = _window_start(now, rate.window)
        return CounterHit(
            key=storage_key(key),
            window_start=start,
            expires_at=start + timedelta(seconds=rate.window),
            limit=rate.limit,
            retry_after=_retry_after(now, rate.window),
        )


class MemoryRateLimiter(RateLimiter):
    """Process-local counters (tests, single-process deployments)."""

    def __init__(self, sweep_at: int = 100_000) -> None:
        """``sweep_at``: entries kept before ended windows are swept out."""
        self._lock = threading.Lock()
        #: (key, window start) -> (count, window end), all in epoch seconds
        self._counts: dict[tuple[str, int], tuple[int, int]] = {}
        self._min_sweep = self._sweep_at = sweep_at

    def incr(self, key: str, window: int, now: datetime) -> int:
        """See :meth:`RateLimiter.incr`. Memory stays bounded by the live windows: past
        ``sweep_at`` entries, ended windows are dropped (and the next sweep waits until
        the table has doubled, so a busy process does not sweep on every call)."""
        bucket = int(_window_start(now, window).timestamp())
        with self._lock:
            if len(self._counts) > self._sweep_at:
                t = int(now.timestamp())
                self._counts = {k: v for k, v in self._counts.items() if v[1] > t}
                self._sweep_at = max(self._min_sweep, 2 * len(self._counts))
            value = self._counts.get((key, bucket), (0, 0))[0] + 1
            self._counts[(key, bucket)] = (value, bucket + window)
            return value


class RedisRateLimiter(RateLimiter):
    """Counters in Redis: ``INCR`` + ``EXPIRE`` in one pipeline. Pass a ``redis.Redis``, or
    build one with :meth:`from_url` (bounded timeouts).

    redis-py waits forever by default: give your client ``socket_connect_timeout`` and
    ``socket_timeout``, or a hung Redis holds every request until API Gateway gives up
    after 29 s (a warning is logged for a client without them). What a failing Redis does
    to requests is ``Config.rate_limiter_failure``.
    """

    def __init__(self, client: Any, prefix: str = "apigw-ws:rl:"):
        self.client = client
        self.prefix = prefix
        kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None)
        if isinstance(kwargs, dict) and (
            kwargs.get("socket_timeout") is None or kwargs.get("socket_connect_timeout") is None
        ):
            log.warning(
                "RedisRateLimiter: the Redis client has no socket_timeout/socket_connect_timeout;"
                " a hung Redis will hold requests (use RedisRateLimiter.from_url or set both)"
            )

    @classmethod
    def from_url(
        cls, url: str, *, timeout: float = 1.0, prefix: str = "apigw-ws:rl:", **kwargs: Any
    ) -> RedisRateLimiter:
        """A limiter on ``redis.Redis.from_url(url)`` whose connects and reads give up after
        ``timeout`` seconds (``socket_connect_timeout``, ``socket_timeout``); other
        keyword arguments go to redis-py. Needs the ``redis`` package."""
        import redis

        kwargs.setdefault("socket_connect_timeout", timeout)
        kwargs.setdefault("socket_timeout", timeout)
        return cls(redis.Redis.from_url(url, **kwargs), prefix=prefix)

    def incr(self, key: str, window: int, now: datetime) -> int:
        """See :meth:`RateLimiter.incr`."""
        bucket = int(_window_start(now, window).timestamp())
        name = f"{self.prefix}{key}:{bucket}"
        pipe = self.client.pipeline()
        pipe.incr(name)
        pipe.expire(name, window + 1)
        count, _ = pipe.execute()
        return int(count)
