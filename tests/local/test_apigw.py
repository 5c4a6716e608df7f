"""Reading an API from apigatewayv2 (provisioned under moto's ``mock_aws``) and running it."""

from __future__ import annotations

import argparse
import json
from typing import Any

import boto3
import pytest
from moto import mock_aws

from apigw_ws_core.local import ConfigError, config_from_apigw, default_request_parameters
from apigw_ws_core.local.cli import add_arguments, build_api

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def aws_env(monkeypatch: Any) -> None:
    """Dummy credentials so nothing can reach a real account."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def provision(client: Any, base: str, secret: str) -> str:
    """Create a WebSocket API the way apigw-ws provisions it (HTTP_PROXY per route)."""
    api_id: str = client.create_api(
        Name="chat", ProtocolType="WEBSOCKET", RouteSelectionExpression="$request.body.action"
    )["ApiId"]
    params = default_request_parameters(secret)
    for route_key, path, two_way in (
        ("$connect", "connect", False),
        ("$disconnect", "disconnect", False),
        ("$default", "default", True),
        ("chat_message", "chat_message", True),
        ("quiet", "quiet", False),
    ):
        integration = client.create_integration(
            ApiId=api_id,
            IntegrationType="HTTP_PROXY",
            IntegrationMethod="POST",
            IntegrationUri=base + path,
            PassthroughBehavior="WHEN_NO_MATCH",
            PayloadFormatVersion="1.0",
            TimeoutInMillis=29000,
            RequestParameters=params,
        )
        extra = {"RouteResponseSelectionExpression": "$default"} if two_way else {}
        client.create_route(
            ApiId=api_id,
            RouteKey=route_key,
            Target=f"integrations/{integration['IntegrationId']}",
            **extra,
        )
    client.create_stage(ApiId=api_id, StageName="dev", StageVariables={"color": "blue"})
    return api_id


def test_config_from_apigw_under_moto(aws_env: None) -> None:
    with mock_aws():
        client = boto3.client("apigatewayv2", region_name="us-east-1")
        api_id = provision(client, "http://127.0.0.1:8000/ws/", "pssst")
        api = config_from_apigw(client, api_id)
    assert api.api_id == api_id
    assert api.stage == "dev"
    assert api.stage_variables == {"color": "blue"}
    assert api.route_selection_expression == "$request.body.action"
    assert set(api.routes) == {"$connect", "$disconnect", "$default", "chat_message", "quiet"}
    chat = api.routes["chat_message"]
    assert chat.two_way and api.routes["$default"].two_way
    assert not api.routes["quiet"].two_way and not api.routes["$connect"].two_way
    assert chat.integration.type == "HTTP_PROXY"
    assert chat.integration.uri == "http://127.0.0.1:8000/ws/chat_message"
    assert chat.integration.method == "POST"
    assert chat.integration.timeout_ms == 29000
    assert chat.integration.request_parameters == default_request_parameters("pssst")


def test_missing_stage_and_lambda_integrations(aws_env: None) -> None:
    with mock_aws():
        client = boto3.client("apigatewayv2", region_name="us-east-1")
        api_id = client.create_api(
            Name="l", ProtocolType="WEBSOCKET", RouteSelectionExpression="$request.body.action"
        )["ApiId"]
        integration = client.create_integration(
            ApiId=api_id,
            IntegrationType="AWS_PROXY",
            IntegrationUri="arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/"
            "arn:aws:lambda:us-east-1:123456789012:function:chat/invocations",
        )
        client.create_route(
            ApiId=api_id,
            RouteKey="$default",
            Target=f"integrations/{integration['IntegrationId']}",
            RouteResponseSelectionExpression="$default",
        )
        with pytest.raises(ConfigError, match="lambda_handler"):
            config_from_apigw(client, api_id)

        def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
            return {"statusCode": 200, "body": event.get("body", "")}

        api = config_from_apigw(client, api_id, "prod", lambda_handler=handler)
        http_api = client.create_api(Name="h", ProtocolType="HTTP")["ApiId"]
        with pytest.raises(ConfigError, match="not a WebSocket API"):
            config_from_apigw(client, http_api)
    assert api.stage == "prod" and api.stage_variables == {}
    assert api.routes["$default"].integration.handler is handler


def test_provisioned_api_runs_locally(
    aws_env: None, backend: Any, gateway_factory: Any, ws_connect: Any
) -> None:
    """Provision with moto, then serve exactly those routes and mappings locally."""
    with mock_aws():
        client = boto3.client("apigatewayv2", region_name="us-east-1")
        api_id = provision(client, backend.url, "from-moto")
        api = config_from_apigw(client, api_id)
        # moto passes loopback traffic through, so the gateway works inside mock_aws too.
        gw = gateway_factory(api)
        backend.reply("chat_message", body='{"ok": true}')
        backend.reply("quiet", body='{"ignored": true}')
        with ws_connect(gw.ws_url + "?channel=general") as ws:
            connect = backend.wait_for("connect")[0]
            assert connect.query == {"channel": ["general"]}
            assert connect.header("X-Apigw-Ws-Secret") == "from-moto"
            assert connect.header("X-Amzn-Apigateway-Api-Id") == api_id
            assert connect.header("X-Apigw-Ws-Stage") == "dev"
            ws.send(json.dumps({"action": "quiet"}))
            backend.wait_for("quiet")
            ws.send(json.dumps({"action": "chat_message"}))
            assert json.loads(ws.recv(timeout=5)) == {"ok": True}
            cid = connect.connection_id
            mgmt = gw.management_client()
            mgmt.post_to_connection(ConnectionId=cid, Data=b"pushed")
            assert ws.recv(timeout=5) == "pushed"
        message = backend.wait_for("chat_message")[0]
        assert message.header("User-Agent") == f"AmazonAPIGateway_{api_id}"


def test_cli_from_apigw(aws_env: None) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with mock_aws():
        client = boto3.client("apigatewayv2", region_name="us-east-1")
        api_id = provision(client, "http://127.0.0.1:8000/ws/", "s")
        api = build_api(parser.parse_args(["--from-apigw", api_id, "--region", "us-east-1"]))
        assert api.api_id == api_id and api.stage == "dev"
        with pytest.raises(ConfigError, match="cannot read API"):
            build_api(parser.parse_args(["--from-apigw", "nope123456", "--region", "us-east-1"]))
