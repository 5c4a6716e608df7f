"""Rate limits: connect attempts per source IP and per user, messages per connection, token
redemptions per user (at ``$connect``; issuing is never limited); 429 with a correct
``Retry-After``; nothing a client puts in a header can choose or overflow the counter key.
The Redis limiter is tested against the real server."""

from __future__ import annotations

import secrets
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from apigw_ws_core import Config, MemoryStorage, WebSocketApp
from apigw_ws_core.config import RateLimit
from apigw_ws_core.errors import RateLimited
from apigw_ws_core.events import from_http
from apigw_ws_core.limits import MAX_KEY_LENGTH, MemoryRateLimiter, RedisRateLimiter
from apigw_ws_core.testing import RecordingTransport, gateway_headers, new_connection_id

from .support import SECRET, connect, make_app, message, snapshot, status_and_code

T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)  # a window boundary for every window size


def _frozen(app, at):
    app.clock = lambda: at
    return app


def _retry_after(reply) -> int:
    return int(dict(reply.headers)["Retry-After"])


def test_connect_attempts_per_ip_429_with_retry_after_and_no_write():
    app = _frozen(
        make_app(require_token=False, connect_rate_per_ip="3/60"), T0 + timedelta(seconds=10)
    )
    for _ in range(3):
        assert connect(app)[0].status == 200
    before = snapshot(app.storage)
    reply, _ = connect(app)
    assert status_and_code(reply) == (429, "rate_limited")
    assert _retry_after(reply) == 51  # 50 s left in the window, rounded up
    assert snapshot(app.storage) == before
    assert connect(app, source_ip="198.51.100.2")[0].status == 200
    _frozen(app, T0 + timedelta(seconds=60))
    assert connect(app)[0].status == 200  # next window


def test_forged_calls_do_not_consume_anyone_s_budget():
    app = make_app(require_token=False, connect_rate_per_ip="2/60")
    for _ in range(20):
        assert connect(app, secret="guess")[0].status == 403
    assert app.storage.counters == {}
    assert connect(app)[0].status == 200


@pytest.mark.parametrize(
    "header_value",
    [
        "203.0.113.10, 198.51.100.1",
        " 203.0.113.10",
        "203.0.113.10:443",
        "not-an-ip",
        "203.0.113.10\r\nX-Evil: 1",
        "203.0.113.10\x00",
        "x" * 10_000,
        "user:7",
        "connect:user:7",
        "::ffff:203.0.113.10",
        "2001:db8::1%eth0",
    ],
    ids=repr,
)
def test_source_ip_header_content_cannot_shape_the_counter_key(header_value):
    app = make_app(require_token=False, connect_rate_per_ip="100/60")
    reply, cid = connect(app, source_ip=header_value)
    assert reply.status == 200
    keys = [key for key, _ in app.storage.counters]
    assert len(keys) == 1
    key = keys[0]
    assert key.startswith("connect:ip:")
    assert len(key) <= len("connect:ip:") + 45  # an IPv6 /64 at most
    assert "\n" not in key and "\x00" not in key and "user" not in key
    stored = app.storage.get_session(cid).source_ip
    assert len(stored) <= 64 and stored.isprintable()


def test_ipv6_clients_are_limited_per_64_and_mapped_ipv4_as_ipv4():
    app = make_app(require_token=False, connect_rate_per_ip="2/60")
    assert connect(app, source_ip="2001:db8:1:2::1")[0].status == 200
    assert connect(app, source_ip="2001:db8:1:2:ffff::9")[0].status == 200
    assert connect(app, source_ip="2001:db8:1:2:abcd::1")[0].status == 429  # same /64
    assert connect(app, source_ip="2001:db8:1:3::1")[0].status == 200  # another /64
    assert connect(app, source_ip="203.0.113.7")[0].status == 200
    assert connect(app, source_ip="::ffff:203.0.113.7")[0].status == 200
    assert connect(app, source_ip="::ffff:203.0.113.7")[0].status == 429


def test_x_forwarded_for_is_only_a_fallback_and_is_normalised():
    app = make_app(require_token=False, connect_rate_per_ip="1/60")
    cid = new_connection_id()
    headers = gateway_headers("connect", cid, secret=SECRET)
    del headers["X-Apigw-Ws-Source-Ip"]
    headers["X-Forwarded-For"] = "198.51.100.5, 10.0.0.1"
    assert app.handle(from_http("connect", headers)).status == 200
    assert app.storage.get_session(cid).source_ip == "198.51.100.5"
    # with the mapped header present, X-Forwarded-For is ignored
    headers = gateway_headers("connect", new_connection_id(), secret=SECRET, source_ip="192.0.2.1")
    headers["X-Forwarded-For"] = "198.51.100.5"
    assert app.handle(from_http("connect", headers)).status == 200


