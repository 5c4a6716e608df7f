"""Tests of the chat example (``manage.py test chat``), written the way a project tests its
own WebSocket code: with :class:`apigw_ws_django.testing.WebSocketTestClient`."""

from __future__ import annotations

import io

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import TestCase

from apigw_ws_django.testing import WebSocketTestClient
from chat.models import Message


class ChatTests(TestCase):
    """Rooms, presence, history and the staff-only room."""

    @classmethod
    def setUpTestData(cls) -> None:
        call_command("seed_demo", stdout=io.StringIO())
        users = get_user_model().objects
        cls.alice = users.get(username="alice")
        cls.bob = users.get(username="bob")

    def setUp(self) -> None:
        self.ws = WebSocketTestClient()
        self.addCleanup(self.ws.close)

    # --8<-- [start:test]
    def test_chat_in_a_room(self) -> None:
        alice = self.ws.connect(user=self.alice, channel="room-general")
        bob = self.ws.connect(user=self.bob, channel="room-general")
        assert alice.response.status_code == 200

        # presence: alice heard bob arrive; bob asks who is there once connected
        assert alice.received[-1]["type"] == "member_added"
        bob.send({"action": "join"})
        bob.send({"action": "$presence", "channel": "room-general"})
        history, members = bob.received
        assert history["type"] == "history"
        assert members["members"] == sorted([str(self.alice.pk), str(self.bob.pk)])

        alice.send({"action": "chat_message", "text": "  hello  ", "id": "a1b2c3d4-line"})
        line = bob.received[-1]["data"]  # rooms are history channels: the envelope's data
        assert (line["type"], line["name"], line["text"]) == ("chat_message", "alice", "hello")
        assert line["id"] == "a1b2c3d4-line"
        # not echoed to alice: she gets only the offset of her line ($skip)
        assert alice.received[-1]["type"] == "$skip"
        assert Message.objects.get().text == "hello"
        # --8<-- [end:test]

        bob.disconnect()
        assert alice.received[-1] == {
            "type": "member_removed",
            "channel": "room-general",
            "user_id": str(self.bob.pk),
        }

    def test_staff_room(self) -> None:
        refused = self.ws.connect(user=self.bob, channel="room-staff")
        assert refused.response.status_code == 403
        assert self.ws.connect(user=self.alice, channel="room-staff").accepted
        assert self.ws.connect(user=self.alice, channel="no-such").response.status_code == 403
        assert self.ws.connect(channel="room-general").response.status_code == 401

    def test_history_after_join(self) -> None:
        alice = self.ws.connect(user=self.alice, channel="room-help")
        for text in ("one", "two"):
            alice.send({"action": "chat_message", "text": text})
        alice.send({"action": "chat_message", "text": "   "})  # ignored
        late = self.ws.connect(user=self.bob, channel="room-help")
        late.send({"action": "join"})
        history = late.received[0]
        assert [m["text"] for m in history["messages"]] == ["one", "two"]
        assert late.send({"action": "ping"}).status_code == 200

    def test_page(self) -> None:
        assert self.client.get("/").status_code == 302
        self.client.force_login(self.alice)
        page = self.client.get("/?room=help")
        config = page.context["chat_config"]
        assert config["initialRoom"] == "room-help"
        assert config["clientUrl"] == "/static/apigw_ws/apigw-ws.js"
        assert config["tokenUrl"] == "/ws-token/"
        assert b'id="chat-config"' in page.content
        token = self.client.post("/ws-token/", {"channel": "room-help"}).json()["token"]
        assert self.ws.connect(token=token, channel="room-help").accepted
