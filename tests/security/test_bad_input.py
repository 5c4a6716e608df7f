"""Bad input everywhere: a 4xx with a stable error code, never a 500, never a partial write.

Bodies (malformed and non-object JSON, wrong types, deep nesting, huge numbers and bodies,
odd encodings), headers (missing, duplicated, odd content), WSGI environments and Lambda
event shapes. Every case runs against an app with a live session, and checks that the
storage is unchanged and nothing was sent.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

from apigw_ws_core.aws_lambda import make_handler
from apigw_ws_core.events import MAX_BODY_BYTES
from apigw_ws_core.testing import gateway_headers, lambda_event, new_connection_id
from apigw_ws_core.wsgi import make_wsgi_app

from .strategies import STABLE_CODES
from .support import SECRET, connect, make_app, message, snapshot, status_and_code

BAD_BODIES: list[tuple[bytes, str]] = [
    (b"", "invalid_json"),
    (b" ", "invalid_json"),
    (b"{", "invalid_json"),
    (b"{'action': 'echo'}", "invalid_json"),
    (b'{"action": "echo",}', "invalid_json"),
    (b'{"action": "echo"} trailing', "invalid_json"),
    (b'{"action": "echo"}{"action": "echo"}', "invalid_json"),
    (b"\x00", "invalid_json"),
    (b'{"action": "echo"}\x00', "invalid_json"),
    (b'{"action":\x00"echo"}', "invalid_json"),
    (b"\xef\xbb\xbf" + b'{"action": "echo"}', "invalid_json"),  # UTF-8 BOM
    (b"\xff\xfe" + '{"action": "echo"}'.encode("utf-16-le"), "invalid_json"),  # UTF-16
    ('{"action": "echo"}'.encode("utf-32"), "invalid_json"),
    ('{"action": "echo", "t": "é"}'.encode("latin-1"), "invalid_json"),
    (b'{"action": "echo", "t": "\xc0\xaf"}', "invalid_json"),  # overlong UTF-8
    (b'{"action": "echo", "t": "\xed\xa0\x80"}', "invalid_json"),  # CESU-8 surrogate
    (b'{"action": "echo", "t": "\xf4\x90\x80\x80"}', "invalid_json"),  # > U+10FFFF
    (b'{"action": "echo", "t": "\\ud800"}', "invalid_json"),  # lone surrogate escape
    (b'{"action": "echo", "\\udfff": 1}', "invalid_json"),  # ... in a key
    (b'{"action": "echo", "x": 1e999999}', "invalid_json"),  # inf
    (b'{"action": "echo", "x": -1e999999}', "invalid_json"),
    (b'{"action": "echo", "x": NaN}', "invalid_json"),
    (b'{"action": "echo", "x": Infinity}', "invalid_json"),
    (b'{"action": "echo", "x": -Infinity}', "invalid_json"),
    (b'{"action": "echo", "x": ' + b"9" * 5000 + b"}", "invalid_json"),  # > int digit limit
    (b'{"action": "echo", "action": "chat_message"}', "invalid_json"),  # duplicate key
    (b'{"action": "echo", "x": {"a": 1, "a": 2}}', "invalid_json"),
    (b'{"action": "echo", "x": ' + b"[" * 33 + b"]" * 33 + b"}", "invalid_json"),
    (b'{"action": "echo", "x": ' + b'{"a":' * 40 + b"1" + b"}" * 40 + b"}", "invalid_json"),
    (b"[" * 100_000, "invalid_json"),
    (b"[" * 60_000 + b"]" * 60_000, "invalid_json"),
    (b'{"a":' * 20_000 + b"1" + b"}" * 20_000, "invalid_json"),
    (b"[]", "invalid_message"),
    (b"[{}]", "invalid_message"),
    (b'"echo"', "invalid_message"),
    (b"123", "invalid_message"),
    (b"1e999", "invalid_json"),
    (b"true", "invalid_message"),
    (b"null", "invalid_message"),
    (b"{}", "invalid_message"),
    (b'{"1": "echo"}', "invalid_message"),
    (b'{"Action": "echo"}', "invalid_message"),
    (b'{"action": 1}', "invalid_handler_name"),
    (b'{"action": 1e5}', "invalid_handler_name"),
    (b'{"action": true}', "invalid_handler_name"),
    (b'{"action": null}', "invalid_handler_name"),
    (b'{"action": {}}', "invalid_handler_name"),
    (b'{"action": ["echo"]}', "invalid_handler_name"),
    (b'{"action": "echo\\u0000"}', "invalid_handler_name"),
    (b'{"action": "__class__"}', "invalid_handler_name"),
    (b'{"action": "nope"}', "unknown_handler"),
]


@pytest.mark.parametrize(("body", "code"), BAD_BODIES, ids=lambda v: repr(v)[:60])
def test_bad_bodies_are_400_with_a_stable_code_and_change_nothing(body, code):
    app = make_app(require_token=False)
    _, cid = connect(app)
    before = snapshot(app.storage)
    reply = message(app, cid, body)
    assert status_and_code(reply) == (400, code)
    assert snapshot(app.storage) == before
    assert app.transport.sent == []


def test_bodies_over_the_limit_are_413_before_parsing():
    app = make_app(require_token=False)
    _, cid = connect(app)
    big = json.dumps({"action": "echo", "x": "a" * MAX_BODY_BYTES}).encode()
    client = Client(make_wsgi_app(app, prefix="/ws"))
    resp = client.post(
        "/ws/default", headers=gateway_headers("default", cid, secret=SECRET), data=big
    )
    assert (resp.status_code, resp.get_json()["error"]) == (413, "body_too_large")
    event = lambda_event("MESSAGE", cid, body=big.decode())
    assert make_handler(app)(event)["statusCode"] == 413


def test_valid_but_unusual_json_is_accepted_and_round_trips():
    """What must keep working: unicode, escaped NUL in values, big-but-allowed numbers,
    nesting right at the limit, integer-looking keys."""
    app = make_app(require_token=False)
    _, cid = connect(app)
    data = {
        "action": "echo",
        "text": "𝄞 é \u2028 \x00 <script>",
        "n": 10**300,
        "f": 1.5e300,
        "nested": [[[[[[[[[[1]]]]]]]]]],
        "1": "integer-looking key",
    }
    reply = message(app, cid, json.dumps(data))
    assert reply.status == 200
    assert reply.json_body() == data


# --- headers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (
            lambda h: h.pop("X-Apigw-Ws-Connection-Id") and h.pop("connectionId"),
            "invalid_connection_id",
        ),
        (
            lambda h: h.update({"X-Apigw-Ws-Connection-Id": "", "connectionId": ""}),
            "invalid_connection_id",
        ),
        (lambda h: h.update({"X-Apigw-Ws-Connection-Id": "short"}), "invalid_connection_id"),
        (lambda h: h.update({"X-Apigw-Ws-Connection-Id": "a" * 129}), "invalid_connection_id"),
        (
            lambda h: h.update({"X-Apigw-Ws-Connection-Id": "abc def ghi jkl="}),
            "invalid_connection_id",
        ),
        (lambda h: h.update({"X-Apigw-Ws-Connection-Id": "abcdefgh%00"}), "invalid_connection_id"),
        (
            lambda h: h.update({"X-Apigw-Ws-Connection-Id": "ab,cdefghijkl="}),
            "invalid_connection_id",
        ),
        (
            lambda h: h.update({"X-Apigw-Ws-Connection-Id": "äbcdefghijkl="}),
            "invalid_connection_id",
        ),
        (
            lambda h: h.update({"X-Apigw-Ws-Connection-Id": "../../etc/passwd"}),
            "invalid_connection_id",
        ),
        (lambda h: h.update({"X-Apigw-Ws-Event-Type": "CONNECT"}), "bad_request"),
        (lambda h: h.update({"X-Apigw-Ws-Event-Type": "DISCONNECT"}), "bad_request"),
    ],
)
def test_bad_message_headers_are_4xx(mutate, code):
    app = make_app(require_token=False)
    _, cid = connect(app)
    before = snapshot(app.storage)
    headers = gateway_headers("default", cid, secret=SECRET)
    mutate(headers)
    resp = Client(make_wsgi_app(app, prefix="/ws")).post(
        "/ws/default", headers=headers, data=b'{"action": "echo"}'
    )
    assert resp.status_code == 400
    assert resp.get_json()["error"] == code
    assert snapshot(app.storage) == before


def test_odd_but_harmless_header_content_is_stored_clean():
    app = make_app(require_token=False)
    ua = "Mozilla\x00/5.0\r\n\ud800 " + "x" * 1000
    reply, cid = connect(
        app,
        source_ip="not an ip",
        extra={"User-Agent": ua, "X-Apigw-Ws-Stage": "prod\x00\x1b[31m"},
    )
    assert reply.status == 200
    s = app.storage.get_session(cid)
    for value, limit in ((s.user_agent, 255), (s.stage, 64), (s.source_ip, 64)):
        assert len(value) <= limit and value.isprintable()
    assert s.stage == "prod[31m"
    assert s.source_ip == ""


@pytest.mark.parametrize(
    "protocol",
    ["chat\r\nSet-Cookie: a=b", "chat\nX: y", "a b", "", " ", ",", "ch@t", "x" * 200, "é"],
    ids=repr,
)
def test_subprotocol_echo_never_carries_header_syntax(protocol):
    app = make_app(require_token=False)
    reply, _ = connect(app, extra={"Sec-WebSocket-Protocol": protocol})
    assert reply.status == 200
    for name, value in reply.headers:
        assert "\r" not in value and "\n" not in value and " " not in value
        if name == "Sec-WebSocket-Protocol":
            assert value == protocol.split(",")[0].strip()


# --- the WSGI environment -----------------------------------------------------------------


def _environ(app_cid: str, **overrides: Any) -> dict[str, Any]:
    headers = gateway_headers("default", app_cid, secret=SECRET)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/ws/default",
        "QUERY_STRING": "",
        "wsgi.input": io.BytesIO(b'{"action": "echo"}'),
        "CONTENT_LENGTH": "18",
        "SERVER_NAME": "x",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
    }
    for k, v in headers.items():
        environ["HTTP_" + k.upper().replace("-", "_")] = v
    environ.update(overrides)
    return environ


@pytest.mark.parametrize(
    ("overrides", "status"),
    [
        ({}, 200),
        ({"CONTENT_LENGTH": "-5"}, 400),  # empty body → invalid_json
        ({"CONTENT_LENGTH": ""}, 400),
        ({"CONTENT_LENGTH": "abc"}, 400),
        ({"CONTENT_LENGTH": "1e3"}, 400),
        ({"CONTENT_LENGTH": "99999999999999999999999"}, 413),
        ({"CONTENT_LENGTH": "5"}, 400),  # truncated body
        ({"PATH_INFO": "/ws/\x00"}, 400),  # custom route slug: a message, but bad body
        ({"PATH_INFO": "/ws/default/../connect"}, 404),
        ({"PATH_INFO": "/ws//default"}, 200),  # same route: harmless normalisation
        ({"HTTP_X_APIGW_WS_CONNECTION_ID": "abcdefgh\nX: y"}, 400),
        ({"PATH_INFO": "/ws"}, 404),
        ({"PATH_INFO": ""}, 404),
        ({"REQUEST_METHOD": "PUT"}, 405),
        ({"REQUEST_METHOD": "post"}, 405),
    ],
)
def test_wsgi_environment_oddities(overrides, status):
    app = make_app(require_token=False)
    _, cid = connect(app)
    before = snapshot(app.storage)
    if overrides.get("PATH_INFO") == "/ws/\x00":
        overrides = {**overrides, "wsgi.input": io.BytesIO(b"x"), "CONTENT_LENGTH": "1"}
    wsgi = make_wsgi_app(app, prefix="/ws")
    seen: list[str] = []
    body = b"".join(wsgi(_environ(cid, **overrides), lambda s, h, *a: seen.append(s)))
    assert int(seen[0].split()[0]) == status
    if status != 200:
        assert json.loads(body)["error"] in STABLE_CODES
        assert snapshot(app.storage) == before


# --- Lambda event shapes ---------------------------------------------------------------


def _lambda_cases() -> list[Any]:
    cid = "AAAAAAAAAAAAAAA="
    good = lambda_event("MESSAGE", cid, body='{"action": "echo"}')
    ctx = good["requestContext"]
    cases: list[Any] = [
        None,
        [],
        "event",
        42,
        {},
        {"requestContext": None},
        {"requestContext": []},
        {"requestContext": "x"},
        {"requestContext": {}},
        {"requestContext": {"eventType": "MESSAGE"}},
        {"requestContext": {**ctx, "eventType": "UPGRADE"}},
        {"requestContext": {**ctx, "eventType": None}},
        {"requestContext": {**ctx, "eventType": 5}},
        {"requestContext": {**ctx, "connectionId": 12345678}},
        {"requestContext": {**ctx, "connectionId": None}},
        {"requestContext": {**ctx, "connectionId": "a b c d e f g h"}},
        {"requestContext": {**ctx, "connectionId": ["AAAAAAAAAAAAAAA="]}},
        {**good, "body": 5},
        {**good, "body": {"action": "echo"}},
        {**good, "body": ["x"]},
        {**good, "body": b'{"action": "echo"}'},
        {**good, "body": "not json"},
        {**good, "body": '{"action": "echo", "t": "\ud800"}'},
        {**good, "body": '{"action": "echo"}\ud800'},
        {**good, "isBase64Encoded": True, "body": "!!!not base64!!!"},
        {**good, "isBase64Encoded": True, "body": "e30"},  # missing padding
        {**good, "isBase64Encoded": "false"},  # truthy string
        {**good, "isBase64Encoded": True, "body": "/w=="},  # b"\xff"
        {**good, "headers": None},
        {**good, "headers": ["x"]},
        {**good, "headers": {"x": None, 5: "y", "z": ["list"]}},
        {"requestContext": {**ctx, "identity": "x"}, "body": '{"action": "echo"}'},
        {"requestContext": {**ctx, "identity": {"sourceIp": ["1"]}}, "body": "{}"},
        {"requestContext": {**ctx, "stage": {"a": 1}}, "body": "{}"},
    ]
    connect_ev = lambda_event("CONNECT", cid, query={"channel": "x"})
    cctx = connect_ev["requestContext"]
    cases += [
        {**connect_ev, "queryStringParameters": ["channel", "x"]},
        {**connect_ev, "queryStringParameters": {"channel": None, "ws_token": None}},
        {**connect_ev, "queryStringParameters": {"channel": ["a", "b"]}},
        {**connect_ev, "queryStringParameters": {"channel": {"a": 1}}},
        {**connect_ev, "queryStringParameters": {"channel": "bad name"}},
        {**connect_ev, "queryStringParameters": {"ws_token": "x" * 10_000}},
        {
            **connect_ev,
            "queryStringParameters": {"channel": "b"},
            "multiValueQueryStringParameters": {"channel": ["a", "b"]},
        },
        {**connect_ev, "multiValueQueryStringParameters": "x"},
        {**connect_ev, "headers": {"Origin": "https://a:bad", "Sec-WebSocket-Protocol": "a\r\nb"}},
        {"requestContext": {**cctx, "disconnectStatusCode": "1000"}, "headers": {}},
        {"requestContext": {**cctx, "eventType": "DISCONNECT", "disconnectStatusCode": "x"}},
    ]
    return cases


@pytest.mark.parametrize("event", _lambda_cases(), ids=lambda e: repr(e)[:70])
def test_lambda_event_shapes_are_never_500(event):
    app = make_app(require_token=False)
    _, cid = connect(app, cid="AAAAAAAAAAAAAAA=")
    before = snapshot(app.storage)
    result = make_handler(app)(event, None)
    status = result["statusCode"]
    assert status < 500
    if status >= 400:
        assert json.loads(result["body"])["error"] in STABLE_CODES
        assert snapshot(app.storage) == before
    for value in result["headers"].values():
        assert "\r" not in value and "\n" not in value
    assert cid  # the session fixture was there throughout


def test_repeated_parameters_in_lambda_events_are_refused():
    app = make_app(require_token=False)
    event = lambda_event("CONNECT", new_connection_id(), query={"channel": "b"})
    event["multiValueQueryStringParameters"] = {"channel": ["a", "b"]}
    result = make_handler(app)(event, None)
    assert result["statusCode"] == 400
    assert app.storage.sessions == {}


def test_handler_bugs_are_500_but_say_nothing_and_write_nothing_more():
    """The one 5xx by design: the user's own handler raised. The reply leaks nothing."""
    app = make_app(require_token=False)

    @app.handler("boom")
    def boom(ctx, m):
        raise RuntimeError(f"internal detail {SECRET}")

    _, cid = connect(app)
    reply = message(app, cid, '{"action": "boom"}')
    assert status_and_code(reply) == (500, "handler_failed")
    assert SECRET.encode() not in reply.body and b"internal" not in reply.body


