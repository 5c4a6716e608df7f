"""``examples/flask_sqlalchemy/notes.py``: Flask-SQLAlchemy's ``db.session`` as the storage's
session source and the apigw-ws tables on ``db.metadata``, on SQLite, PostgreSQL and MariaDB.

Each test gets an empty database of its own (the example's table names are fixed; see
``tests/sqla/empty_db.py``). Checked here: a connect/message/disconnect cycle through Flask's
test client; that storage calls never commit (nor roll back) the request's pending
``db.session`` work; that in-memory SQLite is refused; that the same tables work without
Flask; and that Alembic autogenerate sees the app's and apigw-ws's tables on one metadata.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask import Flask
from sqlalchemy import create_engine, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import NullPool

from apigw_ws_core.errors import ConfigurationError
from apigw_ws_core.events import from_http
from apigw_ws_core.testing import (
    RecordingTransport,
    gateway_headers,
    new_connection_id,
    redeem_token,
)
from apigw_ws_storage.sqla import SqlaStorage
from tests.sqla.empty_db import EMPTY_DB_PARAMS, empty_database

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "flask_sqlalchemy" / "notes.py"
SECRET = "test-secret-0123456789"
WS_TABLES = {"apigw_ws_session", "apigw_ws_subscription", "apigw_ws_token"} | {
    "apigw_ws_counter",
    "apigw_ws_gateway",
    "apigw_ws_channel_history",
    "apigw_ws_history_message",
    "apigw_ws_job",
}


@pytest.fixture(scope="module")
def notes() -> Iterator[ModuleType]:
    """The example module, imported once: its models are declared at import time."""
    name = "apigw_ws_example_notes"
    spec = importlib.util.spec_from_file_location(name, EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(name, None)


@pytest.fixture(params=EMPTY_DB_PARAMS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of an empty database of its own."""
    with empty_database(request, request.param, tmp_path) as database_url:
        yield database_url


def make_app(notes: ModuleType, database_url: str, **config: Any) -> Flask:
    """The example app on ``database_url`` with a recording transport."""
    app: Flask = notes.create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": database_url,
            "APIGW_WS_SECRET": SECRET,
            "WTF_CSRF_ENABLED": False,  # Flask-WTF is installed; this app has no forms
            **config,
        }
    )
    app.extensions["apigw_ws"].core.transport = RecordingTransport()
    return app


def dispose(notes: ModuleType, app: Flask) -> None:
    """Close the app's database connections (before its database is dropped)."""
    with app.app_context():
        notes.db.session.remove()
        for engine in notes.db.engines.values():
            engine.dispose()


@pytest.fixture
def app(notes: ModuleType, url: str) -> Iterator[Flask]:
    """The example app on an empty database (``create_app`` creates the tables)."""
    flask_app = make_app(notes, url)
    yield flask_app
    dispose(notes, flask_app)


def post(client: Any, route: str, cid: str, body: Any = None, query: str = "") -> Any:
    """What API Gateway posts for ``route``."""
    data = b"" if body is None else json.dumps(body).encode()
    path = f"/ws/{route}" + (f"?{query}" if query else "")
    return client.post(path, data=data, headers=gateway_headers(route, cid, secret=SECRET))


def connect(client: Any, name: str, channel: str = "notes") -> str:
    """Log in as ``name``, fetch a token and connect; the connection id."""
    assert client.post("/login", json={"name": name}).status_code == 200
    resp = client.post("/ws/token")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    cid = new_connection_id()
    resp = post(client, "connect", cid, query=f"channel={channel}&ws_token={resp.json['token']}")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return cid


