"""ONE table of integration requests and the answers every HTTP adapter must give.

Each row is run, byte for byte the same, against the plain WSGI app, the pure ASGI app and
the FastAPI router (memory storage), the Django adapter (Django ORM storage) and the Flask
adapter (SQLAlchemy storage), all on SQLite, as raw WSGI calls or ASGI messages (so that
short and chunked bodies can be sent). Each adapter holds one live connection on ``lobby``
before the row runs. A row states the status, the error code and whether the call may
change anything: a refused call leaves storage as it was and sends nothing. The adapters
only translate; :mod:`apigw_ws_core.http` decides, so a row that passes on one adapter and
fails on another is adapter drift.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest

from apigw_ws_core.app import WebSocketApp
from apigw_ws_core.config import Config
from apigw_ws_core.errors import InvalidToken
from apigw_ws_core.memory import MemoryStorage
from apigw_ws_core.testing import RecordingTransport, gateway_headers, redeem_token
from apigw_ws_core.tokens import token_keys, verify_token
from apigw_ws_core.wsgi import make_wsgi_app

from .adapters_support import django_reset, django_state, flask_reset, flask_state
from .strategies import LIVE_CID

NEW_CID = "NewConnBBBBBB0="
SECRET_HEADER = "X-Apigw-Ws-Secret"


@attrs.frozen
class Row:
    """One request and its expected answer."""

    id: str
    method: str = "POST"
    route: str = "default"
    #: "secret" (the right one), "none" (no secret header) or "wrong"
    secret: str = "secret"
    body: bytes = b'{"action": "chat_message", "text": "hi"}'
    #: declared Content-Length: "auto" (the body's), None (no header) or a value
    length: Any = "auto"
    chunked: bool = False
    terminated: bool = False
    query: str = ""
    headers: dict[str, str] = attrs.field(factory=dict)
    connection_id: str = LIVE_CID
    status: int = 200
    code: str | None = None
    #: whether the call may change storage / send messages (only accepted calls)
    changes: bool = False


METHODS = ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"]

TABLE = [
    Row("message", changes=True),
    Row("ping", body=b'{"action": "ping"}'),
    Row(
        "connect",
        route="connect",
        connection_id=NEW_CID,
        body=b"",
        changes=True,
        query="channel=lobby&ws_token={token}",
    ),
    Row(
        "connect-no-token",
        route="connect",
        connection_id=NEW_CID,
        body=b"",
        status=401,
        code="token_required",
    ),
    Row("disconnect", route="disconnect", body=b"", changes=True),
    Row("no-secret", secret="none", status=403, code="forbidden"),
    Row("wrong-secret", secret="wrong", status=403, code="forbidden"),
    *[
        Row(f"{m}-no-secret", method=m, secret="none", status=403, code="forbidden")
        for m in METHODS
    ],
    *[Row(f"{m}", method=m, status=405, code="method_not_allowed") for m in METHODS],
    # 17 bytes of a declared 100: the caller hung up; nothing may run (issue 17 item 3)
    Row("short-body", body=b'{"action":"echo"}', length=100, status=400, code="incomplete_body"),
    Row(
        "short-body-no-secret", body=b"{}", length=100, secret="none", status=403, code="forbidden"
    ),
    Row("empty-body-declared", body=b"", length=5, status=400, code="incomplete_body"),
    Row("too-large-declared", body=b"{}", length=131073, status=413, code="body_too_large"),
    Row("too-large-no-secret", length=131073, secret="none", status=403, code="forbidden"),
    Row(
        "too-large-sent", body=b'{"a": "' + b"x" * 131072 + b'"}', status=413, code="body_too_large"
    ),
    Row("bad-length", length="12abc", status=400, code="bad_request"),
    Row("signed-length", length="+40", status=400, code="bad_request"),
    Row("chunked-unterminated", length=None, chunked=True, status=400, code="bad_request"),
    Row("chunked-terminated", length=None, chunked=True, terminated=True, changes=True),
    Row(
        "chunked-too-large",
        body=b'{"a": "' + b"x" * 131072 + b'"}',
        length=None,
        chunked=True,
        terminated=True,
        status=413,
        code="body_too_large",
    ),
    Row("no-length-no-body", body=b"", length=None, status=400, code="invalid_json"),
    Row("invalid-json", body=b"{nope", status=400, code="invalid_json"),
    Row("not-an-object", body=b"[1]", status=400, code="invalid_message"),
    Row("unknown-handler", body=b'{"action": "nope"}', status=400, code="unknown_handler"),
    Row(
        "unknown-connection", connection_id="Unknown0000000=", status=404, code="unknown_connection"
    ),
    Row("bad-connection-id", connection_id="no", status=400, code="invalid_connection_id"),
    Row(
        "event-type-mismatch",
        route="connect",
        connection_id=NEW_CID,
        headers={"X-Apigw-Ws-Event-Type": "MESSAGE"},
        status=400,
        code="bad_request",
    ),
    Row(
        "connect-bad-token",
        route="connect",
        connection_id=NEW_CID,
        query="ws_token=nope",
        status=401,
        code="invalid_token",
    ),
    # another spelling of the live token (padding, a stray character): refused, not spent
    *[
        Row(
            f"connect-token-{name}",
            route="connect",
            connection_id=NEW_CID,
            query=f"channel=lobby&ws_token={{token}}{suffix}",
            status=401,
            code="invalid_token",
        )
        for name, suffix in (("padded", "%3D"), ("extra-char", "A"), ("newline", "%0A"))
    ],
]


class Driver:
    """One adapter behind raw WSGI calls."""

    name: str
    secret: str
    origin: str

    def reset(self) -> str:
        """One live connection (``LIVE_CID`` on ``lobby``) and one unused token (returned)."""
        raise NotImplementedError

    def state(self) -> Any:
        raise NotImplementedError

    def sent(self) -> int:
        raise NotImplementedError

    def call(self, environ: dict[str, Any]) -> tuple[int, bytes]:
        raise NotImplementedError


def call_wsgi(app: Callable[..., Any], environ: dict[str, Any]) -> tuple[int, bytes]:
    out: dict[str, Any] = {}

    def start_response(status: str, headers: list[Any], exc_info: Any = None) -> None:
        out["status"] = int(status.split()[0])

    body = b"".join(app(environ, start_response))
    return out["status"], body


def make_environ(row: Row, driver: Driver, token: str = "") -> dict[str, Any]:
    secret = {"secret": driver.secret, "none": None, "wrong": "wrong-secret"}[row.secret]
    headers = gateway_headers(
        row.route, row.connection_id, secret=secret, origin=driver.origin, extra=row.headers
    )
    headers["Content-Type"] = "application/json"
    environ: dict[str, Any] = {
        "REQUEST_METHOD": row.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": f"/ws/{row.route}",
        "QUERY_STRING": (row.query or "channel=lobby").replace("{token}", token),
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(row.body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    length = len(row.body) if row.length == "auto" else row.length
    if length is not None:
        environ["CONTENT_LENGTH"] = str(length)
    if row.chunked:
        environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    if row.terminated:
        environ["wsgi.input_terminated"] = True
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        environ[key if key == "CONTENT_TYPE" else f"HTTP_{key}"] = value
    return environ


class WsgiDriver(Driver):
    name = "wsgi"
    secret = "wsgi-gateway-secret-0123456789"
    origin = "https://wsgi.example.com"

    def __init__(self) -> None:
        self.transport = RecordingTransport()
        self.app = WebSocketApp(
            storage=MemoryStorage(),
            transport=self.transport,
            config=Config(secret=self.secret, allowed_origins=(self.origin,)),
        )

        @self.app.handler("echo")
        def echo(ctx: Any, message: dict[str, Any]) -> Any:
            return message

        @self.app.handler("chat_message")
        def chat(ctx: Any, message: dict[str, Any]) -> Any:
            ctx.send({"type": "chat", "text": message.get("text")}, channel="lobby")

        self.wsgi = make_wsgi_app(self.app, prefix="/ws")

    def reset(self) -> str:
        storage = MemoryStorage()
        self.app.storage = storage
        self.app.rate_limiter = type(self.app.rate_limiter)(storage)  # type: ignore[call-arg]
        token, _ = self.app.issue_token("7")
        row = Row("reset", route="connect", body=b"", query=f"channel=lobby&ws_token={token}")
        status, body = self.call(make_environ(row, self))
        assert status == 200, body
        self.transport.sent.clear()
        return self.app.issue_token("7")[0]

    def state(self) -> Any:
        s = self.app.storage
        assert isinstance(s, MemoryStorage)
        return (dict(s.sessions), {k: dict(v) for k, v in s.subscriptions.items()}, set(s.tokens))

    def sent(self) -> int:
        return len(self.transport.sent)

    def call(self, environ: dict[str, Any]) -> tuple[int, bytes]:
        return call_wsgi(self.wsgi, environ)


class AsgiDriver(WsgiDriver):
    """The pure ASGI app (:func:`apigw_ws_core.asgi.make_asgi_app`) on the same core app,
    called with the scope and body messages a server would pass. A short body ends with
    ``http.disconnect``; ASGI servers always know where a chunked body ends."""

    name = "asgi"

    def __init__(self) -> None:
        from apigw_ws_core.asgi import make_asgi_app

        super().__init__()
        self.asgi = make_asgi_app(self.app, prefix="/ws")

    def call(self, environ: dict[str, Any]) -> tuple[int, bytes]:
        import asyncio

        if environ.get("HTTP_TRANSFER_ENCODING") and not environ.get("wsgi.input_terminated"):
            return 400, b'{"error": "bad_request"}'  # cannot happen under ASGI (see above)
        body = environ["wsgi.input"].getvalue()
        declared = environ.get("CONTENT_LENGTH")
        short = declared is not None and declared.isdigit() and int(declared) > len(body)
        headers = [
            (k[5:].replace("_", "-").lower().encode(), v.encode("latin-1"))
            for k, v in environ.items()
            if k.startswith("HTTP_")
        ]
        if declared is not None:
            headers.append((b"content-length", declared.encode()))
        headers.append((b"content-type", environ.get("CONTENT_TYPE", "").encode()))
        scope = {
            "type": "http",
            "method": environ["REQUEST_METHOD"],
            "path": environ["PATH_INFO"],
            "root_path": "",
            "query_string": environ["QUERY_STRING"].encode("latin-1"),
            "headers": headers,
        }
        messages = [{"type": "http.request", "body": body, "more_body": short}]
        if short:
            messages.append({"type": "http.disconnect"})
        out: dict[str, Any] = {"body": b""}

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                out["status"] = message["status"]
            else:
                out["body"] += message.get("body", b"")

        asyncio.run(self.asgi(scope, receive, send))
        return out["status"], out["body"]


class FastApiDriver(AsgiDriver):
    """The FastAPI integration (:class:`apigw_ws_fastapi.ApigwWs`'s router)."""

    name = "fastapi"

    def __init__(self) -> None:
        from fastapi import FastAPI

        from apigw_ws_fastapi import ApigwWs

        super().__init__()
        api = FastAPI()
        api.include_router(ApigwWs(self.app, prefix="/ws").router)
        self.asgi = api


class DjangoDriver(Driver):
    name = "django"

    def __init__(self, env: dict[str, Any]) -> None:
        self.env = env
        self.secret = env["secret"]
        self.origin = env["origin"]

    def reset(self) -> str:
        token = django_reset(self.env)
        self.env["transport"].sent.clear()
        return token

    def state(self) -> Any:
        return django_state()

    def sent(self) -> int:
        return len(self.env["transport"].sent)

    def call(self, environ: dict[str, Any]) -> tuple[int, bytes]:
        response = self.env["client"].request(**environ)
        return response.status_code, response.content


class FlaskDriver(Driver):
    name = "flask"

    def __init__(self, env: dict[str, Any]) -> None:
        self.env = env
        self.secret = env["secret"]
        self.origin = env["origin"]
        self.transport = env["core"].transport

    def reset(self) -> str:
        token = flask_reset(self.env)
        self.transport.sent.clear()
        return token

    def state(self) -> Any:
        return flask_state(self.env["db"])

    def sent(self) -> int:
        return len(self.transport.sent)

    def call(self, environ: dict[str, Any]) -> tuple[int, bytes]:
        return call_wsgi(self.env["client"].application, environ)


@pytest.fixture(params=["wsgi", "asgi", "fastapi", "django", "flask"])
def driver(request: pytest.FixtureRequest) -> Iterator[Driver]:
    if request.param == "wsgi":
        yield WsgiDriver()
    elif request.param == "asgi":
        yield AsgiDriver()
    elif request.param == "fastapi":
        pytest.importorskip("fastapi")
        yield FastApiDriver()
    elif request.param == "django":
        request.applymarker(pytest.mark.django_db)
        yield DjangoDriver(request.getfixturevalue("django_env"))
    else:
        yield FlaskDriver(request.getfixturevalue("flask_env"))


def check_row(driver: Driver, row: Row) -> None:
    token = driver.reset()
    before = driver.state()
    status, body = driver.call(make_environ(row, driver, token))
    assert status == row.status, (driver.name, row.id, body[:200])
    if row.code is not None:
        assert json.loads(body)["error"] == row.code, (driver.name, row.id, body[:200])
    if not row.changes:
        assert driver.state() == before, (driver.name, row.id)
        assert driver.sent() == 0, (driver.name, row.id)


@pytest.mark.django_db
def test_behaviour_table(driver: Driver) -> None:
    """Every row of :data:`TABLE` on one adapter (one test per adapter keeps it cheap)."""
    failures = []
    for row in TABLE:
        try:
            check_row(driver, row)
        except AssertionError as exc:
            failures.append(f"{row.id}: {exc}")
    assert not failures, "\n".join(failures)


# --- the token endpoint ------------------------------------------------------------------


@attrs.frozen
class TokenRow:
    """One token request and its expected answer."""

    id: str
    method: str = "POST"
    logged_in: bool = True
    body: bytes | None = None  # JSON body; None: an empty form post
    origin: str | None = None
    status: int = 200
    code: str | None = None
    #: the origin and channel the issued token must be bound to (checked when status is 200)
    bound_origin: str | None = None
    bound_channel: str | None = None


TOKEN_TABLE = [
    TokenRow("plain"),
    TokenRow("anonymous", logged_in=False, status=401, code="login_required"),
    TokenRow("get", method="GET", status=405),
    TokenRow("channel", body=b'{"channel": "lobby"}', bound_channel="lobby"),
    TokenRow("channel-not-a-string", body=b'{"channel": 5}', status=400, code="invalid_channel"),
    TokenRow("channel-invalid", body=b'{"channel": "a b"}', status=400, code="invalid_channel"),
    TokenRow("invalid-json", body=b"{nope", status=400, code="invalid_json"),
    TokenRow("not-an-object", body=b"[1]", status=400, code="invalid_message"),
    TokenRow(
        "too-large", body=b'{"pad": "' + b"a" * 5000 + b'"}', status=413, code="body_too_large"
    ),
    TokenRow("origin-header", origin="https://a.example", bound_origin="https://a.example"),
    TokenRow(
        "origin-field", body=b'{"origin": "https://b.example"}', bound_origin="https://b.example"
    ),
    TokenRow(
        "origin-contradicts",
        body=b'{"origin": "https://b.example"}',
        origin="https://a.example",
        status=400,
        code="bad_request",
    ),
    TokenRow("origin-malformed", body=b'{"origin": "nope"}', status=400, code="bad_request"),
    TokenRow("origin-not-a-string", body=b'{"origin": 5}', status=400, code="bad_request"),
]


def _token_request(env: dict[str, Any], framework: str, row: TokenRow) -> Any:
    headers = {"Origin": row.origin} if row.origin else {}
    if framework == "flask" and row.logged_in:
        headers["X-Test-User"] = "7"
    kwargs: dict[str, Any] = {"headers": headers}
    if row.body is not None:
        kwargs.update(data=row.body, content_type="application/json")
    client = env["client"]
    if framework == "django":
        from django.test import Client

        client = Client()
        if row.logged_in:
            client.force_login(env["user"])
        return client.generic(row.method, "/ws-token/", **kwargs)
    return client.open("/ws/token", method=row.method, **kwargs)


@pytest.mark.django_db
@pytest.mark.parametrize("framework", ["django", "flask"])
def test_token_endpoint_table(framework: str, request: pytest.FixtureRequest) -> None:
    env = request.getfixturevalue(f"{framework}_env")
    failures = []
    for row in TOKEN_TABLE:
        (django_reset if framework == "django" else flask_reset)(env)
        before = django_state() if framework == "django" else flask_state(env["db"])
        response = _token_request(env, framework, row)
        body = response.content if framework == "django" else response.get_data()
        after = django_state() if framework == "django" else flask_state(env["db"])
        try:
            assert response.status_code == row.status, body[:200]
            if row.code is not None:
                assert json.loads(body)["error"] == row.code, body[:200]
            assert after == before  # issuing writes nothing (the token is signed)
            if row.status == 200:
                assert response.headers["Cache-Control"] == "no-store"
                app = env["app" if framework == "django" else "core"]
                _check_issued(app, json.loads(body)["token"], row)
        except AssertionError as exc:
            failures.append(f"{framework} {row.id}: {exc}")
    assert not failures, "\n".join(failures)


def _check_issued(app: Any, token: str, row: TokenRow) -> None:
    """The token is user 7's, bound to exactly the row's channel and origin, and redeemable
    once."""
    claims = verify_token(token_keys(app.config), token, now=app.clock())
    assert claims.user_id == "7"
    assert claims.binds(row.bound_channel, row.bound_origin)
    if row.bound_channel is not None:
        assert not claims.binds("other", row.bound_origin)
    if row.bound_origin is not None:
        assert not claims.binds(row.bound_channel, "https://evil.example")
        assert not claims.binds(row.bound_channel, None)
    assert redeem_token(app, token, channel=row.bound_channel, origin=row.bound_origin) == "7"
    with pytest.raises(InvalidToken):
        redeem_token(app, token, channel=row.bound_channel, origin=row.bound_origin)
