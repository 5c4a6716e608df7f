"""Messages: route selection, replies, errors, concurrency, binary and size limits."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from apigw_ws_core.local import ApiConfig, Integration, Route, config_from_backend
from apigw_ws_core.local.testing import BackendReply

pytestmark = pytest.mark.timeout(30)

KIB = 1024


def closed_with(ws: Any) -> tuple[int, str]:
    """Wait for the server's close frame; return its code and reason."""
    with pytest.raises(ConnectionClosed) as info:
        while True:
            ws.recv(timeout=5)
    assert info.value.rcvd is not None
    return info.value.rcvd.code, info.value.rcvd.reason


def test_route_selection(gw: Any, backend: Any, ws_connect: Any) -> None:
    with ws_connect(gw.ws_url) as ws:
        ws.send(json.dumps({"action": "chat"}))
        ws.send(json.dumps({"action": "unknown"}))
        ws.send("plain text")
        ws.send(json.dumps({"action": "$disconnect"}))
        ws.send(json.dumps({"action": "$default"}))
        ws.send(json.dumps({"no_action": 1}))
        backend.wait_for("chat")
        defaults = backend.wait_for("default", count=5)
    keys = sorted(r.header("X-Apigw-Ws-Route-Key") for r in defaults)
    assert keys == ["$default"] * 5
    assert "plain text" in {r.text for r in defaults}


def test_custom_selection_expression(gateway_factory: Any, backend: Any, ws_connect: Any) -> None:
    api = config_from_backend(
        backend.url, routes=["ping"], route_selection_expression="$request.body.meta.kind"
    )
    gw = gateway_factory(api)
    with ws_connect(gw.ws_url) as ws:
        ws.send(json.dumps({"meta": {"kind": "ping"}}))
        backend.wait_for("ping")


def test_two_way_replies_and_one_way_silence(
    gateway_factory: Any, backend: Any, ws_connect: Any
) -> None:
    full = config_from_backend(backend.url, routes=["quiet"])
    routes = dict(full.routes)
    routes["quiet"] = Route(key="quiet", integration=routes["quiet"].integration, two_way=False)
    gw = gateway_factory(full.replace(routes=routes.values()))
    backend.reply("quiet", body='{"should": "not arrive"}')
    backend.reply("default", body='{"reply": 1}')
    with ws_connect(gw.ws_url) as ws:
        ws.send(json.dumps({"action": "quiet"}))
        backend.wait_for("quiet")
        ws.send("to default")
        assert json.loads(ws.recv(timeout=5)) == {"reply": 1}
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)
    [connection] = gw.connections(closed=True)
    [message] = gw.messages(connection["connectionId"])
    assert message["source"] == "reply" and message["data"] == '{"reply": 1}'


def test_empty_reply_sends_nothing(gw: Any, backend: Any, ws_connect: Any) -> None:
    backend.reply("default", status=200, body="")
    with ws_connect(gw.ws_url) as ws:
        ws.send("x")
        backend.wait_for("default")
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)


def test_non_2xx_reply_on_two_way_route_is_passed_through(
    gw: Any, backend: Any, ws_connect: Any
) -> None:
    backend.reply("default", status=400, body='{"error": "bad"}')
    with ws_connect(gw.ws_url) as ws:
        ws.send("x")
        assert json.loads(ws.recv(timeout=5)) == {"error": "bad"}


def test_forbidden_without_default_route(
    gateway_factory: Any, backend: Any, open_connection: Any
) -> None:
    full = config_from_backend(backend.url, routes=["chat"])
    routes = [r for k, r in full.routes.items() if k != "$default"]
    gw = gateway_factory(full.replace(routes=routes))
    ws, cid = open_connection(gw)
    with ws:
        ws.send(json.dumps({"action": "nothing"}))
        error = json.loads(ws.recv(timeout=5))
        ws.send(json.dumps({"action": "chat"}))
        backend.wait_for("chat")
    assert error["message"] == "Forbidden"
    assert error["connectionId"] == cid
    assert len(error["requestId"]) == 16


def test_no_routes_at_all(gateway_factory: Any, ws_connect: Any) -> None:
    gw = gateway_factory(ApiConfig())
    with ws_connect(gw.ws_url) as ws:
        ws.send("x")
        assert json.loads(ws.recv(timeout=5))["message"] == "Forbidden"


