"""``examples/flask_chat``: through Flask's test client, and end to end with
``flask apigw-ws local`` (Flask dev server + local gateway as subprocesses) and a real
WebSocket client."""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from apigw_ws_core.testing import RecordingTransport, gateway_headers, new_connection_id

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "flask_chat"
SECRET = "dev-secret-change-me"


@pytest.fixture
def chat_module(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    sys.modules.pop("chat", None)
    import chat

    yield chat
    sys.modules.pop("chat", None)


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf[-_]token"\s+(?:content|value)="([^"]+)"', html)
    assert match, html
    return match.group(1)


def test_chat_app_with_test_client(chat_module, tmp_path):
    transport = RecordingTransport()
    app = chat_module.create_app(
        {"DATABASE_URL": f"sqlite:///{tmp_path / 'chat.sqlite3'}", "TRANSPORT": transport}
    )
    client = app.test_client()
    assert client.get("/").status_code == 302  # login required
    csrf = _csrf(client.get("/login").get_data(as_text=True))
    resp = client.post("/login", data={"username": "alice", "password": "nope", "csrf_token": csrf})
    assert b"wrong password" in resp.data
    client.post("/login", data={"username": "alice", "password": "demo", "csrf_token": csrf})
    page = client.get("/?room=random").get_data(as_text=True)
    assert '"initialRoom": "room-random"' in page and "/apigw-ws/apigw-ws.js" in page
    assert client.get("/apigw-ws/apigw-ws.js").status_code == 200
    assert client.get("/chat-ui/chat_ui/chat.js").status_code == 200
    assert client.get("/?room=secret").status_code == 404
    csrf = _csrf(page)
    assert client.post("/ws/token", json={"channel": "room-random"}).status_code == 400  # CSRF
    token = client.post(
        "/ws/token", json={"channel": "room-random"}, headers={"X-CSRFToken": csrf}
    ).get_json()["token"]

    gateway = app.test_client()  # API Gateway: no cookies, no CSRF token, the secret

    def post(route: str, cid: str, body: Any = None, query: str = ""):
        data = b"" if body is None else json.dumps(body).encode()
        url = f"/ws/{route}" + (f"?{query}" if query else "")
        return gateway.post(url, data=data, headers=gateway_headers(route, cid, secret=SECRET))

    cid = new_connection_id()
    assert post("connect", cid, query=f"channel=room-random&ws_token={token}").status_code == 200
    assert post("default", cid, {"handler": "join"}).status_code == 200
    assert (
        post("default", cid, {"action": "$presence", "channel": "room-random"}).status_code == 200
    )
    assert transport.messages_for(cid) == [
        {"type": "history", "room": "room-random", "messages": []},
        {"type": "$presence", "channel": "room-random", "members": ["alice"], "connections": 1},
    ]
    # a second tab of bob's: alice hears bob arrive (presence event), then his line
    bob = new_connection_id()
    with app.test_client() as bob_browser:
        login_csrf = _csrf(bob_browser.get("/login").get_data(as_text=True))
        bob_browser.post(
            "/login", data={"username": "bob", "password": "demo", "csrf_token": login_csrf}
        )
        bob_token = bob_browser.post(
            "/ws/token",
            json={"channel": "room-random"},
            headers={"X-CSRFToken": _csrf(bob_browser.get("/?room=random").get_data(True))},
        ).get_json()["token"]
    query = f"channel=room-random&device=mobile&ws_token={bob_token}"
    assert post("connect", bob, query=query).status_code == 200
    assert transport.messages_for(cid)[-1] == {
        "type": "member_added",
        "channel": "room-random",
        "user_id": "bob",
    }
    line = {"handler": "chat_message", "text": " hi ", "id": "0123456789-abcdef"}
    assert post("default", bob, line).status_code == 200
    received = transport.messages_for(cid)[-1]
    assert received["channel"] == "room-random" and received["offset"] == 1
    data = received["data"]
    assert (data["user"], data["text"], data["id"], data["device"]) == (
        "bob",
        "hi",
        "0123456789-abcdef",
        "mobile",
    )
    # not echoed to bob: only the offset of his own line
    assert transport.messages_for(bob) == [
        {"type": "$skip", "channel": "room-random", "offset": 1, "epoch": received["epoch"]}
    ]
    # the next page load gets the line from the room's history
    assert post("default", cid, {"handler": "join"}).status_code == 200
    assert transport.messages_for(cid)[-1]["messages"] == [data]
    # Rooms need a login; other channels do not exist.
    assert post("connect", new_connection_id(), query="channel=room-general").status_code == 401
    assert post("disconnect", cid).status_code == 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"`flask apigw-ws local` exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"port {port} did not open")


@pytest.mark.slow
def test_flask_apigw_ws_local_end_to_end(tmp_path):
    websockets_sync = pytest.importorskip("websockets.sync.client")
    pytest.importorskip("aiohttp")
    gw_port, app_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(str(ROOT / d) for d in (".", "adapters/flask", "storage")),
        "FLASK_DATABASE_URL": f"sqlite:///{tmp_path / 'chat.sqlite3'}",
    }
    cmd = [sys.executable, "-m", "flask", "--app", "chat", "apigw-ws", "local"]
    cmd += ["--port", str(gw_port), "--app-port", str(app_port)]
    log = (tmp_path / "local.log").open("w+")
    proc = subprocess.Popen(
        cmd, cwd=EXAMPLE, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        _wait_port(app_port, proc)
        _wait_port(gw_port, proc)
        base = f"http://127.0.0.1:{app_port}"
        opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        csrf = _csrf(opener.open(f"{base}/login", timeout=10).read().decode())
        form = f"username=bob&password=demo&csrf_token={csrf}".encode()
        page = opener.open(f"{base}/login", data=form, timeout=10).read().decode()
        request = urllib.request.Request(
            f"{base}/ws/token",
            data=b'{"channel": "room-general"}',
            headers={"Content-Type": "application/json", "X-CSRFToken": _csrf(page)},
        )
        token = json.loads(opener.open(request, timeout=10).read())["token"]
        url = f"ws://127.0.0.1:{gw_port}/local?channel=room-general&ws_token={token}"
        with websockets_sync.connect(url, open_timeout=10) as conn:
            conn.send(json.dumps({"handler": "join"}))
            history = json.loads(conn.recv(timeout=10))
            assert history == {"type": "history", "room": "room-general", "messages": []}
            conn.send(json.dumps({"action": "$presence", "channel": "room-general"}))
            presence = json.loads(conn.recv(timeout=10))
            assert presence["members"] == ["bob"]
            conn.send(json.dumps({"handler": "chat_message", "text": "hello"}))
            skip = json.loads(conn.recv(timeout=10))  # our own line: its offset, not the line
            assert (skip["type"], skip["channel"], skip["offset"]) == ("$skip", "room-general", 1)
    except BaseException:
        log.seek(0)
        print(log.read())
        raise
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        log.close()
    assert proc.returncode in (0, 1, -signal.SIGINT)
