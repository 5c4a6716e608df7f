"""The two thin entry points: plain WSGI over real loopback HTTP, and the Lambda handler
with the real event shapes."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

from apigw_ws_core.aws_lambda import make_handler
from apigw_ws_core.events import MAX_BODY_BYTES
from apigw_ws_core.testing import gateway_headers, lambda_event, new_connection_id
from apigw_ws_core.wsgi import make_wsgi_app

from .helpers import SECRET, make_app, snapshot


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served():
    """A WebSocketApp served by wsgiref on 127.0.0.1 under /ws/."""
    app = make_app()
    server = make_server("127.0.0.1", 0, make_wsgi_app(app, prefix="/ws"), handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app, f"http://127.0.0.1:{server.server_port}/ws"
    server.shutdown()
    server.server_close()


def post(url, headers, body=b"", method="POST"):
    req = urllib.request.Request(
        url, data=body if method == "POST" else None, headers=headers, method=method
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_full_cycle_over_http(served):
    app, base = served
    token, _ = app.issue_token("42")
    cid = new_connection_id()
    status, _, _ = post(
        f"{base}/connect?channel=general&ws_token={token}",
        gateway_headers("connect", cid, secret=SECRET),
    )
    assert status == 200
    status, hdrs, body = post(
        f"{base}/default",
        gateway_headers("default", cid, secret=SECRET),
        json.dumps({"action": "chat_message", "text": "hey"}).encode(),
    )
    assert status == 200
    assert json.loads(body) == {"ok": True}
    assert hdrs["Content-Type"] == "application/json"
    assert app.transport.messages_for(cid) == [{"type": "chat", "text": "hey", "from": "42"}]
    status, _, _ = post(f"{base}/disconnect", gateway_headers("disconnect", cid, secret=SECRET))
    assert status == 200
    assert app.storage.get_session(cid).connected is False


def test_legacy_connection_id_header_only(served):
    app, base = served
    app.config = type(app.config)(secret=SECRET, require_token=False)
    cid = new_connection_id()
    status, _, _ = post(f"{base}/connect", {"connectionId": cid, "X-Apigw-Ws-Secret": SECRET})
    assert status == 200
    assert app.storage.get_session(cid) is not None


@pytest.mark.parametrize(
    ("path", "headers", "body", "method", "status", "code"),
    [
        ("/connect", {"X-Apigw-Ws-Secret": SECRET}, b"", "POST", 400, "invalid_connection_id"),
        (
            "/connect",
            {"X-Apigw-Ws-Connection-Id": "bad id!", "X-Apigw-Ws-Secret": SECRET},
            b"",
            "POST",
            400,
            "invalid_connection_id",
        ),
        (
            "/connect",
            {"X-Apigw-Ws-Connection-Id": "a" * 200, "X-Apigw-Ws-Secret": SECRET},
            b"",
            "POST",
            400,
            "invalid_connection_id",
        ),
        ("/default", "msg", b"x" * (MAX_BODY_BYTES + 1), "POST", 413, "body_too_large"),
        ("/default", "msg", b"{bad", "POST", 403, "forbidden"),
        ("/connect", "connect", b"", "GET", 405, "method_not_allowed"),
        ("/a/b", "msg", b"", "POST", 404, "not_found"),
        ("", "msg", b"", "POST", 404, "not_found"),
    ],
)
def test_http_rejections(served, path, headers, body, method, status, code):
    app, base = served
    cid = new_connection_id()
    if headers == "msg":
        headers = gateway_headers("default", cid, secret="wrong" if status == 403 else SECRET)
    elif headers == "connect":
        headers = gateway_headers("connect", cid, secret=SECRET)
    before = snapshot(app.storage)
    got_status, _, got_body = post(base + path, headers, body, method)
    assert got_status == status
    assert json.loads(got_body)["error"] == code
    assert snapshot(app.storage) == before


def test_event_type_header_must_match_route(served):
    _, base = served
    cid = new_connection_id()
    headers = gateway_headers("connect", cid, secret=SECRET)
    status, _, body = post(f"{base}/disconnect", headers)
    assert status == 400
    assert json.loads(body)["error"] == "bad_request"


def test_lambda_cycle():
    app = make_app(allowed_stages=["test"])
    handler = make_handler(app)
    token, _ = app.issue_token("5")
    cid = new_connection_id()
    res = handler(
        lambda_event(
            "CONNECT",
            cid,
            query={"channel": "room", "ws_token": token},
            headers={"Origin": "https://x.test", "Sec-WebSocket-Protocol": "v1"},
        ),
        None,
    )
    assert res["statusCode"] == 200
    assert res["headers"]["Sec-WebSocket-Protocol"] == "v1"
    assert app.storage.get_session(cid).user_id == "5"
    res = handler(
        lambda_event("MESSAGE", cid, body='{"action": "chat_message", "text": "t"}'), None
    )
    assert res["statusCode"] == 200
    assert json.loads(res["body"]) == {"ok": True}
    res = handler(lambda_event("DISCONNECT", cid), None)
    assert res["statusCode"] == 200
    assert app.storage.get_session(cid).connected is False


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"requestContext": "x"},
        {"requestContext": {"eventType": "WHAT", "connectionId": "AAAAAAAAAAAAAAA="}},
        {"requestContext": {"eventType": "MESSAGE"}},
        {"requestContext": {"eventType": "MESSAGE", "connectionId": 5}},
        {
            "requestContext": {"eventType": "MESSAGE", "connectionId": "AAAAAAAAAAAAAAA="},
            "body": 12,
        },
        {
            "requestContext": {"eventType": "MESSAGE", "connectionId": "AAAAAAAAAAAAAAA="},
            "body": "!!",
            "isBase64Encoded": True,
        },
        {
            "requestContext": {"eventType": "MESSAGE", "connectionId": "AAAAAAAAAAAAAAA="},
            "body": "x" * (MAX_BODY_BYTES + 1),
        },
        "not a dict",
    ],
)
def test_lambda_bad_events_are_4xx(event):
    app = make_app()
    before = snapshot(app.storage)
    res = make_handler(app)(event, None)
    assert 400 <= res["statusCode"] < 500
    assert "error" in json.loads(res["body"])
    assert snapshot(app.storage) == before


def test_lambda_stage_allowlist():
    app = make_app(allowed_stages=["prod"], require_token=False)
    res = make_handler(app)(lambda_event("CONNECT", new_connection_id()), None)
    assert res["statusCode"] == 403


def test_lambda_base64_body():
    import base64

    app = make_app(require_token=False)
    handler = make_handler(app)
    cid = new_connection_id()
    handler(lambda_event("CONNECT", cid), None)
    ev = lambda_event("MESSAGE", cid)
    ev["body"] = base64.b64encode(b'{"action": "chat_message"}').decode()
    ev["isBase64Encoded"] = True
    assert handler(ev, None)["statusCode"] == 200


def test_wsgi_chunked_bodies():
    import io

    from apigw_ws_core.http import read_body as read_request_body
    from apigw_ws_core.wsgi import request_from_environ

    def read_body(environ, limit):
        return read_request_body(request_from_environ(environ, "default"), limit)

    limit = 100
    chunked = {"HTTP_TRANSFER_ENCODING": "chunked"}
    small = {**chunked, "wsgi.input": io.BytesIO(b"x" * 100), "wsgi.input_terminated": True}
    assert read_body(small, limit) == b"x" * 100
    stream = io.BytesIO(b"x" * 10_000)
    big = {**chunked, "wsgi.input": stream, "wsgi.input_terminated": True}
    with pytest.raises(Exception) as exc_info:
        read_body(big, limit)
    assert exc_info.value.code == "body_too_large"
    assert stream.tell() == limit + 1  # never read past the limit
    with pytest.raises(Exception) as exc_info:
        read_body({**chunked, "wsgi.input": io.BytesIO(b"{}")}, limit)
    assert exc_info.value.code == "bad_request"
    assert read_body({"wsgi.input": io.BytesIO(b"ignored")}, limit) == b""
