"""Tests of the function, without AWS: `pytest test_chat.py`."""

import os

# chat.py reads its token signing key when imported: a test-only one unless one is set
os.environ.setdefault("APIGW_WS_TOKEN_KEY", "test-only-token-key-0123456789abcdef")

import chat  # after the key is set

from apigw_ws_core.testing import RecordingTransport, lambda_event, new_connection_id


def test_chat_message() -> None:
    chat.storage.create_tables()
    chat.app.transport = RecordingTransport()  # record what is sent instead of calling AWS
    token, _ = chat.app.issue_token("alice")
    cid = new_connection_id()
    event = lambda_event("CONNECT", cid, query={"ws_token": token, "channel": "general"})
    assert chat.lambda_handler(event, None)["statusCode"] == 200

    message = lambda_event("MESSAGE", cid, body='{"action": "chat_message", "text": "hi"}')
    assert chat.lambda_handler(message, None)["statusCode"] == 200
    assert chat.app.transport.messages_for(cid) == [
        {"type": "chat_message", "user": "alice", "text": "hi"}
    ]
