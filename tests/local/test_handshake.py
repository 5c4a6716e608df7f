"""The handshake and the shape of the integration requests the backend receives."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from apigw_ws_core.local import ApiConfig, Integration, Route, config_from_backend
from apigw_ws_core.local.testing import BackendReply, RecordedRequest, management_client

pytestmark = pytest.mark.timeout(30)

HOP_BY_HOP = {"connection", "upgrade", "keep-alive", "transfer-encoding"}


def test_connect_request_is_shaped_like_aws(
    gw: Any, backend: Any, open_connection: Any, secret: str
) -> None:
    ws, cid = open_connection(
        gw,
        gw.ws_url + "?channel=general&ws_token=a%2Bb%3D&flag",
        user_agent_header="Mozilla/5.0 test",
        additional_headers={
            "Origin": "http://127.0.0.1:3000",
            "Cookie": "sessionid=abc",
            "X-Forwarded-For": "10.0.0.1",
        },
    )
    with ws:
        request = backend.requests_for("connect")[-1]
        assert request.method == "POST"
        assert request.path == "/ws/connect"
        assert request.query_string == "channel=general&ws_token=a%2Bb%3D&flag"
        assert request.query["ws_token"] == ["a+b="]
        assert request.body == b""
        assert request.header("Content-Length") == "0"
        assert request.header("Host") == f"127.0.0.1:{backend.port}"
        assert request.header("User-Agent") == "Mozilla/5.0 test"
        assert request.header("Origin") == "http://127.0.0.1:3000"
        assert request.header("Cookie") == "sessionid=abc"
        assert request.header("Sec-WebSocket-Key")
        assert request.header("Sec-WebSocket-Version") == "13"
        names = {name.lower() for name, _ in request.headers}
        assert not names & HOP_BY_HOP
        assert request.header("X-Forwarded-For") == "10.0.0.1, 127.0.0.1"
        assert request.header("X-Forwarded-Proto") == "http"
        assert request.header("X-Forwarded-Port") == str(gw.port)
        assert re.fullmatch(r"Root=1-[0-9a-f]{8}-[0-9a-f]{24}", request.header("X-Amzn-Trace-Id"))
        assert request.header("X-Amzn-Apigateway-Api-Id") == gw.api.api_id
        # Wire-contract mappings, applied generically.
        assert request.header("X-Apigw-Ws-Connection-Id") == cid
        assert request.header("connectionId") == cid
        assert request.header("X-Apigw-Ws-Route-Key") == "$connect"
        assert request.header("X-Apigw-Ws-Event-Type") == "CONNECT"
        assert request.header("X-Apigw-Ws-Stage") == "local"
        assert request.header("X-Apigw-Ws-Source-Ip") == "127.0.0.1"
        assert request.header("X-Apigw-Ws-Secret") == secret
        assert re.fullmatch(r"[A-Za-z0-9+/]{15}=", request.header("X-Apigw-Ws-Request-Id"))
        # The forced id style: '+' and '/' present.
        assert "+" in cid and "/" in cid and len(cid) == 16


def test_message_and_disconnect_requests(
    gw: Any, backend: Any, open_connection: Any, disconnects_for: Any, secret: str
) -> None:
    ws, cid = open_connection(gw, gw.ws_url + "?channel=x", additional_headers={"Cookie": "a=b"})
    payload = json.dumps({"action": "chat", "text": "héllo"})
    with ws:
        ws.send(payload)
        message = backend.wait_for("chat")[0]
    assert message.method == "POST" and message.path == "/ws/chat"
    assert message.query_string == ""
    assert message.body == payload.encode("utf-8")
    assert message.header("Content-Length") == str(len(payload.encode("utf-8")))
    assert message.header("User-Agent") == "AmazonAPIGateway_apigwlocal"
    assert message.header("Cookie") is None
    assert message.header("Sec-WebSocket-Key") is None
    assert message.header("Content-Type") is None
    assert message.header("X-Apigw-Ws-Route-Key") == "chat"
    assert message.header("X-Apigw-Ws-Event-Type") == "MESSAGE"
    assert message.header("X-Apigw-Ws-Connection-Id") == cid
    assert message.header("X-Apigw-Ws-Secret") == secret
    assert message.header("X-Forwarded-For") == "127.0.0.1"
    [disconnect] = disconnects_for(cid)
    assert disconnect.body == b"" and disconnect.header("Content-Length") == "0"
    assert disconnect.query_string == ""
    assert disconnect.header("User-Agent") == "AmazonAPIGateway_apigwlocal"
    assert disconnect.header("X-Apigw-Ws-Event-Type") == "DISCONNECT"
    assert disconnect.header("X-Apigw-Ws-Route-Key") == "$disconnect"
    assert disconnect.header("Cookie") is None
    # Each call has its own request id.
    ids = {r.header("X-Apigw-Ws-Request-Id") for r in (message, disconnect)}
    assert len(ids) == 2


def test_handshake_waits_for_connect_and_management_calls_get_410(
    gateway_factory: Any, backend: Any, ws_connect: Any
) -> None:
    gw = gateway_factory(config_from_backend(backend.url))
    client = management_client(gw.management_endpoint)
    seen: dict[str, Any] = {}

    def on_connect(request: RecordedRequest) -> BackendReply:
        cid = request.connection_id
        seen["states"] = [c["state"] for c in gw.connections()]
        try:
            client.post_to_connection(ConnectionId=cid, Data=b"too early")
        except client.exceptions.GoneException:
            seen["post"] = "gone"
        try:
            client.get_connection(ConnectionId=cid)
        except client.exceptions.GoneException:
            seen["get"] = "gone"
        time.sleep(0.3)
        return BackendReply(200)

    backend.on("connect", on_connect)
    started = time.monotonic()
    with ws_connect(gw.ws_url) as ws:
        elapsed = time.monotonic() - started
        assert elapsed >= 0.3
        assert seen == {"states": ["CONNECTING"], "post": "gone", "get": "gone"}
        cid = backend.requests_for("connect")[0].connection_id
        client.post_to_connection(ConnectionId=cid, Data=b"now")
        assert ws.recv(timeout=5) == "now"


@pytest.mark.parametrize("status", [400, 401, 403, 500])
def test_non_2xx_connect_rejects_with_that_status(
    gateway_factory: Any, backend: Any, ws_connect: Any, status: int
) -> None:
    gw = gateway_factory(config_from_backend(backend.url))
    backend.reply("connect", status=status, body="nope")
    with pytest.raises(InvalidStatus) as info:
        ws_connect(gw.ws_url)
    assert info.value.response.status_code == status
    assert info.value.response.body == b"nope"
    time.sleep(0.2)
    assert backend.requests_for("disconnect") == []
    assert gw.connections() == []
    assert gw.stats()["counters"]["connects_rejected"] == 1


def test_connect_timeout_is_504(gateway_factory: Any, backend: Any, ws_connect: Any) -> None:
    api = config_from_backend(backend.url, timeout_ms=200)
    gw = gateway_factory(api)
    backend.reply("connect", delay=1.0)
    with pytest.raises(InvalidStatus) as info:
        ws_connect(gw.ws_url)
    assert info.value.response.status_code == 504


def test_unreachable_backend_is_502(gateway_factory: Any, ws_connect: Any) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens on this port any more
    gw = gateway_factory(config_from_backend(f"http://127.0.0.1:{port}/ws/"))
    with pytest.raises(InvalidStatus) as info:
        ws_connect(gw.ws_url)
    assert info.value.response.status_code == 502


def test_no_connect_route_accepts(gateway_factory: Any, backend: Any, ws_connect: Any) -> None:
    full = config_from_backend(backend.url)
    api = full.replace(routes=[r for k, r in full.routes.items() if k != "$connect"])
    gw = gateway_factory(api)
    with ws_connect(gw.ws_url) as ws:
        ws.send("hi")
        backend.wait_for("default")
    assert backend.requests_for("connect") == []


def test_subprotocol_from_the_backend_reaches_the_client(
    gateway_factory: Any, backend: Any, ws_connect: Any
) -> None:
    gw = gateway_factory(config_from_backend(backend.url))
    backend.reply("connect", headers={"Sec-WebSocket-Protocol": "chat.v2"})
    with ws_connect(gw.ws_url, subprotocols=["chat.v1", "chat.v2"]) as ws:
        assert ws.subprotocol == "chat.v2"
        request = backend.requests_for("connect")[0]
        assert request.header("Sec-WebSocket-Protocol") == "chat.v1, chat.v2"
        assert gw.connections()[0]["subprotocol"] == "chat.v2"


def test_wrong_stage_and_plain_http(gw: Any, ws_connect: Any) -> None:
    with pytest.raises(InvalidStatus) as info:
        ws_connect(f"ws://127.0.0.1:{gw.port}/prod")
    assert info.value.response.status_code == 403
    with pytest.raises(urllib.error.HTTPError) as http_info:
        urllib.request.urlopen(f"http://127.0.0.1:{gw.port}/local", timeout=5)
    assert http_info.value.code == 426


def test_root_path_and_trailing_slash(gw: Any, backend: Any, ws_connect: Any) -> None:
    for url in (f"ws://127.0.0.1:{gw.port}/", f"ws://127.0.0.1:{gw.port}/local/"):
        with ws_connect(url) as ws:
            ws.send("x")
    backend.wait_for("default", count=2)


def test_generic_request_parameters(gateway_factory: Any, backend: Any, ws_connect: Any) -> None:
    params = {
        "integration.request.header.X-Token": "route.request.querystring.ws_token",
        "integration.request.header.X-Origin": "route.request.header.Origin",
        "integration.request.querystring.conn": "context.connectionId",
        "integration.request.querystring.region": "stageVariables.region",
        "integration.request.header.X-Static": "'fixed'",
        "integration.request.header.X-Domain": "context.domainName",
        "integration.request.header.X-Api": "context.apiId",
        "integration.request.header.X-Connected-At": "context.connectedAt",
        "integration.request.header.X-Request-Time": "context.requestTime",
        "integration.request.header.X-Request-Epoch": "context.requestTimeEpoch",
        "integration.request.header.X-Ext": "context.extendedRequestId",
        "integration.request.header.X-Ua": "context.identity.userAgent",
        "integration.request.header.X-Message-Id": "context.messageId",
        "integration.request.header.X-Body-Action": "route.request.body.action",
    }
    routes = [
        Route(
            key=key,
            integration=Integration(uri=backend.url + key.strip("$"), request_parameters=params),
            two_way=False,
        )
        for key in ("$connect", "$default")
    ]
    api = ApiConfig(routes=routes, api_id="abcdef1234", stage_variables={"region": "eu-west-1"})
    gw = gateway_factory(api)
    url = gw.ws_url + "?ws_token=t0k&other=1"
    with ws_connect(url, additional_headers={"Origin": "http://o"}, user_agent_header="UA/9") as ws:
        connect = backend.wait_for("connect")[0]
        ws.send(json.dumps({"action": "go"}))
        message = backend.wait_for("default")[0]
    cid = gw.connections(closed=True)[0]["connectionId"]
    assert connect.header("X-Token") == "t0k"
    assert connect.header("X-Origin") == "http://o"
    assert connect.header("X-Static") == "fixed"
    assert connect.header("X-Domain") == f"127.0.0.1:{gw.port}"
    assert connect.header("X-Api") == "abcdef1234"
    assert connect.header("X-Amzn-Apigateway-Api-Id") == "abcdef1234"
    assert connect.header("X-Ua") == "UA/9"
    assert re.fullmatch(r"\d{13}", connect.header("X-Connected-At"))
    assert re.fullmatch(r"\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000", connect.header("X-Request-Time"))
    assert re.fullmatch(r"\d{13}", connect.header("X-Request-Epoch"))
    assert connect.header("X-Ext")
    assert connect.header("X-Message-Id") is None
    # Client query first, then mapped query parameters.
    assert connect.query_string.startswith("ws_token=t0k&other=1&")
    assert connect.query["conn"] == [cid]
    assert connect.query["region"] == ["eu-west-1"]
    # On messages, route.request.querystring/header have nothing to read.
    assert message.header("X-Token") is None and message.header("X-Origin") is None
    assert message.query == {"conn": [cid], "region": ["eu-west-1"]}
    assert message.header("X-Message-Id")
    assert message.header("X-Body-Action") == "go"
    assert message.header("X-Connected-At") == connect.header("X-Connected-At")


def test_stage_variables_in_integration_uri(
    gateway_factory: Any, backend: Any, ws_connect: Any
) -> None:
    base = backend.url.rstrip("/")
    route = Route(
        key="$default",
        integration=Integration(uri="${stageVariables.base}/default?v=1", method="put"),
        two_way=True,
    )
    gw = gateway_factory(ApiConfig(routes=[route], stage_variables={"base": base}))
    backend.reply("default", body="ok")
    with ws_connect(gw.ws_url) as ws:
        ws.send("x")
        assert ws.recv(timeout=5) == "ok"
    request = backend.requests_for("default")[0]
    assert (request.method, request.path, request.query_string) == ("PUT", "/ws/default", "v=1")


def test_concurrent_handshakes(gateway_factory: Any, backend: Any, ws_connect: Any) -> None:
    gw = gateway_factory(config_from_backend(backend.url))
    backend.reply("connect", delay=0.3)
    results: list[str] = []

    def run() -> None:
        with ws_connect(gw.ws_url):
            results.append("ok")

    threads = [threading.Thread(target=run) for _ in range(8)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["ok"] * 8
    assert time.monotonic() - started < 2.0
