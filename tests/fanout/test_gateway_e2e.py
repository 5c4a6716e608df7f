"""End to end through the local gateway: real WebSocket clients, 10% of them gone (their
$disconnect lost), 5% of management calls answered 429. Every live client receives the
broadcast exactly once; the gone ones are marked disconnected in one storage call."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.credentials import Credentials

from apigw_ws_core import Config, MemoryStorage, WebSocketApp
from apigw_ws_core.http1 import ManagementApiTransport
from apigw_ws_core.wsgi import make_wsgi_app

pytest.importorskip("aiohttp")
websockets_sync = pytest.importorskip("websockets.sync.client")
werkzeug_serving = pytest.importorskip("werkzeug.serving")

from apigw_ws_core.local.config import config_from_backend  # noqa: E402
from apigw_ws_core.local.testing import LocalGateway, wait_until  # noqa: E402

SECRET = "e2e-secret"
N = 60


class CountingStorage(MemoryStorage):
    def __init__(self) -> None:
        super().__init__()
        self.mark_calls: list[list[str]] = []

    def mark_disconnected(self, connection_ids, at):
        ids = list(connection_ids)
        self.mark_calls.append(ids)
        return super().mark_disconnected(ids, at)


@pytest.fixture
def stack() -> Iterator[tuple[WebSocketApp, CountingStorage, LocalGateway]]:
    storage = CountingStorage()
    app = WebSocketApp(
        storage=storage,
        config=Config(secret=SECRET, require_token=False, send_concurrency=16),
    )
    server = werkzeug_serving.make_server("127.0.0.1", 0, make_wsgi_app(app), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    api = config_from_backend(f"http://127.0.0.1:{server.port}/", secret=SECRET)
    with LocalGateway(api) as gateway:
        app.transport = ManagementApiTransport(
            gateway.management_endpoint, credentials=Credentials("test", "test")
        )
        try:
            yield app, storage, gateway
        finally:
            app.close()
            server.shutdown()
            thread.join(5)
            server.server_close()


def inject_429_every(gateway: LocalGateway, every: int) -> dict[str, int]:
    """Turn on the gateway's fault injection (every ``every``-th ``POST @connections``
    answers 429); returns a dict whose ``"injected"`` reads the gateway's counter."""

    def turn_on(gw: Any) -> None:
        gw.inject_429_every = every

    gateway.call(turn_on)

    class Counts(dict[str, int]):
        def __getitem__(self, key: str) -> int:
            assert key == "injected"
            return int(gateway.call(lambda gw: gw.counters["management_injected_429"]))

    return Counts()


def test_broadcast_exactly_once_with_gone_and_throttled(stack):
    app, storage, gateway = stack
    with contextlib.ExitStack() as stack_:
        clients = [
            stack_.enter_context(
                websockets_sync.connect(gateway.ws_url + "?channel=all", open_timeout=10)
            )
            for _ in range(N)
        ]
        run_scenario(app, storage, gateway, clients)


def run_scenario(app, storage, gateway, clients):
    """Learn ids, lose 10%, throttle 5%, broadcast, check exactly-once."""
    ids = wait_until(lambda: len(gateway.connection_ids()) == N and gateway.connection_ids())
    # Which client has which id: every client learns its id from a unicast.
    for cid in ids:
        assert app.send({"you": cid}, connection_id=cid).delivered == 1
    by_id = {json.loads(c.recv(timeout=10))["you"]: c for c in clients}
    assert sorted(by_id) == sorted(ids)

    # 10% go away; their $disconnect is lost (sessions stay "connected").
    gone = sorted(ids)[: N // 10]
    for cid in gone:
        by_id.pop(cid).close()
    wait_until(lambda: all(not storage.get_session(c).connected for c in gone))
    sessions = {c: storage.get_session(c) for c in gone}
    for cid, session in sessions.items():
        storage.create_session(
            type(session)(
                connection_id=cid,
                channel_name="all",
                connected=True,
                connected_at=session.connected_at,
            )
        )
    assert sum(len(b) for b in storage.iter_connection_ids(channel="all")) == N

    counts = inject_429_every(gateway, 20)
    storage.mark_calls.clear()
    report = app.send({"type": "news", "n": 1}, channel="all")

    assert counts["injected"] >= (N // 20) - 1 and report.throttled == counts["injected"]
    assert report.delivered == N - len(gone)
    assert sorted(report.gone) == gone and not report.failed
    assert report.retried >= counts["injected"]
    assert storage.mark_calls == [sorted(report.gone)] or (
        len(storage.mark_calls) == 1 and sorted(storage.mark_calls[0]) == gone
    )
    assert all(not storage.get_session(c).connected for c in gone)

    # exactly once: each live client's next two messages are the broadcast, then the
    # sentinel sent after the broadcast finished (a duplicate would come in between)
    assert app.send({"type": "sentinel"}, channel="all").delivered == N - len(gone)
    for client in by_id.values():
        assert json.loads(client.recv(timeout=10)) == {"type": "news", "n": 1}
        assert json.loads(client.recv(timeout=10)) == {"type": "sentinel"}
