"""Fixtures: a Flask app with the extension on a real database, and a gateway-like client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from apigw_ws_core.testing import RecordingTransport, gateway_headers, new_connection_id
from apigw_ws_flask import ApigwWebSocket
from tests.sqla.conftest import database  # noqa: F401 - the per-dialect database fixture
from tests.sqla.dbs import Database, open_database

SECRET = "test-secret-0123456789"


@pytest.fixture(scope="session")
def sqlite_database(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    """A SQLite database for tests that need only one dialect."""
    db = open_database(request, "sqlite", tmp_path_factory.mktemp("flask-sqlite"))
    yield db
    db.close()


def build_app(
    db: Database, transport: Any = None, **config: Any
) -> tuple[Flask, ApigwWebSocket, Any]:
    """A Flask app with the extension, demo handlers and a recording transport."""
    app = Flask("apigw_ws_test_app")
    app.config.update(
        TESTING=True, SECRET_KEY="test-key", APIGW_WS_SECRET=SECRET, WTF_CSRF_ENABLED=False
    )
    app.config.update(config)
    transport = transport if transport is not None else RecordingTransport()
    ws = ApigwWebSocket(
        storage=db.storage, transport=transport, user_loader=lambda uid: {"id": uid}
    )

    @ws.handler("echo")
    def echo(ctx, message):
        return {"type": "echo", "text": message.get("text"), "user": ctx.user}

    @ws.handler("ping")
    def ping(ctx, message):
        ctx.reply({"type": "pong"})

    @ws.handler("shout")
    def shout(ctx, message):
        report = ctx.send({"type": "shout", "text": message["text"]}, channel=message["room"])
        return {"delivered": report.delivered}

    @ws.current_user_loader
    def current_user():
        from flask import request

        return request.headers.get("X-Test-User")

    ws.init_app(app)
    return app, ws, transport


class Gateway:
    """Posts what API Gateway would post, through Flask's test client."""

    def __init__(self, client: FlaskClient, prefix: str = "/ws", secret: str | None = SECRET):
        self.client = client
        self.prefix = prefix
        self.secret = secret

    def post(self, route: str, cid: str, body: bytes = b"", query: str = "", **kw: Any):
        headers = gateway_headers(route, cid, secret=kw.pop("secret", self.secret), **kw)
        url = f"{self.prefix}/{route}" + (f"?{query}" if query else "")
        return self.client.post(url, data=body, headers=headers)

    def token(self, user: str = "1", **json: Any) -> str:
        resp = self.client.post("/ws/token", json=json or None, headers={"X-Test-User": user})
        assert resp.status_code == 200, resp.get_data(as_text=True)
        return resp.get_json()["token"]

    def connect(self, user: str | None = "1", channel: str = "room", cid: str | None = None):
        cid = cid or new_connection_id()
        query = f"channel={channel}"
        if user is not None:
            query += f"&ws_token={self.token(user)}"
        resp = self.post("connect", cid, query=query)
        return cid, resp

    def send(self, cid: str, message: Any, route: str = "default"):
        import json

        body = message if isinstance(message, bytes) else json.dumps(message).encode()
        return self.post(route, cid, body)


def snapshot(db: Database, *, counters: bool = False) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the apigw-ws tables (counters only on request)."""
    out = {}
    with db.engine.connect() as conn:
        for table in db.models.tables:
            if table is db.models.counter_table and not counters:
                continue
            out[table.name] = sorted(tuple(map(str, r)) for r in conn.execute(select(table)))
    return out


@pytest.fixture
def sqlite_db(sqlite_database: Database) -> Database:
    sqlite_database.empty()
    return sqlite_database


@pytest.fixture
def db(database: Database) -> Database:  # noqa: F811
    database.empty()
    return database


@pytest.fixture
def env(db: Database) -> Iterator[tuple[Flask, ApigwWebSocket, RecordingTransport, Gateway]]:
    """App, extension, transport and gateway client on each dialect."""
    app, ws, transport = build_app(db)
    with app.test_client() as client:
        yield app, ws, transport, Gateway(client)
