"""Issue 14 through the Flask extension (Flask test client, SQLAlchemy storage on SQLite,
PostgreSQL and MariaDB): ws.send(exclude=...), history and recovery, presence events and
connection attributes configured with APIGW_WS_* keys."""

from __future__ import annotations

from tests.flask_adapter.conftest import Gateway, build_app
from tests.sqla.dbs import Database


def test_flask_realtime_features(db: Database):
    (
        app,
        ws,
        transport,
    ) = build_app(
        db,
        APIGW_WS_HISTORY=[{"pattern": "room-*", "size": 10}],
        APIGW_WS_PRESENCE_CHANNELS=["presence-*"],
        APIGW_WS_CONNECTION_ATTRIBUTES=[{"name": "device", "choices": ["mobile", "desktop"]}],
    )
    with app.test_client() as client:
        gw = Gateway(client)
        a, _ = gw.connect(user="1", channel="room-1")
        b, _ = gw.connect(user="2", channel="room-1")
        with app.app_context():
            report = ws.send({"text": "hi"}, channel="room-1", exclude=a)
        assert report.delivered == 1
        (env,) = transport.messages_for(b)
        assert env["data"] == {"text": "hi"} and env["offset"] == 1
        assert transport.messages_for(a) == []
        with app.app_context():
            for n in range(12):
                ws.send({"n": n}, channel="room-1")
            page = ws.history("room-1", since=0, limit=100)
        assert page.offset == 13 and page.messages[-1].offset == 13
        recover = {
            "action": "$recover",
            "channels": {"room-1": {"epoch": env["epoch"], "offset": 1}},
        }
        assert gw.send(b, recover).status_code == 200
        frame = transport.messages_for(b)[-1]
        # size 10, but the SQL backends trim on every 16th offset: 2..13 are all still kept
        assert frame["type"] == "$recovered" and frame["recovered"] is True
        assert [m["offset"] for m in frame["messages"]] == list(range(2, 14))

        w, _ = gw.connect(user="3", channel="presence-x")
        resp = gw.post(
            "connect",
            "PhoneConn00001=",
            query=f"channel=presence-x&device=mobile&ws_token={gw.token('4')}",
        )
        assert resp.status_code == 200
        assert transport.messages_for(w)[-1] == {
            "type": "member_added",
            "channel": "presence-x",
            "user_id": "4",
        }
        assert db.storage.get_session("PhoneConn00001=").attributes == {"device": "mobile"}
        with app.app_context():
            report = ws.send({"x": 1}, channel="presence-x", attributes={"device": "mobile"})
        assert report.delivered == 1 and transport.messages_for("PhoneConn00001=") == [{"x": 1}]
        bad = gw.post(
            "connect",
            "PhoneConn00002=",
            query=f"channel=presence-x&device=fax&ws_token={gw.token('5')}",
        )
        assert bad.status_code == 400 and bad.get_json()["error"] == "invalid_attribute"
