"""Issue 14 end to end through the plain WSGI entry point and the local gateway, with real
WebSocket clients: a client force-closed by the gateway recovers the 20 messages it missed
(in order, once), a duplicate post carries the same offset, presence events, excluding the
sender, and sends filtered by connection attributes."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.credentials import Credentials

from apigw_ws_core import Config, WebSocketApp
from apigw_ws_core.http1 import ManagementApiTransport
from apigw_ws_core.wsgi import make_wsgi_app
from apigw_ws_storage.sqla import SqlaStorage
from tests.local.conftest import SECRET, _ws_connect

pytest.importorskip("aiohttp")
from apigw_ws_core.local.config import config_from_backend
from apigw_ws_core.local.testing import LocalGateway, wait_until


@pytest.fixture
def stack(tmp_path) -> Iterator[tuple[WebSocketApp, LocalGateway]]:
    from sqlalchemy import create_engine
    from werkzeug.serving import make_server

    engine = create_engine(f"sqlite:///{tmp_path / 'ws.sqlite3'}")
    storage = SqlaStorage(engine)
    storage.create_tables()
    config = Config(
        secret=SECRET,
        require_token=False,
        history=[{"pattern": "room-*", "size": 200, "ttl": 3600}],
        presence_channels=["presence-*"],
        connection_attributes=[{"name": "device", "choices": ["mobile", "desktop"]}],
        send_max_attempts=2,
    )
    app = WebSocketApp(storage=storage, config=config)

    @app.handler("say")
    def say(ctx, message):
        return {"delivered": ctx.broadcast({"type": "said", "text": message["text"]}).delivered}

    server = make_server("127.0.0.1", 0, make_wsgi_app(app, prefix="/ws"), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    api = config_from_backend(f"http://127.0.0.1:{server.port}/ws/", secret=SECRET)
    with LocalGateway(api) as gateway:
        app.transport = ManagementApiTransport(
            gateway.management_endpoint, credentials=Credentials("t", "t")
        )
        try:
            yield app, gateway
        finally:
            app.close()
            server.shutdown()
            thread.join(5)
            server.server_close()
            engine.dispose()


def recv(conn: Any) -> Any:
    return json.loads(conn.recv(timeout=10))


def open_ws(app: WebSocketApp, gateway: LocalGateway, query: str) -> tuple[Any, str]:
    before = set(gateway.connection_ids())
    conn = _ws_connect(f"{gateway.ws_url}?{query}")
    cid = wait_until(lambda: next(iter(set(gateway.connection_ids()) - before), None))
    return conn, cid


def test_recovery_after_the_gateway_closes_the_connection(stack):
    app, gateway = stack
    alice, cid = open_ws(app, gateway, "channel=room-1")
    alice.send(json.dumps({"action": "$recover", "channels": {"room-1": None}}))
    assert recv(alice)["offset"] == 0
    app.send({"n": 0}, channel="room-1")
    first = recv(alice)
    assert first["offset"] == 1 and first["data"] == {"n": 0}
    assert gateway.force_close(cid)
    wait_until(lambda: not app.storage.get_session(cid).connected)
    for n in range(1, 21):
        assert app.send({"n": n}, channel="room-1").delivered == 0
    alice.close()
    alice, cid = open_ws(app, gateway, "channel=room-1")
    position = {"epoch": first["epoch"], "offset": first["offset"]}
    alice.send(json.dumps({"action": "$recover", "channels": {"room-1": position}}))
    frame = recv(alice)
    assert frame["type"] == "$recovered" and frame["recovered"] and frame["final"]
    assert [m["data"]["n"] for m in frame["messages"]] == list(range(1, 21))
    assert [m["offset"] for m in frame["messages"]] == list(range(2, 22))
    # then live ones, continuing the same offsets
    app.send({"n": 21}, channel="room-1")
    assert recv(alice)["offset"] == 22
    # an ambiguous post (delivered, then answered 500) is retried: the copy has the same
    # offset, which is how a client recognises and drops it
    gateway.faults(inject_5xx_every=1)
    report = app.send({"n": 22}, channel="room-1")
    gateway.faults(inject_5xx_every=0)
    assert report.ambiguous
    copies = [recv(alice), recv(alice)]
    assert copies[0] == copies[1] and copies[0]["offset"] == 23
    alice.close()


def test_presence_exclude_and_attributes_through_the_gateway(stack):
    app, gateway = stack
    t1, _ = app.issue_token("1")
    t2, _ = app.issue_token("2")
    watcher, _ = open_ws(app, gateway, f"channel=presence-x&device=desktop&ws_token={t1}")
    phone, _ = open_ws(app, gateway, f"channel=presence-x&device=mobile&ws_token={t2}")
    assert recv(watcher) == {"type": "member_added", "channel": "presence-x", "user_id": "2"}
    phone.send(json.dumps({"action": "$presence", "channel": "presence-x"}))
    assert recv(phone)["members"] == ["1", "2"]
    phone.send(json.dumps({"action": "say", "text": "hi"}))
    assert recv(phone) == {"delivered": 1}  # the reply (two-way route), not the message
    assert recv(watcher) == {"type": "said", "text": "hi"}
    report = app.send({"to": "phones"}, channel="presence-x", attributes={"device": "mobile"})
    assert report.delivered == 1 and recv(phone) == {"to": "phones"}
    phone.close()
    assert recv(watcher) == {"type": "member_removed", "channel": "presence-x", "user_id": "2"}
    watcher.close()
