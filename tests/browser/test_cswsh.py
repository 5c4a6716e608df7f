"""Cross-site WebSocket hijacking, in a real browser.

The Flask chat example runs behind the local gateway (as ``test_chat.py`` runs it), and a
page on another origin (a tiny ``http.server`` on another port of 127.0.0.1: the attacker)
is opened in the logged-in victim's browser. ``cswsh.spec.mjs`` drives Chromium:

(a) the attacker page opens ``ws://gateway/stage?channel=...&ws_token=...`` with a token the
    victim obtained legitimately on the app: the handshake fails. With ``allowed_origins``
    set to the app's origin the backend answers 403 ``origin_not_allowed``; with no allowlist
    the token is still bound to the origin that fetched it, and the backend answers 401
    ``invalid_token``.
(b) the attacker page cannot get a token: cross-origin ``fetch(tokenUrl, {method: "POST",
    credentials: "include"})`` (JSON, form-encoded, ``no-cors``) gets nothing readable, and
    the app issues no token for any of them (CSRF protection, no CORS headers).

A control socket opened from the app's own page with a legitimate token succeeds.
"""

from __future__ import annotations

import http.server
import json
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import ARTIFACTS, CHROMIUM, ROOT
from tests.browser.test_chat import FLASK_EXAMPLE, _load

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCENARIO = Path(__file__).with_name("cswsh.spec.mjs")
ATTACKER_PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>totally harmless page</title></head>
<body><h1>Attacker page</h1><p>Cross-site WebSocket hijacking attempts:</p></body></html>
"""


@dataclass
class Exchange:
    """One request the app answered, as the test's WSGI wrapper saw it."""

    method: str
    path: str
    origin: str | None
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


@dataclass
class Site:
    base_url: str
    attacker_url: str
    ws_url: str
    token_path: str
    exchanges: list[Exchange] = field(default_factory=list)

    def answered(self, path: str) -> list[Exchange]:
        return [e for e in self.exchanges if e.path == path and e.method == "POST"]


def _recording(app: Callable, log: list[Exchange]) -> Callable:
    """A WSGI wrapper that records every request's method, path, Origin, status and body."""

    def wrapper(environ: dict, start_response: Callable) -> Iterable[bytes]:
        seen: dict[str, Any] = {}

        def start(status: str, headers: list, exc_info: Any = None) -> Any:
            seen["status"] = int(status.split()[0])
            seen["headers"] = {name.lower(): value for name, value in headers}
            return start_response(status, headers, exc_info)

        body = b"".join(app(environ, start))
        log.append(
            Exchange(
                environ["REQUEST_METHOD"],
                environ.get("PATH_INFO", ""),
                environ.get("HTTP_ORIGIN"),
                seen.get("status", 0),
                seen.get("headers", {}),
                body,
            )
        )
        return [body]

    return wrapper


class _AttackerHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(ATTACKER_PAGE)))
        self.end_headers()
        self.wfile.write(ATTACKER_PAGE)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(params=["allowlist", "bound_token_only"])
def cswsh_site(
    request: pytest.FixtureRequest, browser_tools: str, tmp_path: Path
) -> Iterator[Site]:
    """examples/flask_chat behind an in-process gateway, plus an attacker origin.
    ``allowlist``: ``APIGW_WS_ALLOWED_ORIGINS`` is the app's origin; ``bound_token_only``:
    no allowlist, only the tokens' origin binding (the default) protects."""
    if not FLASK_EXAMPLE.exists():
        pytest.skip("examples/flask_chat is not in this tree yet")
    pytest.importorskip("aiohttp")
    from botocore.credentials import Credentials
    from werkzeug.serving import make_server

    from apigw_ws_core.http1 import ManagementApiTransport
    from apigw_ws_core.local.config import config_from_backend
    from apigw_ws_core.local.testing import LocalGateway

    chat = _load(FLASK_EXAMPLE, "flask_chat_cswsh")
    holder: dict = {}
    server = make_server("127.0.0.1", 0, lambda env, sr: holder["app"](env, sr), threaded=True)
    attacker = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AttackerHandler)
    app_origin = f"http://127.0.0.1:{server.port}"
    secret = secrets.token_urlsafe(24)
    api = config_from_backend(f"{app_origin}/ws/", secret=secret)
    threads: list[threading.Thread] = []
    with LocalGateway(api) as gateway:
        transport = ManagementApiTransport(
            gateway.management_endpoint, credentials=Credentials("e2e", "e2e")
        )
        config = {
            "SECRET_KEY": secrets.token_hex(16),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'chat.sqlite3'}",
            "APIGW_WS_SECRET": secret,
            "CHAT_WS_URL": gateway.ws_url,
            "TRANSPORT": transport,
        }
        if request.param == "allowlist":
            config["APIGW_WS_ALLOWED_ORIGINS"] = [app_origin]
        flask_app = chat.create_app(config)
        assert flask_app.config["APIGW_WS_TOKEN_BIND_ORIGIN"] is True
        site = Site(
            base_url=app_origin,
            attacker_url=f"http://127.0.0.1:{attacker.server_port}/",
            ws_url=gateway.ws_url,
            token_path="",
        )
        with flask_app.test_request_context():
            from flask import url_for

            site.token_path = url_for("apigw_ws_token.token")
        holder["app"] = _recording(flask_app, site.exchanges)
        for target in (server.serve_forever, attacker.serve_forever):
            threads.append(threading.Thread(target=target, daemon=True))
            threads[-1].start()
        try:
            yield site
        finally:
            transport.close()
            server.shutdown()
            attacker.shutdown()
            for thread in threads:
                thread.join(5)
            server.server_close()
            attacker.server_close()
            sys.modules.pop("flask_chat_cswsh", None)


