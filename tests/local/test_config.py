"""Configuration sources, mapping evaluation, ids, throttling and the frame guard (no sockets)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from apigw_ws_core.local import (
    ApiConfig,
    ConfigError,
    GatewayOptions,
    Integration,
    Route,
    config_from_backend,
    config_from_dict,
    config_from_lambda,
    default_request_parameters,
    load_config_file,
)
from apigw_ws_core.local.frames import FrameSizeGuard
from apigw_ws_core.local.ids import is_valid_connection_id, new_connection_id, new_request_id
from apigw_ws_core.local.mapping import (
    RouteRequest,
    apply_request_parameters,
    resolve_source,
    select_route_key,
)
from apigw_ws_core.local.throttle import TokenBucket

pytestmark = pytest.mark.timeout(10)

FULL_TOML = """
api_id = "abc123defg"
stage = "dev"
route_selection_expression = "$request.body.type"

[stage_variables]
backend = "http://127.0.0.1:9000"

[route_defaults]
timeout_ms = 5000

[routes."$connect"]
type = "HTTP_PROXY"
uri = "${stageVariables.backend}/ws/connect"

[routes."$connect".request_parameters]
"integration.request.header.X-Conn" = "context.connectionId"
"integration.request.querystring.token" = "route.request.querystring.ws_token"

[routes."$default"]
uri = "${stageVariables.backend}/ws/default"
two_way = false