JSON_VALUES_FOR_DEPTH = st.recursive(
    st.none() | st.integers() | st.text(alphabet='[]{}"\\ab:,', max_size=8),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(alphabet='[]{}"\\ab', max_size=4), children, max_size=3),
    max_leaves=20,
)

SMALL_STACK_SCRIPT = """
import threading
from apigw_ws_core.events import from_http
from apigw_ws_core.testing import gateway_headers
from tests.security.support import SECRET, connect, make_app

app = make_app(require_token=False)
_, cid = connect(app)
results = []

def run():
    for body in (b"[" * 100_000, b'{"a":' * 25_000, b'{"action": "echo", "x": ' + b"[" * 90_000):
        headers = gateway_headers("default", cid, secret=SECRET)
        results.append(app.handle(from_http("default", headers, "", body)).status)

threading.stack_size(128 * 1024)
t = threading.Thread(target=run)
t.start()
t.join()
print(results)
"""


def test_deep_nesting_cannot_crash_a_thread_with_a_small_stack():
    """json's C parser recurses per level; 100 000 ``[`` in a thread with a 128 KiB stack
    (musl's default) used to kill the whole process with SIGSEGV. The flat pre-scan
    refuses the body first. Runs in a subprocess: a regression must not take pytest down."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", SMALL_STACK_SCRIPT],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(root), "PATH": ""},
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-500:])
    assert proc.stdout.strip() == "[400, 400, 400]"


@settings(max_examples=200, deadline=None)
@given(JSON_VALUES_FOR_DEPTH)
def test_the_nesting_prescan_agrees_with_the_parsed_depth(value):
    from apigw_ws_core.json_rules import nesting_exceeds as _nesting_exceeds

    raw = json.dumps(value).encode()

    def depth(v: Any) -> int:
        if isinstance(v, dict):
            return 1 + max((depth(x) for x in v.values()), default=0)
        if isinstance(v, list):
            return 1 + max((depth(x) for x in v), default=0)
        return 0

    d = depth(value)
    for limit in range(0, 8):
        assert _nesting_exceeds(raw, limit) == (d > limit), (raw, limit, d)
