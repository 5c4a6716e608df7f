"""The Lambda example in docs/quickstart-lambda.rst works end to end on API Gateway events."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from apigw_ws_core.testing import RecordingTransport, lambda_event, new_connection_id

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "quickstarts" / "lambda" / "chat.py"


@pytest.fixture
def example(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'chat.sqlite3'}")
    monkeypatch.setenv("APIGW_WS_URL", "wss://abc123.execute-api.eu-west-1.amazonaws.com/prod")
    # no gateway secret on Lambda: tokens are signed with this key (read at import)
    monkeypatch.setenv("APIGW_WS_TOKEN_KEY", "test-only-token-key-0123456789abcdef")
    spec = importlib.util.spec_from_file_location("docs_lambda_chat", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    module.storage.create_tables()
    module.app.transport = RecordingTransport()
    yield module
    module.engine.dispose()
    del sys.modules[spec.name]


def _token(example, user, channel):
    event = {
        "requestContext": {"authorizer": {"jwt": {"claims": {"sub": user}}}},
        "queryStringParameters": {"channel": channel},
    }
    return example.token_handler(event)


def _join(example, user, channel="general"):
    reply = _token(example, user, channel)
    assert reply["statusCode"] == 200
    body = json.loads(reply["body"])
    assert body["url"].startswith("wss://")
    cid = new_connection_id()
    connect = lambda_event("CONNECT", cid, query={"ws_token": body["token"], "channel": channel})
    assert example.lambda_handler(connect, None)["statusCode"] == 200
    return cid


def test_two_users_chat_through_the_lambda_handler(example):
    alice = _join(example, "alice")
    bob = _join(example, "bob")
    message = lambda_event(
        "MESSAGE", alice, body=json.dumps({"action": "chat_message", "text": " hi bob "})
    )
    assert example.lambda_handler(message, None)["statusCode"] == 200
    sent = {m.connection_id: json.loads(m.data) for m in example.app.transport.sent}
    expected = {"type": "chat_message", "user": "alice", "text": "hi bob"}
    assert sent == {alice: expected, bob: expected}


def test_keepalive_ping_is_accepted_silently(example):
    alice = _join(example, "alice")
    ping = lambda_event("MESSAGE", alice, body=json.dumps({"action": "ping"}))
    assert example.lambda_handler(ping, None)["statusCode"] == 200
    assert example.app.transport.sent == []


def test_token_endpoint_refuses_anonymous_and_private_channels(example):
    assert example.token_handler({"requestContext": {}})["statusCode"] == 401
    assert _token(example, "bob", "private-staff")["statusCode"] == 403


def test_connect_without_token_is_refused(example):
    event = lambda_event("CONNECT", new_connection_id(), query={"channel": "general"})
    assert example.lambda_handler(event, None)["statusCode"] == 401


CLEANUP = EXAMPLE.with_name("cleanup.py")


def test_scheduled_cleanup_heals_a_lost_disconnect(example, monkeypatch):
    from datetime import UTC, datetime, timedelta

    alice = _join(example, "alice")
    bob = _join(example, "bob")
    example.app.transport.gone.add(bob)  # bob's $disconnect never arrived
    monkeypatch.setattr(example.app, "clock", lambda: datetime.now(UTC) + timedelta(minutes=5))
    monkeypatch.setitem(sys.modules, "chat", example)
    spec = importlib.util.spec_from_file_location("docs_lambda_cleanup", CLEANUP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 60_000

    result = module.cleanup_handler({"source": "aws.events"}, Context())
    assert result["heal"] == {
        "checked": 2,
        "alive": 1,
        "gone": 1,
        "unknown": 0,
        "marked": 1,
        "elapsed": result["heal"]["elapsed"],
        "dry_run": False,
        "first_error": None,
    }
    json.dumps(result)  # a Lambda result must be JSON
    assert example.storage.get_session(alice).connected
    assert not example.storage.get_session(bob).connected