def test_messages_per_connection_429_runs_no_handler():
    app = _frozen(make_app(require_token=False, message_rate_per_connection="2/10"), T0)
    ran: list[int] = []
    app.add_handler("count", lambda ctx, m: ran.append(1))
    _, cid = connect(app)
    _, other = connect(app)
    assert message(app, cid, '{"action": "count"}').status == 200
    assert message(app, cid, '{"action": "not json').status == 400  # bad input counts too
    reply = message(app, cid, '{"action": "count"}')
    assert status_and_code(reply) == (429, "rate_limited")
    assert _retry_after(reply) == 11
    assert ran == [1]
    assert message(app, other, '{"action": "count"}').status == 200


def test_token_redemptions_per_user_are_limited_at_connect_not_at_issuance():
    """``token_rate_per_user`` counts tokens where they are redeemed: issuing is an HMAC
    (never a 429, no storage), the 3rd token ``$connect`` of a 2/60 window is the 429."""
    from apigw_ws_core.tokens import TokenRequest, token_endpoint

    app = _frozen(
        make_app(token_rate_per_user="2/60", connect_rate_per_ip=None), T0 + timedelta(seconds=59)
    )
    tokens = [app.issue_token("1")[0] for _ in range(40)]
    for _ in range(40):  # nor through the endpoint
        assert token_endpoint(app, TokenRequest(user_id="1")).status == 200
    assert app.storage.counters == {} and app.storage.tokens == {}
    assert connect(app, query=f"ws_token={tokens[0]}")[0].status == 200
    assert connect(app, query=f"ws_token={tokens[1]}")[0].status == 200
    before = snapshot(app.storage)["sessions"]
    reply, cid = connect(app, query=f"ws_token={tokens[2]}")
    assert status_and_code(reply) == (429, "rate_limited")
    assert _retry_after(reply) == 2 and reply.status == 429
    assert app.storage.get_session(cid) is None and app.storage.sessions == before
    # other users are counted apart
    assert connect(app, query=f"ws_token={app.issue_token('2')[0]}")[0].status == 200
    # the next window: the throttled token was redeemed (burnt), replays do not count
    _frozen(app, T0 + timedelta(seconds=60))
    assert status_and_code(connect(app, query=f"ws_token={tokens[2]}")[0]) == (
        401,
        "invalid_token",
    )
    for _ in range(5):
        assert connect(app, query=f"ws_token={tokens[0]}")[0].status == 401
        assert connect(app, query="ws_token=forged")[0].status == 401
    assert connect(app, query=f"ws_token={tokens[3]}")[0].status == 200
    assert connect(app, query=f"ws_token={tokens[4]}")[0].status == 200
    assert connect(app, query=f"ws_token={tokens[5]}")[0].status == 429


def test_the_default_token_limit_is_30_redemptions_a_minute():
    app = _frozen(make_app(connect_rate_per_ip=None), T0)
    tokens = [app.issue_token("1")[0] for _ in range(31)]
    for token in tokens[:30]:
        assert connect(app, query=f"ws_token={token}")[0].status == 200
    assert status_and_code(connect(app, query=f"ws_token={tokens[30]}")[0]) == (
        429,
        "rate_limited",
    )


def test_per_user_connect_limit_counts_success_and_failure():
    app = make_app(connect_rate_per_user="2/60", connect_rate_per_ip=None, token_rate_per_user=None)
    token, _ = app.issue_token("5")
    assert connect(app, query=f"ws_token={token}")[0].status == 200
    token, _ = app.issue_token("5", channel="a")
    assert connect(app, query=f"ws_token={token}&channel=b")[0].status == 401
    token, _ = app.issue_token("5")
    assert connect(app, query=f"ws_token={token}")[0].status == 429


def test_long_user_ids_never_overflow_the_counter_column():
    storage = MemoryStorage()
    app = WebSocketApp(
        storage=storage,
        transport=RecordingTransport(),
        config=Config(secret=SECRET, connect_rate_per_user="5/60"),
    )
    uid = "u" * 64
    token, _ = app.issue_token(uid)
    reply, _ = connect(app, query=f"ws_token={token}")
    assert reply.status == 200
    assert all(len(key) <= MAX_KEY_LENGTH for key, _ in storage.counters)
    from apigw_ws_core.limits import StorageRateLimiter

    limiter = StorageRateLimiter(storage)
    long_key = "k" * 5000
    for _ in range(3):
        limiter.incr(long_key, 60, T0)
    assert max(len(key) for key, _ in storage.counters) <= MAX_KEY_LENGTH
    assert limiter.incr(long_key, 60, T0) == 4  # the shortened key is stable
    assert limiter.incr("k" * 4999 + "j", 60, T0) == 1  # and distinct


def test_memory_limiter_counts_exactly_under_threads():
    limiter = MemoryRateLimiter()
    results: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(20)

    def worker() -> None:
        barrier.wait()
        for _ in range(50):
            value = limiter.incr("k", 60, T0)
            with lock:
                results.append(value)

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(1, 1001))


# --- Redis ------------------------------------------------------------------------------


@pytest.fixture
def redis_client(redis_url):
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(redis_url)
    client.ping()
    yield client
    client.close()


