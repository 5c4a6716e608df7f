"""Issue 12 item 2 end to end: a dependency is killed, black-holed and restored behind a
:class:`~tests.faults.proxy.FaultProxy` while real ``websockets`` clients talk through the
local gateway to a real app server (plain WSGI on Werkzeug's threaded server).

* PostgreSQL and MariaDB as the storage (SQLAlchemy, :func:`create_bounded_engine`);
* Redis as the message rate limiter (``RedisRateLimiter`` on a client with socket timeouts),
  with both failure policies.

Every event that fails is answered with a JSON 503 and a stable code (``$connect``: the
handshake is refused with 503); the app recovers by itself once the dependency is back;
while it is black-holed each request costs at most the configured timeout (PostgreSQL: its
read deadline plus libpq's connect timeout, which cannot be under 2 s). The shared servers
are never touched: only the proxy in front of them fails.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from sqlalchemy import MetaData
from sqlalchemy.orm import sessionmaker

from apigw_ws_core import Config, MemoryStorage, WebSocketApp
from apigw_ws_core.limits import RedisRateLimiter
from apigw_ws_core.testing import RecordingTransport
from apigw_ws_core.wsgi import make_wsgi_app
from apigw_ws_storage.sqla import SqlaStorage, create_bounded_engine, make_models

from .proxy import FaultProxy

pytest.importorskip("aiohttp")
from urllib.parse import urlsplit

from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from apigw_ws_core.local.config import config_from_backend
from apigw_ws_core.local.testing import LocalGateway

pytestmark = pytest.mark.slow

SECRET = "fault-secret-0123456789"
#: Client-side timeout given to every driver (seconds).
TIMEOUT = 1.0
#: How late a reply may come on top of the bound (thread scheduling on a loaded CI box).
SLACK = 1.5


@attrs.define
class Stack:
    app: WebSocketApp
    gateway: LocalGateway
    proxy: FaultProxy
    name: str = ""

    def open(self, token: str | None = None) -> ClientConnection:
        """A WebSocket through the gateway, its token in the subprotocol."""
        token = token or self.app.issue_token("7")[0]
        conn = ws_connect(
            self.gateway.ws_url,
            subprotocols=["apigw-ws", f"apigw-ws.token.{token}"],  # type: ignore[list-item]
            open_timeout=15,
        )
        assert conn.subprotocol == "apigw-ws"
        return conn

    def ask(self, conn: ClientConnection, action: str = "ping") -> tuple[Any, float]:
        """Send a message, return the decoded reply and how long it took."""
        start = time.monotonic()
        conn.send(json.dumps({"action": action}))
        reply = json.loads(conn.recv(timeout=20))
        took = time.monotonic() - start
        # shown with ``pytest -s``: the figures quoted in docs/security.rst
        print(f"[{self.name or 'redis'} {self.proxy.mode}] {action}: {took:.3f} s {reply}")
        return reply, took


def _serve(app: WebSocketApp, proxy: FaultProxy, name: str = "") -> Iterator[Stack]:
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, make_wsgi_app(app, prefix="/ws"), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        api = config_from_backend(f"http://127.0.0.1:{server.port}/ws/", secret=SECRET)
        with LocalGateway(api) as gateway:
            yield Stack(app, gateway, proxy, name)
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()


def _assert_503(reply: Any, code: str) -> None:
    assert reply == {"error": code, "message": reply["message"]}, reply


# --- the storage behind the proxy ---------------------------------------------------------


@pytest.fixture(
    params=[
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ]
)
def storage_stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    from tests.sqla.dbs import driver_url

    name = request.param
    url = driver_url(
        request.getfixturevalue("postgres_url" if name == "postgresql" else "mariadb_url")
    )
    target = urlsplit(url)
    with FaultProxy(target.hostname or "127.0.0.1", target.port or 0) as proxy:
        prefix = f"flt_{int(time.time() * 1000) % 10**8}_"
        models = make_models(MetaData(), prefix=prefix)
        direct = SqlaStorage(create_bounded_engine(url), models=models)
        direct.create_tables()
        engine = create_bounded_engine(proxy.url_for(url), timeout=TIMEOUT, pool_size=4)
        storage = SqlaStorage(sessionmaker(engine), models=models)
        app = WebSocketApp(
            storage=storage,
            transport=RecordingTransport(),
            config=Config(secret=SECRET, connect_rate_per_ip=None),
        )

        @app.handler("whoami")
        def whoami(ctx: Any, message: Any) -> Any:
            return {"user": ctx.user_id}

        try:
            yield from _serve(app, proxy, name)
        finally:
            engine.dispose()
            direct.drop_tables()


def test_database_killed_black_holed_and_restored(storage_stack: Stack) -> None:
    stack, proxy = storage_stack, storage_stack.proxy
    pg = stack.name == "postgresql"
    spare, _ = stack.app.issue_token("7")  # issued while the database is up
    # PostgreSQL: the read deadline, then libpq's connect timeout (>= 2 s) for the new one
    bound = (TIMEOUT + max(2.0, TIMEOUT) if pg else 2 * TIMEOUT) + SLACK
    with stack.open() as alice:
        assert stack.ask(alice, "whoami")[0] == {"user": "7"}

        proxy.kill()
        for _ in range(3):
            reply, took = stack.ask(alice, "whoami")
            _assert_503(reply, "storage_unavailable")
            assert took < TIMEOUT + SLACK
        with pytest.raises(InvalidStatus) as refused:
            stack.open(spare)
        assert refused.value.response.status_code == 503
        assert json.loads(refused.value.response.body)["error"] == "storage_unavailable"
        # a token is signed, not stored: issuing one needs no database
        during, _ = stack.app.issue_token("7")

        proxy.restore()  # recovers unaided: pre-ping replaces the dead pooled connections
        assert stack.ask(alice, "whoami")[0] == {"user": "7"}
        for token in (spare, during):  # the 503 spent nothing: both open a connection now
            with stack.open(token) as again:
                assert stack.ask(again, "whoami")[0] == {"user": "7"}

        proxy.blackhole()
        for _ in range(2):
            reply, took = stack.ask(alice, "whoami")
            _assert_503(reply, "storage_unavailable")
            assert took < bound, f"{took:.2f} s with the database black-holed"

        proxy.restore()
        assert stack.ask(alice, "whoami")[0] == {"user": "7"}
        with stack.open() as bob:
            assert stack.ask(bob, "whoami")[0] == {"user": "7"}


# --- Redis as the rate limiter behind the proxy -----------------------------------------


@pytest.fixture
def redis_stack(redis_url: str) -> Iterator[Stack]:
    target = urlsplit(redis_url)
    with FaultProxy(target.hostname or "127.0.0.1", target.port or 6379) as proxy:
        limiter = RedisRateLimiter.from_url(
            proxy.url_for(redis_url), timeout=TIMEOUT, prefix=f"flt-{time.time_ns()}:"
        )
        client = limiter.client
        app = WebSocketApp(
            storage=MemoryStorage(),
            transport=RecordingTransport(),
            config=Config(secret=SECRET),
            message_rate_limiter=limiter,
        )
        try:
            yield from _serve(app, proxy)
        finally:
            client.close()


@pytest.mark.redis
def test_redis_limiter_killed_and_black_holed_under_both_policies(redis_stack: Stack) -> None:
    stack, proxy = redis_stack, redis_stack.proxy
    with stack.open() as conn:
        assert stack.ask(conn)[0] == {"type": "pong"}
        for fault in (proxy.kill, proxy.blackhole):
            fault()
            # open (the default): messages go on, each delayed at most by the timeout
            stack.app.config = attrs.evolve(stack.app.config, rate_limiter_failure="open")
            reply, took = stack.ask(conn)
            assert reply == {"type": "pong"}
            assert took < TIMEOUT + SLACK
            # closed: a JSON 503 with its code, just as quickly
            stack.app.config = attrs.evolve(stack.app.config, rate_limiter_failure="closed")
            reply, took = stack.ask(conn)
            _assert_503(reply, "rate_limiter_unavailable")
            assert took < TIMEOUT + SLACK
            proxy.restore()
            assert stack.ask(conn)[0] == {"type": "pong"}  # recovered unaided
