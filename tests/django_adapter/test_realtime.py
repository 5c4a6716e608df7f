"""Issue 14 through the Django entry points (views, ORM storage, each database): history
and recovery, presence events, excluding the sender, connection attributes."""

from __future__ import annotations

from typing import Any

import pytest

from apigw_ws_django.runtime import get_app
from apigw_ws_django.testing import WebSocketTestClient
from apigw_ws_storage.django_orm import models as m


@pytest.fixture
def realtime(settings: Any, alias: str) -> str:
    settings.APIGW_WS = {
        **settings.APIGW_WS,
        "HISTORY": [{"pattern": "room-*", "size": 100}],
        "PRESENCE_CHANNELS": ["presence-*"],
        "CONNECTION_ATTRIBUTES": [{"name": "device", "choices": ["mobile", "desktop"]}],
    }
    return alias


def test_history_recovery(realtime: str, ws: WebSocketTestClient, users: dict[str, Any]):
    a = ws.connect(user=users["alice"], channel="room-1")
    get_app().send({"n": 0}, channel="room-1")
    (first,) = a.received
    a.disconnect()
    for n in range(1, 21):
        get_app().send({"n": n}, channel="room-1")
    again = ws.connect(user=users["alice"], channel="room-1")
    position = {"epoch": first["epoch"], "offset": first["offset"]}
    reply = again.send({"action": "$recover", "channels": {"room-1": position}})
    assert reply.status_code == 200
    (frame,) = again.received
    assert frame["recovered"] is True and frame["final"] is True
    assert [msg["data"]["n"] for msg in frame["messages"]] == list(range(1, 21))
    assert m.HistoryMessage.objects.using(realtime).count() == 21
    page = get_app().history("room-1", since=19)
    assert [msg.offset for msg in page.messages] == [20, 21]


def test_presence_exclude_and_attributes(
    realtime: str, ws: WebSocketTestClient, users: dict[str, Any]
):
    watcher = ws.connect(user=users["bob"], channel="presence-lobby", query={"device": "desktop"})
    phone = ws.connect(user=users["alice"], channel="presence-lobby", query={"device": "mobile"})
    assert phone.response.status_code == 200
    assert watcher.received == [
        {"type": "member_added", "channel": "presence-lobby", "user_id": str(users["alice"].pk)}
    ]
    assert phone.received == []
    phone.send({"action": "$presence", "channel": "presence-lobby"})
    assert phone.received[-1]["members"] == sorted([str(users["alice"].pk), str(users["bob"].pk)])
    assert phone.send({"action": "my_attributes"}).json() == {"device": "mobile"}
    row = m.WebSocketSession.objects.using(realtime).get(connection_id=phone.connection_id)
    assert row.attributes == {"device": "mobile"}
    mobiles = m.WebSocketSession.objects.using(realtime).filter(
        connected=True, attributes__device="mobile"
    )
    assert [s.connection_id for s in mobiles] == [phone.connection_id]
    before = len(watcher.received)
    reply = phone.send({"action": "to_others", "text": "hi"})
    assert reply.json() == {"queryset": 1, "shortcut": 1}
    assert watcher.received[before:] == [
        {"type": "qs", "text": "hi"},
        {"type": "shortcut", "text": "hi"},
    ]
    assert not any(msg.get("type") in ("qs", "shortcut") for msg in phone.received)
    bad = ws.connect(user=users["alice"], channel="presence-lobby", query={"device": "tablet"})
    assert bad.response.status_code == 400 and bad.response.json()["error"] == "invalid_attribute"
    phone.disconnect()
    assert watcher.received[-1] == {
        "type": "member_removed",
        "channel": "presence-lobby",
        "user_id": str(users["alice"].pk),
    }
