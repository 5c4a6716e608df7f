"""Plain WSGI: ``examples/wsgi_sqla/app.py`` (SqlaStorage + ``make_wsgi_app``, no Flask) served
by werkzeug on loopback and called over real HTTP, as API Gateway would."""

from __future__ import annotations

import importlib.util
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from werkzeug.serving import make_server

from apigw_ws_core.testing import RecordingTransport, gateway_headers, new_connection_id
from tests.sqla.dbs import Database

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "wsgi_sqla" / "app.py"
SECRET = "wsgi-secret"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("wsgi_sqla_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def served(db: Database) -> Iterator[tuple[Any, RecordingTransport, str]]:
    transport = RecordingTransport()
    ws, application = load_example().build(db.storage, secret=SECRET, transport=transport)
    server = make_server("127.0.0.1", 0, application, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ws, transport, f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()


def call(base: str, route: str, cid: str, body: bytes = b"", query: str = "", **kw: Any):
    url = f"{base}/ws/{route}" + (f"?{query}" if query else "")
    headers = gateway_headers(route, cid, secret=kw.pop("secret", SECRET), **kw)
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def test_plain_wsgi_end_to_end(served, db: Database):
    ws, transport, base = served
    token, _ = ws.issue_token("17")
    alice, bob = new_connection_id(), new_connection_id()
    assert call(base, "connect", alice, query=f"channel=lobby&ws_token={token}")[0] == 200
    token, _ = ws.issue_token("18")
    assert call(base, "connect", bob, query=f"channel=lobby&ws_token={token}")[0] == 200
    assert db.storage.get_session(alice).user_id == "17"

    status, body, _ = call(
        base, "default", alice, json.dumps({"handler": "echo", "text": "hi"}).encode()
    )
    assert status == 200 and json.loads(body) == {"type": "echo", "text": "hi"}

    status, _, _ = call(base, "default", alice, b'{"action": "say", "text": "hello"}')
    assert status == 200
    said = {"type": "said", "by": "17", "text": "hello"}
    assert transport.messages_for(alice) == [said] and transport.messages_for(bob) == [said]

    status, body, _ = call(base, "default", bob, b'{"action": "subscribe", "channel": "news"}')
    assert status == 200 and json.loads(body)["type"] == "subscribed"
    assert db.storage.channels_of(bob) == ["lobby", "news"]

    assert call(base, "disconnect", alice)[0] == 200
    assert call(base, "disconnect", alice)[0] == 200
    assert db.storage.get_session(alice).connected is False


def test_plain_wsgi_rejections(served, db: Database):
    _ws, _transport, base = served
    cid = new_connection_id()
    status, body, _ = call(base, "connect", cid, query="ws_token=nope", secret="bad")
    assert status == 403 and json.loads(body)["error"] == "forbidden"
    status, body, _ = call(base, "connect", cid, query="ws_token=nope")
    assert status == 401 and json.loads(body)["error"] == "invalid_token"
    status, body, _ = call(base, "default", cid, b"x" * 131073)
    assert status == 413
    assert db.storage.get_session(cid) is None


def test_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'env.sqlite3'}")
    monkeypatch.setenv("APIGW_WS_SECRET", "s")
    ws, application = load_example().from_environment()
    assert ws.config.secret == "s" and ws.config.require_token is False
    assert callable(application)
    assert "flask" not in EXAMPLE.read_text().lower()  # no web framework at all
