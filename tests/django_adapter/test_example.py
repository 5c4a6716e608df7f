"""The Django chat example (examples/django_chat): migrate and seed on SQLite, its own test
suite, and ``manage.py apigw_ws_local`` for real: runserver + the local gateway, a login over
HTTP, a token from the token view, and a WebSocket client chatting through the gateway."""

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
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "django_chat"
READY = re.compile(r"apigw-ws local ready ws=(?P<ws>\S+) management=(?P<management>\S+)")


def _env(db: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    roots = [str(ROOT / p) for p in (".", "adapters/django", "storage")]
    env["PYTHONPATH"] = os.pathsep.join([*roots, env.get("PYTHONPATH", "")])
    env["CHAT_DATABASE"] = str(db)
    env.update(extra)
    return env


def _manage(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def example_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("django_chat") / "chat.sqlite3"
    env = _env(db)
    assert "no issues" in _manage(env, "check")
    assert "No changes detected" in _manage(env, "makemigrations", "--check", "--dry-run")
    _manage(env, "migrate", "--noinput")
    assert "users alice, bob, carol" in _manage(env, "seed_demo")
    _manage(env, "seed_demo")  # idempotent
    return db


def test_example_runs_its_own_tests(example_db: Path):
    out = _manage(_env(example_db), "test", "chat", "-v", "1")
    assert re.search(r"Ran \d+ tests", out) and "OK" in out


def _wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_apigw_ws_local_with_a_real_websocket_client(example_db: Path):
    pytest.importorskip("aiohttp")
    ws_client = pytest.importorskip("websockets.sync.client")
    web, gw = _free_port(), _free_port()
    env = _env(example_db, CHAT_WS_URL=f"ws://127.0.0.1:{gw}/local")
    proc = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "apigw_ws_local",
            "--port",
            str(gw),
            "--runserver-port",
            str(web),
            "--noreload",
            "--log-level",
            "WARNING",
        ],
        cwd=EXAMPLE,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        ready = None
        while ready is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            ready = READY.search(line)
        assert ready, "".join(lines)
        assert ready["management"] == f"http://127.0.0.1:{gw}/local"
        base = f"http://127.0.0.1:{web}"
        _wait_http(f"{base}/login/")

        # Log in as a browser would, then fetch a token with the CSRF header.
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        opener.open(f"{base}/login/").read()
        csrf = next(c.value for c in jar if c.name == "csrftoken")
        form = urllib.parse.urlencode(
            {"username": "alice", "password": "demo", "csrfmiddlewaretoken": csrf}
        ).encode()
        opener.open(urllib.request.Request(f"{base}/login/", form, headers={"Referer": base}))
        csrf = next(c.value for c in jar if c.name == "csrftoken")

        def token(channel: str) -> str:
            request = urllib.request.Request(
                f"{base}/ws-token/",
                json.dumps({"channel": channel}).encode(),
                headers={"X-CSRFToken": csrf, "Content-Type": "application/json"},
            )
            with opener.open(request) as response:
                return str(json.load(response)["token"])

        url = f"ws://127.0.0.1:{gw}/local?channel=room-general&ws_token="

        def recv(conn: Any) -> Any:
            return json.loads(conn.recv(timeout=15))

        with ws_client.connect(url + token("room-general"), origin=base, open_timeout=15) as a:
            a.send(json.dumps({"action": "join"}))
            assert recv(a)["type"] == "history"
            a.send(json.dumps({"action": "$presence", "channel": "room-general"}))
            presence = recv(a)
            assert presence["type"] == "$presence" and len(presence["members"]) == 1
            with ws_client.connect(
                url.replace("room-general", "room-general&device=mobile") + token("room-general"),
                origin=base,
                open_timeout=15,
            ) as b:
                b.send(json.dumps({"action": "chat_message", "text": "through the gateway"}))
                line = recv(a)["data"]
                assert (line["type"], line["name"], line["text"], line["device"]) == (
                    "chat_message",
                    "alice",
                    "through the gateway",
                    "mobile",
                )
                assert recv(b)["type"] == "$skip"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rest, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest, _ = proc.communicate()
        lines.append(rest or "")
    assert proc.returncode == 0, "".join(lines)
    # runserver was stopped with the gateway.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", web), timeout=1).close()
