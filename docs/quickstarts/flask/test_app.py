"""Tests of the handlers, without AWS: `pytest test_app.py`."""

from app import app, ws

from apigw_ws_core.testing import RecordingTransport, gateway_headers, new_connection_id


def test_chat_message_reaches_the_channel() -> None:
    client = app.test_client()
    secret = app.config["APIGW_WS_SECRET"]
    transport = RecordingTransport()
    ws.core.transport = transport  # record what is sent instead of calling AWS
    alice, bob = new_connection_id(), new_connection_id()
    for user, cid in (("alice", alice), ("bob", bob)):
        token, _ = ws.core.issue_token(user)
        response = client.post(
            f"/ws/connect?channel=general&ws_token={token}",
            headers=gateway_headers("connect", cid, secret=secret),
        )
        assert response.status_code == 200

    client.post(
        "/ws/default",
        data=b'{"action": "chat_message", "text": "hello"}',
        headers=gateway_headers("default", alice, secret=secret),
    )
    expected = {"type": "chat_message", "user": "alice", "text": "hello"}
    assert transport.messages_for(alice) == [expected]
    assert transport.messages_for(bob) == [expected]

    reply = client.post(
        "/ws/default",
        data=b'{"action": "whoami"}',
        headers=gateway_headers("default", bob, secret=secret),
    )
    assert reply.get_json() == {"type": "whoami", "user": "bob"}
