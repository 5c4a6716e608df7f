"""Through the local gateway with a real WebSocket client: browser → gateway → Flask (werkzeug
on loopback) → SQLAlchemy, and back through the Management API."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.credentials import Credentials
from werkzeug.serving import make_server

from apigw_ws_core.http1 import ManagementApiTransport
from tests.flask_adapter.conftest import SECRET, build_app
from tests.sqla.dbs import Database

pytest.importorskip("aiohttp")
websockets_sync = pytest.importorskip("websockets.sync.client")
from apigw_ws_core.local.config import config_from_backend  # noqa: E402
from apigw_ws_core.local.testing import LocalGateway, wait_until  # noqa: E402


@pytest.fixture
def stack(db: Database) -> Iterator[tuple[Any, Any, LocalGateway]]:
    """Flask on a free loopback port, the local gateway in front of it."""
    app, ws, _ = build_app(db)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    api = config_from_backend(f"http://127.0.0.1:{server.port}/ws/", secret=SECRET)
    with LocalGateway(api) as gateway:
        # The real Management API client, pointed at the local gateway.
        transport = ManagementApiTransport(
            gateway.management_endpoint, credentials=Credentials("test", "test")
        )
        ws.state(app).core.transport = transport
        try:
            yield app, ws, gateway
        finally:
            transport.close()
            server.shutdown()
            thread.join(5)
            server.server_close()


def _token(app: Any, user: str) -> str:
    resp = app.test_client().post("/ws/token", headers={"X-Test-User": user})
    assert resp.status_code == 200
    return str(resp.get_json()["token"])


def _recv(conn: Any) -> Any:
    return json.loads(conn.recv(timeout=10))


def test_chat_through_the_local_gateway(stack, db: Database):
    app, ws, gateway = stack
    url = gateway.ws_url + "?channel=room&ws_token="
    with (
        websockets_sync.connect(url + _token(app, "1"), open_timeout=10) as alice,
        websockets_sync.connect(url + _token(app, "2"), open_timeout=10) as bob,
    ):
        ids = wait_until(
            lambda: gateway.connection_ids() if len(gateway.connection_ids()) == 2 else None
        )
        sessions = {db.storage.get_session(cid).user_id: cid for cid in ids}
        assert set(sessions) == {"1", "2"}

        alice.send(json.dumps({"handler": "echo", "text": "hi"}))
        assert _recv(alice) == {"type": "echo", "text": "hi", "user": {"id": "1"}}

        alice.send(json.dumps({"handler": "ping"}))
        assert _recv(alice) == {"type": "pong"}  # ctx.reply through @connections

        alice.send(json.dumps({"handler": "shout", "text": "yo", "room": "room"}))
        got = [_recv(alice), _recv(alice)]
        assert {"type": "shout", "text": "yo"} in got and {"delivered": 2} in got
        assert _recv(bob) == {"type": "shout", "text": "yo"}

        with app.app_context():
            assert ws.send({"type": "server"}, user="2").delivered == 1
        assert _recv(bob) == {"type": "server"}

        alice.send(json.dumps({"handler": "nope"}))
        # A two-way route forwards the integration's 400 body to the client.
        assert _recv(alice) == {"error": "unknown_handler", "message": "No such handler."}

        bob.close()
        wait_until(lambda: not db.storage.get_session(sessions["2"]).connected, timeout=10)
    wait_until(lambda: not db.storage.get_session(sessions["1"]).connected, timeout=10)
    assert db.storage.presence("room").connection_count == 0


def test_bad_token_is_refused_at_the_handshake(stack, db: Database):
    app, _ws, gateway = stack
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as info:
        websockets_sync.connect(gateway.ws_url + "?ws_token=forged", open_timeout=10)
    assert info.value.response.status_code == 401
    token = _token(app, "3")
    with pytest.raises(InvalidStatus) as info:
        websockets_sync.connect(
            gateway.ws_url + f"?channel=user.4&ws_token={token}", open_timeout=10
        )
    assert info.value.response.status_code == 403
    assert list(db.storage.iter_connection_ids()) == []


def test_token_in_the_subprotocol_through_the_local_gateway(stack):
    """Issue 17 item 5 through Flask: see ``tests/security/test_token_subprotocol.py``."""
    from tests.security.test_token_subprotocol import check_through_gateway

    app, ws, gateway = stack
    check_through_gateway(
        ws.state(app).core, gateway, user="1", origin="https://x.test", ping=False
    )