def test_integration_failures_send_internal_server_error(
    gateway_factory: Any, backend: Any, open_connection: Any
) -> None:
    full = config_from_backend(backend.url, routes=["slow"])
    routes = dict(full.routes)
    routes["$default"] = Route(
        key="$default", integration=Integration(uri="http://127.0.0.1:9/ws/default"), two_way=True
    )
    routes["slow"] = Route(
        key="slow",
        integration=Integration(uri=backend.url + "slow", timeout_ms=200),
        two_way=False,
    )
    gw = gateway_factory(full.replace(routes=routes.values()))
    backend.reply("slow", delay=1.0, body="late")
    ws, cid = open_connection(gw)
    with ws:
        ws.send("goes to an unreachable backend")
        error = json.loads(ws.recv(timeout=5))
        assert error["message"] == "Internal server error"
        assert error["connectionId"] == cid
        assert error["requestId"]
        ws.send(json.dumps({"action": "slow"}))
        error = json.loads(ws.recv(timeout=5))
        assert error["message"] == "Internal server error"
        # The late reply never arrives (and would not on a one-way route anyway).
        with pytest.raises(TimeoutError):
            ws.recv(timeout=1.2)


def test_calls_run_concurrently_per_connection(gw: Any, backend: Any, ws_connect: Any) -> None:
    backend.on(
        "default",
        lambda request: BackendReply(body=request.text, delay=0.5 if request.text == "slow" else 0),
    )
    with ws_connect(gw.ws_url) as ws:
        started = time.monotonic()
        for text in ("slow", "slow", "slow", "fast"):
            ws.send(text)
        replies = [ws.recv(timeout=5) for _ in range(4)]
        elapsed = time.monotonic() - started
    # The fast one overtakes the slow ones, and the slow ones overlap.
    assert replies[0] == "fast"
    assert sorted(replies) == ["fast", "slow", "slow", "slow"]
    assert elapsed < 1.2


def test_inflight_bound(gateway_factory: Any, backend: Any, ws_connect: Any) -> None:
    gw = gateway_factory(config_from_backend(backend.url), max_inflight_per_connection=2)
    backend.reply("default", delay=0.3, body="r")
    with ws_connect(gw.ws_url) as ws:
        started = time.monotonic()
        for _ in range(4):
            ws.send("x")
        for _ in range(4):
            ws.recv(timeout=5)
        elapsed = time.monotonic() - started
    assert 0.55 < elapsed < 1.5


def test_binary_frame_closes_1003(
    gw: Any, backend: Any, open_connection: Any, disconnects_for: Any
) -> None:
    ws, cid = open_connection(gw)
    ws.send(b"\x00\x01")
    assert closed_with(ws)[0] == 1003
    [disconnect] = disconnects_for(cid)
    assert disconnect.header("X-Apigw-Ws-Event-Type") == "DISCONNECT"
    assert gw.connections(closed=True)[-1]["closeCode"] == 1003
    assert backend.requests_for("default") == []


def test_frame_at_the_limit_is_accepted(gw: Any, backend: Any, ws_connect: Any) -> None:
    text = "a" * (32 * KIB)
    with ws_connect(gw.ws_url) as ws:
        ws.send(text)
        assert backend.wait_for("default")[0].text == text


def test_frame_over_32_kib_closes_1009(
    gw: Any, backend: Any, open_connection: Any, disconnects_for: Any
) -> None:
    ws, cid = open_connection(gw)
    ws.send("a" * (32 * KIB + 1))
    assert closed_with(ws)[0] == 1009
    assert len(disconnects_for(cid)) == 1
    assert gw.connections(closed=True)[-1]["closeCode"] == 1009
    assert backend.requests_for("default") == []


def test_fragmented_message_up_to_128_kib_is_accepted(
    gw: Any, backend: Any, ws_connect: Any
) -> None:
    fragment = "b" * (32 * KIB)
    with ws_connect(gw.ws_url) as ws:
        ws.send(iter([fragment] * 4))  # exactly 128 KiB in four 32 KiB frames
        assert backend.wait_for("default")[0].text == fragment * 4


def test_fragmented_message_over_128_kib_closes_1009(
    gw: Any, open_connection: Any, disconnects_for: Any
) -> None:
    ws, cid = open_connection(gw)
    ws.send(iter(["c" * (32 * KIB)] * 4 + ["c"]))
    assert closed_with(ws)[0] == 1009
    assert len(disconnects_for(cid)) == 1


def test_oversized_frame_split_across_tcp_writes(
    gw: Any, raw_client: Any, disconnects_for: Any, backend: Any
) -> None:
    client = raw_client("127.0.0.1", gw.port, "/local")
    assert client.status == 101
    client.send_frame(0x1, b"ok")
    backend.wait_for("default")
    cid = backend.requests_for("connect")[-1].connection_id
    client.send_frame(0x1, b"x" * 40000)
    data = client.sock.recv(64)
    assert data[0] == 0x88  # close frame
    assert int.from_bytes(data[2:4], "big") == 1009
    client.drop()
    assert disconnects_for(cid)[0].header("X-Apigw-Ws-Event-Type") == "DISCONNECT"