[routes.chat]
type = "AWS_PROXY"
uri = "json:dumps"
"""


def test_backend_config_follows_the_wire_contract() -> None:
    api = config_from_backend("http://127.0.0.1:8000/ws", routes=["chat_message"], secret="xyz")
    assert set(api.routes) == {"$connect", "$disconnect", "$default", "chat_message"}
    assert api.routes["$connect"].integration.uri == "http://127.0.0.1:8000/ws/connect"
    assert api.routes["$disconnect"].integration.uri == "http://127.0.0.1:8000/ws/disconnect"
    assert api.routes["$default"].integration.uri == "http://127.0.0.1:8000/ws/default"
    assert api.routes["chat_message"].integration.uri == "http://127.0.0.1:8000/ws/chat_message"
    assert api.routes["$default"].two_way and api.routes["chat_message"].two_way
    assert not api.routes["$connect"].two_way
    params = api.routes["chat_message"].integration.request_parameters
    assert params == {
        "integration.request.header.X-Apigw-Ws-Connection-Id": "context.connectionId",
        "integration.request.header.X-Apigw-Ws-Route-Key": "context.routeKey",
        "integration.request.header.X-Apigw-Ws-Event-Type": "context.eventType",
        "integration.request.header.X-Apigw-Ws-Request-Id": "context.requestId",
        "integration.request.header.X-Apigw-Ws-Stage": "context.stage",
        "integration.request.header.X-Apigw-Ws-Source-Ip": "context.identity.sourceIp",
        "integration.request.header.X-Apigw-Ws-Secret": "'xyz'",
        "integration.request.header.connectionId": "context.connectionId",
    }
    assert all(r.integration.method == "POST" for r in api.routes.values())
    assert all(r.integration.timeout_ms == 29_000 for r in api.routes.values())


def test_backend_config_without_secret_and_one_way() -> None:
    api = config_from_backend("http://h/ws/", two_way=False)
    assert "integration.request.header.X-Apigw-Ws-Secret" not in (
        api.routes["$default"].integration.request_parameters
    )
    assert not api.routes["$default"].two_way
    with pytest.raises(ConfigError):
        config_from_backend("ftp://nope")
    with pytest.raises(ConfigError):
        config_from_backend("http://h/", routes=["$custom"])
    with pytest.raises(ConfigError):
        default_request_parameters("it's")


def test_toml_file_with_every_field(tmp_path: Any) -> None:
    path = tmp_path / "api.toml"
    path.write_text(FULL_TOML)
    api = load_config_file(path)
    assert api.api_id == "abc123defg"
    assert api.stage == "dev"
    assert api.route_selection_expression == "$request.body.type"
    assert api.stage_variables == {"backend": "http://127.0.0.1:9000"}
    connect = api.routes["$connect"]
    assert connect.integration.timeout_ms == 5000
    assert not connect.two_way
    assert connect.integration.request_parameters["integration.request.querystring.token"] == (
        "route.request.querystring.ws_token"
    )
    assert not api.routes["$default"].two_way
    assert api.routes["chat"].integration.type == "AWS_PROXY"
    assert api.routes["chat"].two_way
    # Round trip through the JSON form.
    json_path = tmp_path / "api.json"
    json_path.write_text(json.dumps(api.to_dict()))
    assert load_config_file(json_path) == api


def test_file_shorthand_and_route_list(tmp_path: Any) -> None:
    data = {
        "backend": "http://127.0.0.1:8000/ws/",
        "secret": "abc",
        "custom_routes": ["chat"],
        "routes": [{"route_key": "$default", "uri": "http://other/x", "two_way": False}],
    }
    api = config_from_dict(data)
    assert api.routes["chat"].integration.uri == "http://127.0.0.1:8000/ws/chat"
    assert api.routes["$default"].integration.uri == "http://other/x"
    assert not api.routes["$default"].two_way
    assert (
        api.routes["chat"].integration.request_parameters[
            "integration.request.header.X-Apigw-Ws-Secret"
        ]
        == "'abc'"
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"routes": {"$default": {"type": "MOCK", "uri": "http://x"}}}, "not supported"),
        ({"routes": {"$default": {"uri": "not-a-url"}}}, "http(s) uri"),
        ({"routes": {"$default": {"type": "AWS_PROXY", "uri": "nocolon"}}}, "module:function"),
        (
            {
                "routes": {
                    "$default": {
                        "uri": "http://x",
                        "request_parameters": {"integration.request.path.x": "'1'"},
                    }
                }
            },
            "target",
        ),
        (
            {
                "routes": {
                    "$default": {
                        "uri": "http://x",
                        "request_parameters": {"integration.request.header.x": "method.request"},
                    }
                }
            },
            "source",
        ),
        ({"routes": {"$default": {"uri": "http://x", "bogus": 1}}}, "unknown keys"),
        ({"nonsense": 1}, "unknown top-level"),
        ({"stage": "a/b"}, "invalid stage"),
        ({"secret": "x"}, "only make sense"),
        ({"routes": [{"uri": "http://x"}]}, "route_key"),
    ],
)
def test_invalid_configs_are_rejected(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config_from_dict(data)


def test_unreadable_and_unparsable_files(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config_file(tmp_path / "missing.toml")
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config_file(bad)


def test_lambda_config() -> None:
    def handler(event: dict[str, Any], context: Any) -> None:
        return None

    api = config_from_lambda(handler, routes=["chat"])
    assert set(api.routes) == {"$connect", "$disconnect", "$default", "chat"}
    assert api.routes["chat"].integration.handler is handler
    # As on AWS, a Lambda's return value reaches the client only on declared two-way routes.
    assert not api.routes["chat"].two_way
    assert (
        config_from_lambda(handler, routes=["chat"], two_way_routes=["chat"]).routes["chat"].two_way
    )
    api2 = config_from_lambda("json:dumps", connect=False, disconnect=False)
    assert set(api2.routes) == {"$default"}


def test_options_validation() -> None:
    with pytest.raises(ConfigError):
        GatewayOptions(idle_timeout=0)
    with pytest.raises(ConfigError):
        GatewayOptions(throttle_rps=-1)
    with pytest.raises(ConfigError):
        GatewayOptions(max_inflight_per_connection=0)
    with pytest.raises(ConfigError):
        Integration(uri="http://x", timeout_ms=0)


# ----------------------------------------------------------------------------- mappings


CONTEXT = {
    "connectionId": "abc=",
    "identity.sourceIp": "127.0.0.1",
    "routeKey": "$connect",
    "connectedAt": 1700000000000,
}
REQUEST = RouteRequest(
    headers=[("Cookie", "a=1"), ("X-Multi", "1"), ("x-multi", "2")],
    query=[("ws_token", "tok"), ("tag", "a"), ("tag", "b")],
)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("'static value'", "static value"),
        ("''", ""),
        ("context.connectionId", "abc="),
        ("context.identity.sourceIp", "127.0.0.1"),
        ("context.connectedAt", "1700000000000"),
        ("context.messageId", None),
        ("stageVariables.region", "eu-west-1"),
        ("stageVariables.missing", None),
        ("route.request.header.cookie", "a=1"),
        ("route.request.header.X-Multi", "1"),
        ("route.request.multivalueheader.X-Multi", "1,2"),
        ("route.request.querystring.ws_token", "tok"),
        ("route.request.querystring.absent", None),
        ("route.request.multivaluequerystring.tag", "a,b"),
        ("route.request.body.action", None),
        ("something.else", None),
    ],
)
def test_resolve_source(source: str, expected: str | None) -> None:
    value = resolve_source(
        source, context=CONTEXT, stage_variables={"region": "eu-west-1"}, request=REQUEST
    )
    assert value == expected


def test_body_source_and_apply() -> None:
    request = RouteRequest(body=json.dumps({"action": "chat", "meta": {"n": 3, "ok": True}}))
    headers, query = apply_request_parameters(
        {
            "integration.request.header.X-Action": "route.request.body.action",
            "integration.request.header.X-N": "route.request.body.meta.n",
            "integration.request.querystring.ok": "route.request.body.$.meta.ok",
            "integration.request.header.X-Absent": "route.request.body.nope",
            "integration.request.querystring.id": "context.connectionId",
        },
        context=CONTEXT,
        stage_variables={},
        request=request,
    )
    assert headers == [("X-Action", "chat"), ("X-N", "3")]
    assert query == [("ok", "true"), ("id", "abc=")]


@pytest.mark.parametrize(
    ("expression", "body", "expected"),
    [
        ("$request.body.action", '{"action": "chat"}', "chat"),
        ("${request.body.action}", '{"action": "chat"}', "chat"),
        ("$request.body.action", '{"action": 5}', "5"),
        ("$request.body.action", '{"other": 1}', ""),
        ("$request.body.action", "not json", ""),
        ("$request.body.action", "[1, 2]", ""),
        ("$request.body.meta.kind", '{"meta": {"kind": "x"}}', "x"),
        ("static", "{}", "static"),
    ],
)
def test_route_selection(expression: str, body: str, expected: str) -> None:
    assert select_route_key(expression, body) == expected


# ----------------------------------------------------------------------------- ids, throttle


def test_connection_ids_have_the_aws_shape() -> None:
    for _ in range(200):
        cid = new_connection_id()
        assert len(cid) == 16 and cid.endswith("=")
        assert is_valid_connection_id(cid)
        special = new_connection_id(special_chars=True)
        assert "+" in special and "/" in special and is_valid_connection_id(special)
    assert is_valid_connection_id(new_request_id())
    for bad in ("", "short=", "abcdefghijklmnop", "abcdefghijklmn==", "abc.efghijklmno=", "a" * 17):
        assert not is_valid_connection_id(bad)
    # Real AWS ids contain '_' and '-' too ("BFaT_fALIAMCKug=", Powertools' captured event).
    assert is_valid_connection_id("BFaT_fALIAMCKug=") and is_valid_connection_id("abc-efghijklmno=")


def test_token_bucket() -> None:
    bucket = TokenBucket(rate=10, burst=3)
    assert [bucket.try_acquire() for _ in range(4)] == [True, True, True, False]
    time.sleep(0.25)
    assert bucket.try_acquire()
    with pytest.raises(ValueError):
        TokenBucket(0)


# ----------------------------------------------------------------------------- frame guard


class FakeParser:
    """Records what the guard forwards."""

    def __init__(self) -> None:
        self.data = b""
        self.eof = False

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.data += bytes(data)
        return False, b""

    def feed_eof(self) -> None:
        self.eof = True


def frame(opcode: int, size: int, *, fin: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    if size < 126:
        head = bytes((first, 0x80 | size))
    elif size < 65536:
        head = bytes((first, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((first, 0x80 | 127)) + size.to_bytes(8, "big")
    return head + b"MASK" + b"x" * size


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000, 10**6])
def test_guard_forwards_valid_frames_in_any_chunking(chunk: int) -> None:
    stream = frame(1, 5) + frame(1, 32768, fin=False) + frame(0, 200) + frame(9, 4)
    stream += frame(2, 70000 // 3)
    inner = FakeParser()
    guard = FrameSizeGuard(inner, 32768)
    for i in range(0, len(stream), chunk):
        guard.feed_data(stream[i : i + chunk])
    assert inner.data == stream
    assert not guard.tripped
    guard.feed_eof()
    assert inner.eof


@pytest.mark.parametrize("chunk", [1, 5, 100000])
def test_guard_trips_on_an_oversized_frame(chunk: int) -> None:
    good = frame(1, 10)
    stream = good + frame(0x1, 32769) + frame(1, 3)
    inner = FakeParser()
    guard = FrameSizeGuard(inner, 32768)
    for i in range(0, len(stream), chunk):
        guard.feed_data(stream[i : i + chunk])
    assert guard.tripped
    assert inner.data.startswith(good)
    crafted = inner.data[len(good) : len(good) + 10]
    assert crafted[0] == 0x81 and crafted[1] == 0xFF
    assert int.from_bytes(crafted[2:10], "big") == 2**63 - 1


def test_route_and_api_are_frozen() -> None:
    route = Route(key="$default", integration=Integration(uri="http://x"))
    api = ApiConfig(routes=[route])
    with pytest.raises(AttributeError):
        api.stage = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        api.routes["x"] = route  # type: ignore[index]
    assert api.replace(stage="dev").stage == "dev"
