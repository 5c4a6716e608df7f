"""Lambda events from the local gateway equal events captured from AWS, field by field.

The facts below (which fields exist, their types, which are left out) come from events
captured from real API Gateway WebSocket APIs and published as test fixtures:

* aws/aws-lambda-go ``events/testdata/apigw-websocket-request-send-message.json`` (MESSAGE)
  and ``apigw-websocket-request-disconnect.json`` (DISCONNECT 1001, reason ``""``);
* aws-powertools/powertools-lambda-python ``tests/events/apiGatewayWebSocketApiConnect.json``
  (CONNECT: no ``messageId``, no ``disconnectStatusCode``, ``identity`` without
  ``userAgent`` for a client that sent none), ``apiGatewayWebSocketApiDisconnect.json``
  (DISCONNECT ``1005`` "Client-side close frame status not set"; its connection id
  ``BFaT_fALIAMCKug=`` contains ``_``) and ``apiGatewayAuthorizerWebSocketEvent.json``
  (the REQUEST authorizer event: ``type``, ``methodArn``, ``queryStringParameters`` and
  ``stageVariables`` present even when empty);
* API Gateway logs quoted in boto/boto3#3789 and aws/chalice#2060 (DISCONNECT after
  DeleteConnection: 1000 "Connection Closed Normally", ``authorizer.principalId``).

1006 for an abrupt drop is what the WebSocket spec reserves for "closed without a close
frame"; no published AWS capture shows its reason text, so the gateway sends ``""``.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

import attrs
import pytest

from apigw_ws_core.local import config_from_backend, config_from_lambda
from apigw_ws_core.local.config import Authorizer
from apigw_ws_core.local.testing import wait_until

pytestmark = pytest.mark.timeout(30)

_ID = re.compile(r"[A-Za-z0-9+/_-]{15}=")
_CLF = re.compile(r"\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000")

#: requestContext keys of each captured event, exactly.
CONNECT_CONTEXT = {
    "routeKey", "eventType", "extendedRequestId", "requestTime", "messageDirection", "stage",
    "connectedAt", "requestTimeEpoch", "identity", "requestId", "domainName", "connectionId",
    "apiId",
}  # fmt: skip
MESSAGE_CONTEXT = CONNECT_CONTEXT | {"messageId"}
DISCONNECT_CONTEXT = CONNECT_CONTEXT | {"disconnectStatusCode", "disconnectReason"}
#: Top-level keys of each captured event.
CONNECT_KEYS = {"headers", "multiValueHeaders", "requestContext", "isBase64Encoded"}
MESSAGE_KEYS = {"requestContext", "body", "isBase64Encoded"}
DISCONNECT_KEYS = {"headers", "multiValueHeaders", "requestContext", "isBase64Encoded"}
AUTHORIZER_KEYS = {
    "type", "methodArn", "headers", "multiValueHeaders", "queryStringParameters",
    "multiValueQueryStringParameters", "stageVariables", "requestContext",
}  # fmt: skip


class Recorder:
    """Records every event; accepts everything."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        with self.lock:
            self.events.append(event)
        return {"statusCode": 200}

    def by_type(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.events if e.get("requestContext", {}).get("eventType") == kind]


def _check_common(ctx: dict[str, Any]) -> None:
    assert _ID.fullmatch(ctx["connectionId"]) and _ID.fullmatch(ctx["requestId"])
    assert ctx["extendedRequestId"] == ctx["requestId"]
    assert _CLF.fullmatch(ctx["requestTime"])
    assert ctx["messageDirection"] == "IN"
    for key in ("connectedAt", "requestTimeEpoch"):
        assert isinstance(ctx[key], int) and not isinstance(ctx[key], bool)
    assert isinstance(ctx["identity"]["sourceIp"], str)


def test_connect_message_disconnect_match_the_captures(
    gateway_factory: Any, ws_connect: Any
) -> None:
    handler = Recorder()
    gw = gateway_factory(config_from_lambda(handler, routes=["chat"]))
    with ws_connect(gw.ws_url, user_agent_header=None) as ws:
        ws.send(json.dumps({"action": "chat"}))
        wait_until(lambda: handler.by_type("MESSAGE"))
        ws.close(code=1001)
    wait_until(lambda: handler.by_type("DISCONNECT"))

    [connect] = handler.by_type("CONNECT")
    assert set(connect) == CONNECT_KEYS  # no query string: no queryStringParameters
    ctx = connect["requestContext"]
    assert set(ctx) == CONNECT_CONTEXT
    assert ctx["identity"] == {"sourceIp": "127.0.0.1"}  # no User-Agent sent: none reported
    assert "User-Agent" not in connect["headers"]
    _check_common(ctx)

    [message] = handler.by_type("MESSAGE")
    assert set(message) == MESSAGE_KEYS
    assert set(message["requestContext"]) == MESSAGE_CONTEXT
    assert isinstance(message["body"], str) and message["isBase64Encoded"] is False
    _check_common(message["requestContext"])

    [disconnect] = handler.by_type("DISCONNECT")
    assert set(disconnect) == DISCONNECT_KEYS
    dctx = disconnect["requestContext"]
    assert set(dctx) == DISCONNECT_CONTEXT
    assert (dctx["disconnectStatusCode"], dctx["disconnectReason"]) == (1001, "")
    assert set(disconnect["headers"]) == {"Host", "x-api-key", "X-Forwarded-For", "x-restapi"}
    _check_common(dctx)


