"""Tests of the handlers, without AWS: `python manage.py test`."""

from django.contrib.auth import get_user_model
from django.test import TestCase

from apigw_ws_django.testing import WebSocketTestClient


class ChatTests(TestCase):
    def setUp(self) -> None:
        self.ws = WebSocketTestClient()  # calls /ws/... as API Gateway does, records sends
        self.addCleanup(self.ws.close)
        users = get_user_model().objects
        self.alice = users.create_user("alice", password="pw-alice")
        self.bob = users.create_user("bob", password="pw-bob")

    def test_chat_message_reaches_the_channel(self) -> None:
        alice = self.ws.connect(user=self.alice, channel="general")
        bob = self.ws.connect(user=self.bob, channel="general")
        assert alice.response.status_code == 200

        alice.send({"action": "chat_message", "text": "  hello  "})
        expected = {"type": "chat_message", "user": str(self.alice.pk), "text": "hello"}
        assert alice.received == [expected]
        assert bob.received == [expected]

    def test_reply(self) -> None:
        bob = self.ws.connect(user=self.bob, channel="general")
        response = bob.send({"action": "whoami"})
        assert response.json() == {"type": "whoami", "user": str(self.bob.pk)}
