"""``apigw_ws_core.limits.RedisRateLimiter`` against a real Redis server."""

from __future__ import annotations

import secrets
import threading
from datetime import UTC, datetime

import pytest

from apigw_ws_core.config import RateLimit
from apigw_ws_core.errors import RateLimited
from apigw_ws_core.limits import RedisRateLimiter

pytestmark = pytest.mark.redis


@pytest.fixture
def limiter(redis_url: str):
    import redis

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=2)
    prefix = f"apigw-ws-test:{secrets.token_hex(4)}:"
    yield RedisRateLimiter(client, prefix=prefix)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_counts_per_key_and_window(limiter: RedisRateLimiter):
    now = datetime(2030, 1, 1, 0, 0, 30, tzinfo=UTC)
    assert [limiter.incr("a", 60, now) for _ in range(3)] == [1, 2, 3]
    assert limiter.incr("b", 60, now) == 1
    later = datetime(2030, 1, 1, 0, 1, 0, tzinfo=UTC)
    assert limiter.incr("a", 60, later) == 1


def test_keys_expire_after_the_window(limiter: RedisRateLimiter):
    now = datetime.now(UTC)
    limiter.incr("ttl", 10, now)
    (key,) = list(limiter.client.scan_iter(match=limiter.prefix + "ttl:*"))
    assert 0 < limiter.client.ttl(key) <= 11


def test_hit_raises_with_retry_after(limiter: RedisRateLimiter):
    now = datetime(2030, 1, 1, 0, 0, 45, tzinfo=UTC)
    rate = RateLimit(2, 60)
    limiter.hit("h", rate, now)
    limiter.hit("h", rate, now)
    with pytest.raises(RateLimited) as info:
        limiter.hit("h", rate, now)
    assert info.value.retry_after == 16 and info.value.headers["Retry-After"] == "16"
    limiter.hit("h", None, now)  # disabled limit never raises


def test_concurrent_increments_are_exact(limiter: RedisRateLimiter):
    now = datetime.now(UTC)
    results: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(20):
            value = limiter.incr("race", 60, now)
            with lock:
                results.append(value)

    threads = [threading.Thread(target=work) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(results) == list(range(1, 101))


def test_from_url_bounds_the_client_and_a_client_without_timeouts_is_warned_about(
    redis_url: str, caplog: pytest.LogCaptureFixture
):
    import redis

    limiter = RedisRateLimiter.from_url(redis_url, timeout=0.5, prefix="apigw-ws-test:u:")
    kwargs = limiter.client.connection_pool.connection_kwargs
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.5, 0.5)
    assert limiter.incr(secrets.token_hex(4), 60, datetime.now(UTC)) == 1
    limiter.client.close()
    assert "no socket_timeout" not in caplog.text
    RedisRateLimiter(redis.Redis.from_url(redis_url)).client.close()
    assert "no socket_timeout/socket_connect_timeout" in caplog.text