def test_empty_close_frame_is_1005_and_a_drop_is_1006(
    gateway_factory: Any, raw_client: Any
) -> None:
    handler = Recorder()
    gw = gateway_factory(config_from_lambda(handler))
    polite = raw_client("127.0.0.1", gw.port, "/local")
    assert polite.status == 101
    polite.send_frame(0x8, b"")  # what a browser's plain ws.close() sends
    wait_until(lambda: handler.by_type("DISCONNECT"))
    polite.sock.close()
    rude = raw_client("127.0.0.1", gw.port, "/local")
    wait_until(lambda: len(handler.by_type("CONNECT")) == 2)
    rude.drop()
    wait_until(lambda: len(handler.by_type("DISCONNECT")) == 2)
    codes = [
        (e["requestContext"]["disconnectStatusCode"], e["requestContext"]["disconnectReason"])
        for e in handler.by_type("DISCONNECT")
    ]
    assert codes == [(1005, "Client-side close frame status not set"), (1006, "")]


def test_http_integration_context_variables_report_1005(
    gateway_factory: Any, backend: Any, raw_client: Any
) -> None:
    api = config_from_backend(backend.url)
    routes = dict(api.routes)
    disconnect = routes["$disconnect"]
    params = {
        **disconnect.integration.request_parameters,
        "integration.request.header.X-Close-Code": "context.disconnectStatusCode",
        "integration.request.header.X-Close-Reason": "context.disconnectReason",
    }
    routes["$disconnect"] = attrs.evolve(
        disconnect, integration=attrs.evolve(disconnect.integration, request_parameters=params)
    )
    gw = gateway_factory(api.replace(routes=routes))
    client = raw_client("127.0.0.1", gw.port, "/local")
    client.send_frame(0x8, b"")
    [request] = backend.wait_for("disconnect")
    assert request.header("X-Close-Code") == "1005"
    assert request.header("X-Close-Reason") == "Client-side close frame status not set"
    client.sock.close()


def test_authorizer_event_and_context_match_the_captures(
    gateway_factory: Any, ws_connect: Any
) -> None:
    seen: list[dict[str, Any]] = []

    def authorizer(event: dict[str, Any], context: Any) -> dict[str, Any]:
        seen.append(event)
        return {
            "principalId": "user-1",
            "policyDocument": {
                "Version": "2012-10-17",
                "Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": "*"}],
            },
            "context": {"tenant": "acme", "level": 3, "admin": False},
        }

    handler = Recorder()
    api = config_from_lambda(handler, authorizer=Authorizer(handler=authorizer, uri="auth:handler"))
    gw = gateway_factory(api)
    with ws_connect(gw.ws_url, additional_headers={"Authorization": "Leo"}) as ws:
        ws.send("hi")
        wait_until(lambda: handler.by_type("MESSAGE"))
    wait_until(lambda: handler.by_type("DISCONNECT"))
    [event] = seen
    assert set(event) == AUTHORIZER_KEYS
    assert event["type"] == "REQUEST"
    assert (
        event["methodArn"] == "arn:aws:execute-api:us-east-1:000000000000:apigwlocal/local/$connect"
    )
    assert event["queryStringParameters"] == {} and event["stageVariables"] == {}
    assert event["headers"]["Authorization"] == "Leo"
    assert set(event["requestContext"]) == CONNECT_CONTEXT
    # Context values reach integrations as strings (AWS's documented authorizer output).
    expected = {"principalId": "user-1", "tenant": "acme", "level": "3", "admin": "false"}
    for kind, keys in (
        ("CONNECT", CONNECT_CONTEXT),
        ("MESSAGE", MESSAGE_CONTEXT),
        ("DISCONNECT", DISCONNECT_CONTEXT),
    ):
        [got] = handler.by_type(kind)
        assert set(got["requestContext"]) == keys | {"authorizer"}
        assert got["requestContext"]["authorizer"] == expected
