"""The user id from a Lambda REQUEST authorizer (``user_from_authorizer``), over HTTP and
Lambda, and the Lambda entry point refusing authorizer request events."""

from __future__ import annotations

from apigw_ws_core.aws_lambda import make_handler
from apigw_ws_core.events import from_http, is_authorizer_event
from apigw_ws_core.testing import gateway_headers, lambda_event, new_connection_id

from .helpers import SECRET, make_app


def _http_connect(app, headers, query=""):
    cid = new_connection_id()
    base = gateway_headers("connect", cid, secret=SECRET)
    reply = app.handle(from_http("connect", {**base, **headers}, query))
    return cid, reply


def test_http_principal_header_is_the_user_when_configured():
    app = make_app(user_from_authorizer="principalId")
    cid, reply = _http_connect(app, {"X-Apigw-Ws-Authorizer-Principal-Id": "user-7"})
    assert reply.status == 200
    assert app.storage.get_session(cid).user_id == "user-7"


def test_http_context_key_is_case_insensitive():
    app = make_app(user_from_authorizer="userId")
    cid, reply = _http_connect(
        app,
        {"X-Apigw-Ws-Authorizer-Principal-Id": "me", "X-Apigw-Ws-Authorizer-userId": "u-42"},
    )
    assert reply.status == 200
    assert app.storage.get_session(cid).user_id == "u-42"


def test_not_configured_ignores_the_headers_and_requires_a_token():
    app = make_app()
    _, reply = _http_connect(app, {"X-Apigw-Ws-Authorizer-Principal-Id": "user-7"})
    assert reply.status == 401


def test_configured_but_absent_falls_back_to_the_token_rules():
    app = make_app(user_from_authorizer="principalId")
    _, reply = _http_connect(app, {})
    assert reply.status == 401
    token, _ = app.issue_token("99")
    cid, reply = _http_connect(app, {}, f"ws_token={token}")
    assert reply.status == 200
    assert app.storage.get_session(cid).user_id == "99"


def test_lambda_request_context_authorizer_is_the_user():
    app = make_app(user_from_authorizer="userId")
    handler = make_handler(app)
    cid = new_connection_id()
    event = lambda_event("CONNECT", cid)
    event["requestContext"]["authorizer"] = {
        "principalId": "me",
        "userId": "u-1",
        "integrationLatency": 12,
    }
    assert handler(event, None)["statusCode"] == 200
    assert app.storage.get_session(cid).user_id == "u-1"
    msg = lambda_event("MESSAGE", cid, body='{"action": "chat_message", "text": "hi"}')
    assert handler(msg, None)["statusCode"] == 200
    assert app.transport.messages_for(cid)[0]["from"] == "u-1"


def test_make_handler_never_takes_an_authorizer_request_for_a_connect():
    app = make_app(require_token=False)
    handler = make_handler(app)
    cid = new_connection_id()
    event = lambda_event("CONNECT", cid)
    event.update(
        {
            "type": "REQUEST",
            "methodArn": "arn:aws:execute-api:us-east-1:123456789012:abcdef1234/test/$connect",
        }
    )
    assert is_authorizer_event(event)
    result = handler(event, None)
    assert result["statusCode"] == 400
    assert app.storage.get_session(cid) is None