def _run(node: str, site: Site, name: str) -> dict:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "E2E_BASE_URL": site.base_url,
        "E2E_ATTACKER_URL": site.attacker_url,
        "E2E_WS_URL": site.ws_url,
        "E2E_TOKEN_PATH": site.token_path,
        "E2E_LOGIN_PATH": "/login",
        "E2E_ROOM": "room-general",
        "E2E_USER": "alice",
        "E2E_PASSWORD": "demo",
        "E2E_ARTIFACTS": str(ARTIFACTS),
        "E2E_NAME": name,
        "APIGW_WS_CHROMIUM": CHROMIUM,
    }
    proc = subprocess.run(
        [node, str(SCENARIO)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no result (exit {proc.returncode})\n{proc.stdout}\n{proc.stderr}"
    result: dict = json.loads(lines[-1])
    assert result.get("ok"), (
        f"scenario failed at {result.get('step')!r}: {result.get('error')}\n"
        f"checks: {json.dumps(result.get('checks'), indent=2)}\n{proc.stderr}"
    )
    return result


def test_cross_site_websocket_hijacking_in_a_real_browser(
    browser_tools: str, cswsh_site: Site, request: pytest.FixtureRequest
) -> None:
    mode = request.node.callspec.params["cswsh_site"]
    name = f"cswsh-{mode}"
    checks = _run(browser_tools, cswsh_site, name)["checks"]
    site = cswsh_site
    attacker_origin = site.attacker_url.rstrip("/")
    assert checks["victim_logged_in"] is True
    assert checks["attacker_origin"] == attacker_origin

    # (a) the stolen token, used from the attacker page: the handshake fails ...
    socket = checks["attacker_socket"]
    assert socket["opened"] is False, socket
    assert socket["closeCode"] == 1006, socket
    # ... because the backend refused it: the allowlist, or else the token's origin binding
    connects = site.answered("/ws/connect")
    refused = [e for e in connects if e.origin == attacker_origin]
    assert len(refused) == 1, connects
    expected = (403, "origin_not_allowed") if mode == "allowlist" else (401, "invalid_token")
    assert (refused[0].status, refused[0].json()["error"]) == expected, refused[0]

    # (b) the attacker page never reads a token ...
    assert checks["attacker_fetch_json"]["rejected"] is True  # preflight: no CORS
    assert checks["attacker_fetch_form"]["rejected"] is True  # sent, but unreadable
    opaque = checks["attacker_fetch_no_cors"]
    assert (opaque["type"], opaque["status"], opaque["text"]) == ("opaque", 0, "")
    # ... and the app issued none for it: every attacker-origin token request was refused
    tokens = site.answered(site.token_path)
    from_attacker = [e for e in tokens if e.origin == attacker_origin]
    assert len(from_attacker) == 2, tokens  # the JSON request never left the preflight
    assert all(e.status == 400 and b"CSRF token is missing" in e.body for e in from_attacker)
    assert all(e.json() is None for e in from_attacker), from_attacker  # no token JSON
    assert [e.status for e in tokens if e.origin != attacker_origin] == [200, 200, 200]
    # no CORS: neither the preflight (OPTIONS) nor any answer lets another origin read
    every = [e for e in site.exchanges if e.path == site.token_path]
    assert any(e.method == "OPTIONS" for e in every), every
    assert not any(h.startswith("access-control-") for e in every for h in e.headers), every

    # control: a legitimate token opens a socket from the app's own page
    assert checks["app_socket"]["opened"] is True, checks["app_socket"]
    ok = [e for e in connects if e.origin == site.base_url and e.status == 200]
    assert len(ok) >= 2  # the chat page's own connection and the control
    assert (ARTIFACTS / f"{name}-attacker.png").stat().st_size > 5_000
