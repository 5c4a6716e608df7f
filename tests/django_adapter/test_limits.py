"""CacheRateLimiter over Django's cache: local memory and the real Redis (RedisCache)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.cache import caches

from apigw_ws_core.config import RateLimit
from apigw_ws_core.errors import RateLimited
from apigw_ws_django.limits import CacheRateLimiter
from tests.django_orm.helpers import run_threads


@pytest.fixture(params=["default", pytest.param("redis", marks=pytest.mark.redis)])
def cache_alias(request: pytest.FixtureRequest) -> Any:
    if request.param == "redis":
        request.getfixturevalue("redis_url")
    cache = caches[request.param]
    cache.clear()
    yield request.param
    cache.clear()


def test_counts_per_window_and_key(cache_alias: str):
    limiter = CacheRateLimiter(cache_alias)
    now = datetime(2030, 1, 1, 12, 0, 5, tzinfo=UTC)
    assert [limiter.incr("k", 60, now) for _ in range(3)] == [1, 2, 3]
    assert limiter.incr("other", 60, now) == 1
    assert limiter.incr("k", 60, now + timedelta(seconds=60)) == 1


def test_hit_raises_with_retry_after(cache_alias: str):
    limiter = CacheRateLimiter(cache_alias)
    now = datetime(2030, 1, 1, 12, 0, 50, tzinfo=UTC)
    rate = RateLimit(2, 60)
    limiter.hit("h", rate, now)
    limiter.hit("h", rate, now)
    with pytest.raises(RateLimited) as info:
        limiter.hit("h", rate, now)
    assert info.value.retry_after == 11


def test_concurrent_increments_are_exact(cache_alias: str):
    limiter = CacheRateLimiter(cache_alias)
    now = datetime.now(UTC)
    results = run_threads(lambda: limiter.incr("race", 60, now), 20, "default")
    assert sorted(results) == list(range(1, 21))


@pytest.mark.redis
def test_redis_keys_expire(redis_url: str):
    limiter = CacheRateLimiter("redis")
    now = datetime.now(UTC)
    limiter.incr("ttl", 30, now)
    cache = caches["redis"]
    client = cache._cache.get_client(write=True)  # type: ignore[attr-defined]
    keys = [k for k in client.keys("*apigw-ws:rl:ttl:*")]
    assert len(keys) == 1 and 0 < client.ttl(keys[0]) <= 31


@pytest.mark.django_db(transaction=True)
def test_used_by_the_pipeline(settings: Any, django_user_model: Any):
    from apigw_ws_django.testing import WebSocketTestClient
    from apigw_ws_storage.django_orm.models import RateLimitCounter

    caches["default"].clear()
    settings.APIGW_WS = {
        **settings.APIGW_WS,
        "RATE_LIMITER": "apigw_ws_django.limits.CacheRateLimiter",
        "RATE_LIMITER_OPTIONS": {"cache": "default"},
        "MESSAGE_RATE_PER_CONNECTION": "2/60",
    }
    user = django_user_model.objects.create_user("carol")
    with WebSocketTestClient() as ws:
        conn = ws.connect(user=user)
        assert conn.send({"handler": "echo"}).status_code == 200
        assert conn.send({"handler": "echo"}).status_code == 200
        assert conn.send({"handler": "echo"}).status_code == 429
    assert not RateLimitCounter.objects.exists()
