"""AWS_PROXY integrations: in-process Lambda handlers get the real WebSocket event shapes."""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from apigw_ws_core.local import config_from_dict, config_from_lambda
from apigw_ws_core.local.testing import wait_until

pytestmark = pytest.mark.timeout(30)


class Recorder:
    """A Lambda handler that records events and answers per route key."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.threads: list[str] = []
        self.remaining: list[int] = []
        self.connect_response: Any = {"statusCode": 200}

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        self.events.append(event)
        self.threads.append(threading.current_thread().name)
        self.remaining.append(context.get_remaining_time_in_millis())
        route = event["requestContext"]["routeKey"]
        if route == "$connect":
            return self.connect_response
        if route == "$disconnect":
            return {"statusCode": 200}
        if event["body"] == "boom":
            raise RuntimeError("handler failed")
        if event["body"] == "sleep":
            time.sleep(1.0)
        return {"statusCode": 200, "body": "echo:" + event["body"]}

    def by_route(self, route: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["requestContext"]["routeKey"] == route]


def test_event_shapes(gateway_factory: Any, ws_connect: Any) -> None:
    handler = Recorder()
    handler.connect_response = {"statusCode": 200, "headers": {"Sec-WebSocket-Protocol": "v1"}}
    gw = gateway_factory(config_from_lambda(handler, routes=["chat"], two_way_routes=["chat"]))
    url = gw.ws_url + "?channel=general&tag=a&tag=b"
    with ws_connect(
        url,
        subprotocols=["v1"],
        user_agent_header="UA/1",
        additional_headers={"Cookie": "c=1", "Origin": "http://o"},
    ) as ws:
        assert ws.subprotocol == "v1"
        ws.send(json.dumps({"action": "chat", "n": 1}))
        assert ws.recv(timeout=5) == 'echo:{"action": "chat", "n": 1}'
        ws.close(code=4000, reason="done")
    wait_until(lambda: handler.by_route("$disconnect"))

    [connect] = handler.by_route("$connect")
    assert connect["isBase64Encoded"] is False
    assert "body" not in connect
    headers = connect["headers"]
    assert headers["Cookie"] == "c=1" and headers["Origin"] == "http://o"
    assert headers["User-Agent"] == "UA/1"
    assert headers["Host"] == f"127.0.0.1:{gw.port}"
    assert headers["X-Forwarded-For"] == "127.0.0.1"
    assert headers["X-Forwarded-Proto"] == "http"
    assert headers["Sec-WebSocket-Protocol"] == "v1"
    assert re.fullmatch(r"Root=1-[0-9a-f]{8}-[0-9a-f]{24}", headers["X-Amzn-Trace-Id"])
    assert "Upgrade" not in headers and "Connection" not in headers
    assert connect["multiValueHeaders"]["Cookie"] == ["c=1"]
    assert connect["queryStringParameters"] == {"channel": "general", "tag": "b"}
    assert connect["multiValueQueryStringParameters"] == {"channel": ["general"], "tag": ["a", "b"]}
    ctx = connect["requestContext"]
    cid = ctx["connectionId"]
    assert re.fullmatch(r"[A-Za-z0-9+/]{15}=", cid)
    assert ctx["eventType"] == "CONNECT"
    # AWS leaves both out of CONNECT events (they are not null).
    assert "messageId" not in ctx and "disconnectStatusCode" not in ctx
    assert ctx["messageDirection"] == "IN"
    assert ctx["stage"] == "local" and ctx["apiId"] == "apigwlocal"
    assert ctx["domainName"] == f"127.0.0.1:{gw.port}"
    assert ctx["identity"] == {"sourceIp": "127.0.0.1", "userAgent": "UA/1"}
    assert ctx["requestId"] == ctx["extendedRequestId"]
    assert isinstance(ctx["connectedAt"], int) and isinstance(ctx["requestTimeEpoch"], int)
    assert re.fullmatch(r"\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000", ctx["requestTime"])

    [message] = handler.by_route("chat")
    assert set(message) == {"requestContext", "body", "isBase64Encoded"}
    assert message["body"] == '{"action": "chat", "n": 1}'
    mctx = message["requestContext"]
    assert mctx["eventType"] == "MESSAGE" and mctx["connectionId"] == cid
    assert re.fullmatch(r"[A-Za-z0-9+/]{15}=", mctx["messageId"])
    assert mctx["connectedAt"] == ctx["connectedAt"]
    assert "disconnectStatusCode" not in mctx

    [disconnect] = handler.by_route("$disconnect")
    assert set(disconnect["headers"]) == {"Host", "x-api-key", "X-Forwarded-For", "x-restapi"}
    assert "body" not in disconnect
    dctx = disconnect["requestContext"]
    assert dctx["eventType"] == "DISCONNECT"
    assert (dctx["disconnectStatusCode"], dctx["disconnectReason"]) == (4000, "done")

    assert all(name.startswith("apigw-ws-lambda") for name in handler.threads)
    assert all(0 < ms <= 29_000 for ms in handler.remaining)


def test_delete_reports_closed_normally(gateway_factory: Any, ws_connect: Any) -> None:
    handler = Recorder()
    gw = gateway_factory(config_from_lambda(handler))
    client = gw.management_client()
    with ws_connect(gw.ws_url):
        cid = handler.by_route("$connect")[0]["requestContext"]["connectionId"]
        client.delete_connection(ConnectionId=cid)
        wait_until(lambda: handler.by_route("$disconnect"))
    ctx = handler.by_route("$disconnect")[0]["requestContext"]
    assert (ctx["disconnectStatusCode"], ctx["disconnectReason"]) == (
        1000,
        "Connection Closed Normally",
    )


def test_rejection_errors_and_one_way(gateway_factory: Any, ws_connect: Any) -> None:
    handler = Recorder()
    handler.connect_response = {"statusCode": 401, "body": "no token"}
    gw = gateway_factory(config_from_lambda(handler))  # message routes one-way by default
    with pytest.raises(InvalidStatus) as info:
        ws_connect(gw.ws_url)
    assert info.value.response.status_code == 401
    assert handler.by_route("$disconnect") == []

    handler.connect_response = None  # returning nothing accepts
    with ws_connect(gw.ws_url) as ws:
        ws.send("hello")  # one-way: the echo is not sent back
        # as on AWS, a connection's integration calls may run at once: keep the order
        wait_until(lambda: handler.by_route("$default"))
        ws.send("boom")
        error = json.loads(ws.recv(timeout=5))
        assert error["message"] == "Internal server error"
        assert [e["body"] for e in handler.by_route("$default")] == ["hello", "boom"]

    def explode(event: dict[str, Any], context: Any) -> Any:
        raise ValueError("broken connect")

    gw2 = gateway_factory(config_from_lambda(explode))
    with pytest.raises(InvalidStatus) as info:
        ws_connect(gw2.ws_url)
    assert info.value.response.status_code == 500


def test_lambda_timeout(gateway_factory: Any, ws_connect: Any) -> None:
    handler = Recorder()
    gw = gateway_factory(config_from_lambda(handler, timeout_ms=200, connect=False))
    with ws_connect(gw.ws_url) as ws:
        ws.send("sleep")
        assert json.loads(ws.recv(timeout=5))["message"] == "Internal server error"


def test_lambda_connect_timeout_is_504(gateway_factory: Any, ws_connect: Any) -> None:
    def slow(event: dict[str, Any], context: Any) -> Any:
        time.sleep(1.0)
        return {"statusCode": 200}

    gw = gateway_factory(config_from_lambda(slow, timeout_ms=200))
    with pytest.raises(InvalidStatus) as info:
        ws_connect(gw.ws_url)
    assert info.value.response.status_code == 504


def test_handler_imported_from_module_path(
    gateway_factory: Any, ws_connect: Any, tmp_path: Any, monkeypatch: Any
) -> None:
    (tmp_path / "local_gw_lambda_app.py").write_text(
        "import json\n"
        "def handler(event, context):\n"
        "    ctx = event['requestContext']\n"
        "    if ctx['eventType'] != 'MESSAGE':\n"
        "        return {'statusCode': 200}\n"
        "    return {'statusCode': 200, 'body': json.dumps({'route': ctx['routeKey']})}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    api = config_from_dict(
        {
            "routes": {
                "$connect": {"type": "AWS_PROXY", "uri": "local_gw_lambda_app:handler"},
                "$default": {"type": "AWS_PROXY", "uri": "local_gw_lambda_app:handler"},
                "ping": {"type": "AWS_PROXY", "uri": "local_gw_lambda_app:handler"},
                "broken": {"type": "AWS_PROXY", "uri": "local_gw_lambda_app:missing"},
            }
        }
    )
    gw = gateway_factory(api)
    with ws_connect(gw.ws_url) as ws:
        ws.send(json.dumps({"action": "ping"}))
        assert json.loads(ws.recv(timeout=5)) == {"route": "ping"}
        ws.send("x")
        assert json.loads(ws.recv(timeout=5)) == {"route": "$default"}
        ws.send(json.dumps({"action": "broken"}))
        assert json.loads(ws.recv(timeout=5))["message"] == "Internal server error"


def test_return_value_variants(gateway_factory: Any, ws_connect: Any) -> None:
    import base64

    answers: dict[str, Any] = {
        "str": "plain string",
        "dict-body": {"statusCode": 200, "body": {"a": 1}},
        "b64": {
            "statusCode": 200,
            "body": base64.b64encode(b"bytes!").decode(),
            "isBase64Encoded": True,
        },
        "list": [1, 2],
    }

    def handler(event: dict[str, Any], context: Any) -> Any:
        if event["requestContext"]["eventType"] != "MESSAGE":
            return None
        return answers[event["body"]]

    gw = gateway_factory(config_from_lambda(handler, two_way=True))
    with ws_connect(gw.ws_url) as ws:
        got = []
        for key in answers:
            ws.send(key)
            got.append(ws.recv(timeout=5))
    assert sorted(got) == sorted(["plain string", '{"a": 1}', "bytes!", "[1, 2]"])
