"""The extension's Flask behaviour: init_app, config keys, errors, CSRF, Flask-Login, CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask_login import LoginManager, UserMixin, login_user
from flask_wtf.csrf import CSRFProtect, generate_csrf

from apigw_ws_core.app import WebSocketApp
from apigw_ws_core.errors import ConfigurationError
from apigw_ws_core.testing import RecordingTransport, new_connection_id
from apigw_ws_core.tokens import SPENT_GRACE
from apigw_ws_flask import ApigwWebSocket
from apigw_ws_flask.extension import ApigwWsState
from tests.flask_adapter.conftest import SECRET, Gateway, build_app
from tests.sqla.dbs import Database


def _app(**config) -> Flask:
    app = Flask("cfg")
    app.config.update(SECRET_KEY="k", APIGW_WS_SECRET=SECRET, **config)
    return app


def test_init_app_registers_state_and_defaults(sqlite_db: Database):
    app = _app()
    ws = ApigwWebSocket(storage=sqlite_db.storage)
    ws.init_app(app)
    state = app.extensions["apigw_ws"]
    assert isinstance(state, ApigwWsState) and state.extension is ws
    assert isinstance(state.core, WebSocketApp)
    assert app.config["APIGW_WS_REQUIRE_TOKEN"] is True
    assert app.config["APIGW_WS_TOKEN_TTL"] == 60
    assert app.config["APIGW_WS_MESSAGE_RATE_PER_CONNECTION"] == "120/10"
    assert app.config["APIGW_WS_URL_PREFIX"] == "/ws"
    rules = {r.rule: r.endpoint for r in app.url_map.iter_rules()}
    assert rules["/ws/<route>"] == "apigw_ws.gateway"
    assert rules["/ws/token"] == "apigw_ws_token.token"
    assert "apigw-ws" in app.cli.commands
    with app.app_context():
        assert ws.core is state.core
    assert ws.state() is state  # the only app, even outside a context


def test_config_keys_reach_the_core(sqlite_db: Database):
    app = _app(
        APIGW_WS_TOKEN_TTL=30,
        APIGW_WS_ALLOWED_ORIGINS=["https://example.com"],
        APIGW_WS_CONNECT_RATE_PER_IP=None,
        APIGW_WS_URL_PREFIX="/api/ws/",
        APIGW_WS_TOKEN_PATH="/api/ws-token",
    )
    ws = ApigwWebSocket(app, storage=sqlite_db.storage)
    cfg = app.extensions["apigw_ws"].core.config
    assert cfg.token_ttl == 30 and cfg.allowed_origins == ("https://example.com",)
    assert cfg.connect_rate_per_ip is None and cfg.secret == SECRET
    rules = {r.rule for r in app.url_map.iter_rules()}
    assert {"/api/ws/<route>", "/api/ws-token"} <= rules
    assert ws.state(app).url_prefix == "/api/ws"


def test_double_registration_is_an_error(sqlite_db: Database):
    app = _app()
    ApigwWebSocket(app, storage=sqlite_db.storage)
    with pytest.raises(RuntimeError, match="already registered"):
        ApigwWebSocket(app, storage=sqlite_db.storage)


def test_missing_secret_storage_and_unknown_keys_are_clear_errors(sqlite_db: Database):
    with pytest.raises(ConfigurationError, match="APIGW_WS_SECRET is not set"):
        ApigwWebSocket(Flask("x"), storage=sqlite_db.storage)
    with pytest.raises(ConfigurationError, match="storage="):
        ApigwWebSocket(_app())
    with pytest.raises(ConfigurationError, match="unknown apigw-ws setting 'TOKEN_TTLL'"):
        ApigwWebSocket(_app(APIGW_WS_TOKEN_TTLL=5), storage=sqlite_db.storage)
    with pytest.raises(ConfigurationError, match="bad rate limit"):
        ApigwWebSocket(_app(APIGW_WS_TOKEN_RATE_PER_USER="lots"), storage=sqlite_db.storage)
    app = Flask("insecure")
    app.config["APIGW_WS_ALLOW_INSECURE_NO_SECRET"] = True
    ApigwWebSocket(app, storage=sqlite_db.storage)  # allowed explicitly, for tests


def test_one_extension_many_apps(sqlite_db: Database):
    ws = ApigwWebSocket(storage=sqlite_db.storage, transport=RecordingTransport())

    @ws.handler("hello")
    def hello(ctx, message):
        return {"app": ctx.app.config.token_ttl}

    a, b = _app(APIGW_WS_TOKEN_TTL=11), _app(APIGW_WS_TOKEN_TTL=22)
    ws.init_app(a)
    ws.init_app(b)

    @ws.handler("late")
    def late(ctx, message):
        return None

    for app, ttl in ((a, 11), (b, 22)):
        core = app.extensions["apigw_ws"].core
        assert "hello" in core.handlers and "late" in core.handlers
        assert core.config.token_ttl == ttl
    with pytest.raises(RuntimeError, match="application context"):
        ws.state()
    with a.app_context():
        assert ws.core.config.token_ttl == 11


def test_duplicate_handler_name_is_an_error(sqlite_db: Database):
    _app, ws, _ = build_app(sqlite_db)
    with pytest.raises(ConfigurationError, match="already registered"):
        ws.handler("echo")(lambda ctx, m: None)


# --- the token endpoint ----------------------------------------------------------------


def test_token_endpoint(sqlite_db: Database):
    app, _ws, _ = build_app(sqlite_db, APIGW_WS_TOKEN_RATE_PER_USER="2/60")
    client = app.test_client()
    resp = client.post("/ws/token")
    assert resp.status_code == 401 and resp.get_json()["error"] == "login_required"
    resp = client.post("/ws/token", headers={"X-Test-User": "3", "Origin": "https://a.example"})
    body = resp.get_json()
    assert resp.status_code == 200 and set(body) == {"token", "expires_in"}
    assert body["expires_in"] == 60 and resp.headers["Cache-Control"] == "no-store"
    # Bound to the origin that fetched it, and (when asked) to a channel.
    gw = Gateway(client)
    resp = gw.post("connect", new_connection_id(), query=f"ws_token={body['token']}")
    assert resp.status_code == 401  # no Origin: refused, and the redemption counted
    resp = client.post("/ws/token", headers={"X-Test-User": "3"}, json={"channel": "bad name"})
    assert resp.status_code == 400 and resp.get_json()["error"] == "invalid_channel"
    # APIGW_WS_TOKEN_RATE_PER_USER counts redemptions at $connect; issuing is never limited
    tokens = []
    for _ in range(2):
        resp = client.post("/ws/token", headers={"X-Test-User": "3"})
        assert resp.status_code == 200
        tokens.append(resp.get_json()["token"])
    resp = gw.post("connect", new_connection_id(), query=f"ws_token={tokens[0]}")
    assert resp.status_code == 200  # the second redemption in the window
    resp = gw.post("connect", new_connection_id(), query=f"ws_token={tokens[1]}")
    assert resp.status_code == 429 and resp.get_json()["error"] == "rate_limited"
    assert int(resp.headers["Retry-After"]) >= 1
    assert client.get("/ws/token").status_code == 405


def test_token_endpoint_parses_json_with_the_core_rules(sqlite_db: Database):
    app, _ws, _ = build_app(sqlite_db)
    client = app.test_client()
    user = {"X-Test-User": "3", "Content-Type": "application/json"}
    deep = b'{"channel": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    cases = [
        (b"{bad", 400, "invalid_json"),
        (b"[1]", 400, "invalid_message"),
        (b'{"channel": "a", "channel": "b"}', 400, "invalid_json"),
        (deep, 400, "invalid_json"),
        (b'{"channel": "x", "pad": "' + b"a" * 5000 + b'"}', 413, "body_too_large"),
    ]
    for body, status, code in cases:
        resp = client.post("/ws/token", data=body, headers=user)
        assert (resp.status_code, resp.get_json()["error"]) == (status, code), body[:30]
    assert client.post("/ws/token", data=b'{"channel": "lobby"}', headers=user).status_code == 200


def test_token_bound_to_channel(sqlite_db: Database):
    app, _ws, _ = build_app(sqlite_db)
    client = app.test_client()
    gw = Gateway(client)
    token = gw.token("4", channel="lobby")
    resp = gw.post("connect", new_connection_id(), query=f"channel=other&ws_token={token}")
    assert resp.status_code == 401
    token = gw.token("4", channel="lobby")
    resp = gw.post("connect", new_connection_id(), query=f"channel=lobby&ws_token={token}")
    assert resp.status_code == 200


class DemoUser(UserMixin):
    def __init__(self, uid: str):
        self.id = uid


def _login_app(db: Database, csrf: str | None) -> tuple[Flask, ApigwWebSocket]:
    app = Flask("login")
    app.config.update(SECRET_KEY="k", APIGW_WS_SECRET=SECRET)
    manager = LoginManager()
    manager.user_loader(lambda uid: DemoUser(uid))
    manager.init_app(app)
    protect = CSRFProtect()
    if csrf == "before":
        protect.init_app(app)
    ws = ApigwWebSocket(app, storage=db.storage, transport=RecordingTransport())

    @ws.handler("whoami")
    def whoami(ctx, message):
        return {"user": ctx.user.id}

    if csrf == "after":
        protect.init_app(app)

    @app.post("/login/<uid>")
    def login(uid):
        login_user(DemoUser(uid))
        return "ok"

    @app.get("/csrf")
    def csrf_token():
        return generate_csrf()

    return app, ws


@pytest.mark.parametrize("order", ["before", "after", None])
def test_flask_login_and_csrf(sqlite_db: Database, order):
    app, _ws = _login_app(sqlite_db, order)
    client = app.test_client()
    assert client.post("/ws/token").status_code in (400, 401)  # no CSRF token / no login
    csrf = client.get("/csrf").get_data(as_text=True)
    resp = client.post("/ws/token", headers={"X-CSRFToken": csrf})
    assert resp.status_code == 401 and resp.get_json()["error"] == "login_required"
    client.post("/login/42", headers={"X-CSRFToken": csrf})
    assert client.post("/ws/token").status_code == 400  # logged in, but no CSRF token
    resp = client.post("/ws/token", headers={"X-CSRFToken": csrf})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    token = resp.get_json()["token"]
    # The gateway endpoints are exempt: API Gateway has no CSRF token.
    gw = Gateway(app.test_client())
    cid = new_connection_id()
    assert gw.post("connect", cid, query=f"ws_token={token}").status_code == 200
    resp = gw.send(cid, {"handler": "whoami"})
    assert resp.status_code == 200 and resp.get_json() == {"user": "42"}


# --- CLI -------------------------------------------------------------------------------


def test_cli_cleanup(sqlite_db: Database):
    app, _ws, transport = build_app(sqlite_db)
    gw = Gateway(app.test_client())
    runner = app.test_cli_runner()
    a, _ = gw.connect(user="1", channel="room")
    b, _ = gw.connect(user="2", channel="room")
    transport.gone.add(b)  # its $disconnect was lost
    # later: both sessions are old enough to be asked about, and the spent-ledger rows of
    # their tokens (kept until the token expires plus SPENT_GRACE) can go
    core = app.extensions["apigw_ws"].core
    later = timedelta(seconds=core.config.token_ttl) + SPENT_GRACE + timedelta(minutes=1)
    core.clock = lambda: datetime.now(UTC) + later
    result = runner.invoke(args=["apigw-ws", "cleanup", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(
        "Dry run: asked API Gateway about 2 session(s): 1 alive, 1 gone (would be marked"
    ), result.output
    assert "would remove 0 old disconnected session(s), 2 expired token(s)" in result.output
    result = runner.invoke(args=["apigw-ws", "cleanup", "--keep-disconnected", "0"])
    assert result.exit_code == 0, result.output
    assert "1 alive, 1 gone (now marked disconnected)" in result.output
    storage = app.extensions["apigw_ws"].core.storage
    assert storage.get_session(a).connected
    assert storage.get_session(b) is None  # marked, then deleted (--keep-disconnected 0)
    result = runner.invoke(args=["apigw-ws", "cleanup", "--no-heal"])
    assert result.exit_code == 0 and "asked API Gateway" not in result.output


def test_cli_send(sqlite_db: Database):
    app, _ws, transport = build_app(sqlite_db)
    gw = Gateway(app.test_client())
    a, _ = gw.connect(user="1", channel="room")
    b, _ = gw.connect(user="2", channel="room")
    transport.gone.add(b)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["apigw-ws", "send", '{"type": "notice"}', "--channel", "room"])
    assert result.exit_code == 0, result.output
    assert "Delivered 1 of 2; gone 1 (marked disconnected 1); failed 0" in result.output
    assert transport.messages_for(a) == [{"type": "notice"}]
    result = runner.invoke(args=["apigw-ws", "send", "hello", "--text", "--user", "1"])
    assert result.exit_code == 0 and "Delivered 1 of 1" in result.output
    assert transport.sent[-1].data == b"hello"
    result = runner.invoke(args=["apigw-ws", "send", "{broken"])
    assert result.exit_code == 2 and "not JSON" in result.output
    result = runner.invoke(args=["apigw-ws", "send", "{}"])
    assert result.exit_code == 2 and "say who to send to" in result.output
    transport.throttle[a] = 100
    app.config["APIGW_WS_SEND_MAX_ATTEMPTS"] = 1
    result = runner.invoke(args=["apigw-ws", "send", "{}", "--connection-id", a])
    assert result.exit_code == 1 and "failed 1" in result.output


def test_cli_provision_is_wired(sqlite_db: Database, tmp_path):
    app, _ws, _ = build_app(sqlite_db)
    runner = app.test_cli_runner()
    missing = tmp_path / "nope.toml"
    result = runner.invoke(args=["apigw-ws", "provision", "plan", "--config", str(missing)])
    assert result.exit_code == 1
    result = runner.invoke(args=["apigw-ws", "provision", "frobnicate"])
    assert result.exit_code == 2


def test_cli_local_commands():
    from apigw_ws_flask.cli import _local_commands

    flask_cmd, gateway_cmd = _local_commands(
        app_import_path="chat:app",
        host="127.0.0.1",
        app_port=5001,
        port=8002,
        prefix="/ws",
        secret="s",
        extra=["--stage", "dev"],
    )
    assert flask_cmd[-7:] == ["--app", "chat:app", "run", "--host", "127.0.0.1", "--port", "5001"]
    assert gateway_cmd[2:] == [
        "apigw_ws_core.local",
        "--backend",
        "http://127.0.0.1:5001/ws/",
        "--secret",
        "s",
        "--host",
        "127.0.0.1",
        "--port",
        "8002",
        "--stage",
        "dev",
    ]
    assert json.dumps(gateway_cmd)  # plain strings only


def test_pages_get_csrf_token_when_the_token_endpoint_checks_it():
    """Flask-WTF installed, no CSRFProtect: the token endpoint checks a CSRF token itself, so
    templates get ``csrf_token()`` to put in the page (the quickstart's page does)."""
    from apigw_ws_core import MemoryStorage

    app = Flask(__name__)
    app.config.update(SECRET_KEY="k", APIGW_WS_SECRET=SECRET)
    ws = ApigwWebSocket(app, storage=MemoryStorage())
    ws.current_user_loader(lambda: "alice")
    assert app.jinja_env.globals["csrf_token"] is generate_csrf

    @app.get("/page")
    def page():
        from flask import render_template_string

        return render_template_string("{{ csrf_token() if csrf_token is defined else '' }}")

    client = app.test_client()
    token = client.get("/page").get_data(as_text=True)
    assert len(token) > 20
    assert client.post("/ws/token", json={}).status_code == 400  # no CSRF token
    response = client.post("/ws/token", json={}, headers={"X-CSRFToken": token})
    assert response.status_code == 200, response.get_json()

    off = Flask(__name__)
    off.config.update(APIGW_WS_SECRET=SECRET, APIGW_WS_TOKEN_CSRF=False)
    ApigwWebSocket(off, storage=MemoryStorage())
    assert "csrf_token" not in off.jinja_env.globals