@pytest.fixture
def redis_limiter(redis_client):
    prefix = f"apigw-ws-sec-{secrets.token_hex(4)}:"
    yield RedisRateLimiter(redis_client, prefix=prefix)
    keys = list(redis_client.scan_iter(match=f"{prefix}*"))
    if keys:
        redis_client.delete(*keys)


@pytest.mark.redis
def test_redis_counts_concurrent_hits_exactly(redis_limiter, redis_url):
    import redis

    rate = RateLimit(limit=700, window=60)
    threads_n, per_thread = 50, 20
    barrier = threading.Barrier(threads_n)
    passed: list[int] = []
    limited: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        # one client per thread, like one per process in a real deployment
        own = RedisRateLimiter(redis.Redis.from_url(redis_url), prefix=redis_limiter.prefix)
        barrier.wait(timeout=30)
        for _ in range(per_thread):
            try:
                own.hit("connect:ip:203.0.113.1", rate, T0 + timedelta(seconds=30))
            except RateLimited as exc:
                with lock:
                    limited.append(exc.retry_after)
            else:
                with lock:
                    passed.append(1)
        own.client.close()

    threads = [threading.Thread(target=worker) for _ in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(passed) == 700
    assert len(limited) == threads_n * per_thread - 700
    assert set(limited) == {31}
    assert redis_limiter.incr("connect:ip:203.0.113.1", 60, T0 + timedelta(seconds=30)) == 1001


@pytest.mark.redis
def test_redis_windows_expiry_and_retry_after(redis_limiter, redis_client):
    rate = RateLimit(limit=2, window=10)
    at = T0 + timedelta(seconds=3)
    redis_limiter.hit("msg:abc", rate, at)
    redis_limiter.hit("msg:abc", rate, at)
    with pytest.raises(RateLimited) as exc:
        redis_limiter.hit("msg:abc", rate, at)
    assert exc.value.retry_after == 8
    redis_limiter.hit("msg:abc", rate, T0 + timedelta(seconds=10))  # next window
    redis_limiter.hit("msg:other", rate, at)  # other key
    keys = list(redis_client.scan_iter(match=f"{redis_limiter.prefix}*"))
    assert len(keys) == 3
    assert all(0 < redis_client.ttl(k) <= 11 for k in keys)


@pytest.mark.redis
def test_redis_limiter_in_the_pipeline(redis_limiter):
    app = WebSocketApp(
        storage=MemoryStorage(),
        transport=RecordingTransport(),
        config=Config(secret=SECRET, require_token=False, connect_rate_per_ip="2/60"),
        rate_limiter=redis_limiter,
    )
    assert connect(app)[0].status == 200
    assert connect(app)[0].status == 200
    reply, _ = connect(app)
    assert status_and_code(reply) == (429, "rate_limited")
    assert 1 <= _retry_after(reply) <= 61
    assert app.storage.counters == {}  # counters live in Redis, not in storage


def _django_cache_limiter() -> Any:
    try:
        from apigw_ws_django.limits import CacheRateLimiter
    except ImportError:  # pragma: no cover - the Django adapter is always there in CI
        pytest.skip("apigw_ws_django.limits.CacheRateLimiter is not available")
    return CacheRateLimiter


def test_django_cache_limiter_locmem():
    """The Django adapter's cache limiter counts and answers like the others."""
    from django.core.cache import caches

    limiter = _django_cache_limiter()(caches["default"], prefix=f"sec-{secrets.token_hex(4)}:")
    rate = RateLimit(limit=3, window=60)
    for _ in range(3):
        limiter.hit("connect:ip:1", rate, T0 + timedelta(seconds=15))
    with pytest.raises(RateLimited) as exc:
        limiter.hit("connect:ip:1", rate, T0 + timedelta(seconds=15))
    assert exc.value.retry_after == 46
    limiter.hit("connect:ip:2", rate, T0)
    limiter.hit("connect:ip:1", rate, T0 + timedelta(seconds=60))


@pytest.mark.redis
def test_django_redis_cache_limiter_counts_concurrent_hits_exactly(redis_url):
    """Django's RedisCache against the real server: 50 threads, exact counts."""
    from django.conf import settings as dj_settings

    if "redis" not in dj_settings.CACHES:
        pytest.skip("tests.django_settings has no 'redis' cache (APIGW_WS_TEST_REDIS_URL)")
    prefix = f"sec-{secrets.token_hex(4)}:"
    limiter = _django_cache_limiter()("redis", prefix=prefix)
    rate = RateLimit(limit=300, window=60)
    barrier = threading.Barrier(50)
    outcomes: list[int | None] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait(timeout=30)
        for _ in range(10):
            try:
                limiter.hit("msg:abc", rate, T0 + timedelta(seconds=20))
                result: int | None = None
            except RateLimited as exc:
                result = exc.retry_after
            with lock:
                outcomes.append(result)

    threads = [threading.Thread(target=worker) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert outcomes.count(None) == 300
    assert outcomes.count(41) == 200
    import redis

    client = redis.Redis.from_url(redis_url)  # never cache.clear(): the db is shared
    keys = list(client.scan_iter(match=f"*{prefix}*"))
    assert keys
    client.delete(*keys)
    client.close()