def test_connect_message_disconnect(notes: ModuleType, app: Flask, url: str):
    transport = app.extensions["apigw_ws"].core.transport
    client = app.test_client()
    alice = connect(client, "alice")
    bob = connect(app.test_client(), "bob")

    resp = post(client, "default", alice, {"handler": "note", "text": "hello"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    note = {"type": "note", "id": 1, "author": "alice", "text": "hello"}
    assert transport.messages_for(alice) == [note]
    assert transport.messages_for(bob) == [note]

    with app.app_context():
        db = notes.db
        assert [(n.author_id, n.text) for n in db.session.scalars(select(notes.Note))] == [
            (1, "hello")
        ]
        session = notes.storage.get_session(alice)
        assert session is not None and session.connected and session.user_id == "1"
        assert notes.ws.presence("notes").user_ids == {"1", "2"}
        # One database, one metadata: the app's tables and apigw-ws's side by side.
        assert set(db.metadata.tables) == WS_TABLES | {"user_account", "note"}

    assert post(client, "disconnect", alice).status_code == 200
    with app.app_context():
        session = notes.storage.get_session(alice)
        assert session is not None and not session.connected
        assert notes.storage.channels_of(alice) == []

    # The same tables without Flask at all: a plain sessionmaker (a cron job, a Lambda).
    engine = create_engine(url, poolclass=NullPool)
    plain = SqlaStorage(sessionmaker(engine), models=notes.ws_models)
    assert plain.presence("notes").user_ids == {"2"}
    assert list(plain.iter_connection_ids(channel="notes")) == [[bob]]
    engine.dispose()


def _count(notes: ModuleType, app: Flask, model: Any, **where: Any) -> int:
    """Committed rows of ``model`` (a new app context: a new session)."""
    with app.app_context():
        query = select(func.count()).select_from(model).filter_by(**where)
        return int(notes.db.session.scalar(query))


def test_storage_calls_never_commit_the_requests_pending_work(
    notes: ModuleType, app: Flask, url: str
):
    """A view and a handler add a user and flush it (the INSERT is sent inside the
    request's transaction), call the storage, and never commit: the user must not appear,
    while what the storage wrote is committed on its own."""
    db, User, ws = notes.db, notes.User, notes.ws
    server = not url.startswith("sqlite")

    @app.post("/draft")
    def draft() -> dict[str, Any]:
        db.session.add(User(name="draft-view"))
        db.session.flush()
        presence = ws.presence("notes")  # storage reads
        assert notes.storage.get_session("nope") is None
        if server:  # storage writes (SQLite would wait for the request's write lock)
            token, _ = ws.core.issue_token("42")  # signed: no storage call
            assert redeem_token(ws.core, token) == "42"  # spent: a ledger row committed
        return {"users": sorted(presence.user_ids)}

    def draft_handler(ctx: Any, message: dict[str, Any]) -> None:
        db.session.add(User(name="draft-ws"))
        db.session.flush()
        ctx.send({"type": "draft"}, channel="notes")  # storage read + the transport

    app.extensions["apigw_ws"].core.handler("draft")(draft_handler)

    client = app.test_client()
    cid = connect(client, "alice")
    assert client.post("/draft").json == {"users": ["1"]}
    assert post(client, "default", cid, {"handler": "draft"}).status_code == 200
    assert app.extensions["apigw_ws"].core.transport.messages_for(cid) == [{"type": "draft"}]

    assert _count(notes, app, User, name="draft-view") == 0
    assert _count(notes, app, User, name="draft-ws") == 0
    assert _count(notes, app, User, name="alice") == 1
    tokens = notes.ws_models.token
    assert _count(notes, app, tokens, user_id="42") == (1 if server else 0)


def test_sqlite_storage_write_waits_for_the_requests_write_lock(
    notes: ModuleType, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    """SQLite has one writer: after a flush, a storage write waits for the request's
    transaction (and fails after the busy timeout). Reads do not wait."""
    app = make_app(
        notes,
        f"sqlite:///{tmp_path / 'lock.sqlite3'}",
        SQLALCHEMY_ENGINE_OPTIONS={"connect_args": {"timeout": 0.05}},
    )
    with app.app_context():
        notes.db.session.add(notes.User(name="pending"))
        notes.db.session.flush()
        assert notes.storage.get_session("nope") is None
        core = notes.ws.core
        token, _ = core.issue_token("1")  # signed, no storage call: never waits
        with caplog.at_level(logging.ERROR, "apigw_ws"):
            reply = core.handle(_connect_event(token))  # its one transaction must wait
        assert reply.status == 503 and reply.json_body()["error"] == "storage_unavailable"
        assert "OperationalError" in caplog.text and "database is locked" in caplog.text
        assert token not in caplog.text
        with pytest.raises(OperationalError, match="database is locked"):
            redeem_token(core, core.issue_token("1")[0])
        notes.db.session.rollback()
        # fine once the request's transaction is over; the 503 did not spend the token
        assert core.handle(_connect_event(token)).status == 200
    dispose(notes, app)


def _connect_event(token: str) -> Any:
    """A $connect with ``token``, as API Gateway posts it."""
    headers = gateway_headers("connect", new_connection_id(), secret=SECRET)
    return from_http("connect", headers, f"ws_token={token}")


def test_in_memory_sqlite_is_refused(notes: ModuleType):
    """Flask-SQLAlchemy's ``sqlite://`` (one StaticPool connection for everyone)."""
    app = make_app(notes, "sqlite://")
    with app.app_context():
        db, User = notes.db, notes.User
        db.session.add(User(name="pending"))
        db.session.flush()
        with pytest.raises(ConfigurationError, match="StaticPool"):
            notes.storage.get_session("x")
        count = select(func.count()).select_from(User)
        assert db.session.scalar(count) == 1  # the request's work is untouched...
        db.session.rollback()
        assert db.session.scalar(count) == 0  # ...and still the request's to roll back
    dispose(notes, app)


def test_alembic_autogenerate_sees_both_on_db_metadata(notes: ModuleType, url: str):
    """``target_metadata = db.metadata`` (Flask-Migrate's default) covers apigw-ws too."""
    engine = create_engine(url, poolclass=NullPool)
    opts = {"compare_type": True, "compare_server_default": True}
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn, opts=opts), notes.db.metadata)
        added = {d[1].name for d in diffs if d[0] == "add_table"}
        assert added == WS_TABLES | {"user_account", "note"}
    app = make_app(notes, url)  # db.create_all()
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts=opts)
        assert compare_metadata(context, notes.db.metadata) == []
    dispose(notes, app)
    engine.dispose()
