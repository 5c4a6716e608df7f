"""The SQL each issue-14 feature adds, counted on SQLite, PostgreSQL and MariaDB: a send to a
history channel is one transaction of two statements (plus a trim on every 16th offset),
whatever the number of recipients; attributes and exclusion add none; a $disconnect without
presence channels stays two statements."""

from __future__ import annotations

import json

from apigw_ws_core import Config, WebSocketApp
from apigw_ws_core.events import from_http
from apigw_ws_core.testing import RecordingTransport, gateway_headers, new_connection_id
from tests.sqla.dbs import Database

SECRET = "statements-secret-0123"


def make_app(db: Database, **config) -> WebSocketApp:
    return WebSocketApp(
        storage=db.storage,
        transport=RecordingTransport(),
        config=Config(
            secret=SECRET,
            require_token=False,
            connect_rate_per_ip=None,
            history=[{"pattern": "room-*", "size": 100}, {"pattern": "small-*", "size": 10}],
            connection_attributes=[{"name": "device"}],
            **config,
        ),
    )


def connect(app: WebSocketApp, query: str) -> str:
    cid = new_connection_id()
    reply = app.handle(from_http("connect", gateway_headers("connect", cid, secret=SECRET), query))
    assert reply.status == 200
    return cid


def real(statements: list[str]) -> list[str]:
    """The statements without savepoint bookkeeping (SAVEPOINT / RELEASE SAVEPOINT)."""
    return [s for s in statements if not s.lstrip().upper().startswith(("SAVEPOINT", "RELEASE"))]


def writes(statements: list[str]) -> list[str]:
    return [
        s.split()[0].upper()
        for s in real(statements)
        if not s.lstrip().upper().startswith("SELECT")
    ]


def test_history_send_is_one_append_whatever_the_recipients(db: Database):
    app = make_app(db)
    ids = [connect(app, "channel=room-1") for _ in range(5)] + [connect(app, "channel=lobby")]
    with db.count_statements() as plain:
        assert app.send({"n": 0}, channel="lobby").delivered == 1
    with db.count_statements() as history:
        assert app.send({"n": 1}, channel="room-1").delivered == 5
    assert len(real(history)) - len(real(plain)) == 2
    assert writes(history) == ["INSERT", "INSERT"]
    with db.count_statements() as excluded:
        report = app.send({"n": 2}, channel="room-1", exclude=ids[:2], attributes={})
    assert report.delivered == 3 and len(real(excluded)) == len(real(history))
    for n in range(1, 16):
        app.send({"n": n}, channel="small-1")
    with db.count_statements() as trim:  # offset 16 > size 10: the bounded size trim
        app.send({"n": 16}, channel="small-1")
    assert writes(trim) == ["INSERT", "INSERT", "DELETE"]
    kept = app.history("small-1", limit=100).messages
    assert [m.offset for m in kept] == list(range(7, 17))


def test_attributes_ride_in_the_session_insert_and_disconnect_stays_two(db: Database):
    app = make_app(db)
    with db.count_statements() as plain:
        connect(app, "channel=lobby")
    with db.count_statements() as with_attribute:
        cid = connect(app, "channel=lobby&device=mobile")
    assert len(real(with_attribute)) == len(real(plain)) == 2
    with db.count_statements() as filtered:
        app.send({"x": 1}, channel="lobby", attributes={"device": "mobile"})
    assert len(real(filtered)) == 1
    with db.count_statements() as gone:
        headers = gateway_headers("disconnect", cid, secret=SECRET)
        app.handle(from_http("disconnect", headers))
    assert len(real(gone)) == 2


def test_recover_reads_the_channels_then_two_statements_per_channel(db: Database):
    app = make_app(db)
    cid = connect(app, "channel=room-1")
    app.send({"n": 1}, channel="room-1")
    body = {"action": "$recover", "channels": {"room-1": {"epoch": "", "offset": 0}}}
    with db.count_statements() as seen:
        headers = gateway_headers("default", cid, secret=SECRET)
        app.handle(from_http("default", headers, "", json.dumps(body).encode()))
    assert len(real(seen)) == 4  # session, its channels, the position, the messages
    assert not writes(seen)
