"""Other people's code through the local gateway, unchanged: TLS endpoints built as
``https://{domainName}/{stage}``, a Chalice WebSocket app (real ``chalice``), and a chat
Lambda in the AWS SDK examples' style with DynamoDB under moto."""

from __future__ import annotations

import json
import os
import ssl
from typing import Any

import boto3
import pytest
from moto import mock_aws

from apigw_ws_core.local import config_from_lambda, config_from_lambda_routes
from apigw_ws_core.local.testing import GatewayProcess, management_client, wait_until
from tests.local.samples import chalice_chat

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def lambda_like_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process like a fresh Lambda-less shell: no region, no CA bundle, dummy keys."""
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_CA_BUNDLE", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


def _client_ssl(tls: Any) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(tls.ca_file))


def test_tls_endpoint_built_from_domain_name_reaches_the_gateway(
    gateway_factory: Any, ws_connect: Any, tls: Any, lambda_like_environment: None
) -> None:
    seen: dict[str, Any] = {}

    def handler(event: dict[str, Any], context: Any) -> Any:
        ctx = event["requestContext"]
        if ctx["eventType"] == "MESSAGE":
            seen["region"] = (os.environ.get("AWS_REGION"), os.environ.get("AWS_DEFAULT_REGION"))
            seen["function"] = (os.environ.get("AWS_LAMBDA_FUNCTION_NAME"), context.function_name)
            # What every sample does: no endpoint configuration, no region, no CA settings.
            endpoint = f"https://{ctx['domainName']}/{ctx['stage']}"
            boto3.client("apigatewaymanagementapi", endpoint_url=endpoint).post_to_connection(
                ConnectionId=ctx["connectionId"], Data=b"pong"
            )
        return {"statusCode": 200}

    gw = gateway_factory(config_from_lambda(handler), tls=tls)
    assert gw.ws_url.startswith("wss://") and gw.management_endpoint.startswith("https://")
    with ws_connect(gw.ws_url, ssl=_client_ssl(tls)) as ws:
        ws.send("ping")
        assert ws.recv(timeout=5) == "pong"
        cid = gw.connections()[0]["connectionId"]
        # boto3 from outside, trusting the CA file, over the same port.
        assert gw.management_client().get_connection(ConnectionId=cid)["Identity"]["SourceIp"]
    assert seen["region"] == ("us-east-1", "us-east-1")
    assert seen["function"][0] == seen["function"][1]
    assert os.environ["AWS_CA_BUNDLE"] == str(tls.bundle_file)
    bundle = tls.bundle_file.read_bytes()
    assert tls.ca_file.read_bytes() in bundle and bundle.count(b"BEGIN CERTIFICATE") > 10


def test_existing_region_and_bundle_are_left_alone(
    gateway_factory: Any, ws_connect: Any, tls: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_CA_BUNDLE", str(tls.bundle_file))
    got: list[tuple[str | None, str | None]] = []

    def handler(event: dict[str, Any], context: Any) -> Any:
        got.append((os.environ.get("AWS_REGION"), os.environ.get("AWS_DEFAULT_REGION")))
        return {"statusCode": 200}

    gw = gateway_factory(config_from_lambda(handler, disconnect=False), tls=tls)
    with ws_connect(gw.ws_url, ssl=_client_ssl(tls)):
        pass
    assert got == [("eu-west-3", "eu-west-3")]


def test_chalice_app_with_one_function_per_route(
    gateway_factory: Any, ws_connect: Any, tls: Any, lambda_like_environment: None
) -> None:
    api = config_from_lambda_routes(
        {
            "$connect": "tests.local.samples.chalice_chat:connect",
            "$default": "tests.local.samples.chalice_chat:message",
            "$disconnect": "tests.local.samples.chalice_chat:disconnect",
        }
    )
    gw = gateway_factory(api, tls=tls)
    context = _client_ssl(tls)
    with ws_connect(gw.ws_url, ssl=context) as alice, ws_connect(gw.ws_url, ssl=context) as bob:
        alice.send("/name alice")
        assert alice.recv(timeout=5) == "ok"
        alice.send("hello bob")
        assert bob.recv(timeout=5) == "alice: hello bob"
    wait_until(lambda: not chalice_chat.MEMBERS)
    # Chalice was pointed at the gateway, not at {apiId}.execute-api.{region}.amazonaws.com.
    assert chalice_chat.app.websocket_api._endpoint == f"https://127.0.0.1:{gw.port}/local"


def test_sdk_style_chat_lambda_with_dynamodb_under_moto(
    gateway_factory: Any, ws_connect: Any, tls: Any, lambda_like_environment: None, monkeypatch: Any
) -> None:
    monkeypatch.setenv("table_name", "chat-connections")
    with mock_aws():
        dynamodb = boto3.resource("dynamodb", region_name="us-east-1")
        table = dynamodb.create_table(
            TableName="chat-connections",
            KeySchema=[{"AttributeName": "connection_id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "connection_id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        gw = gateway_factory(
            config_from_lambda(
                "tests.local.samples.sdk_style_chat:handler", routes=["sendmessage"]
            ),
            tls=tls,
        )
        context = _client_ssl(tls)
        with (
            ws_connect(f"{gw.ws_url}?name=alice", ssl=context) as alice,
            ws_connect(f"{gw.ws_url}?name=bob", ssl=context) as bob,
        ):
            wait_until(lambda: table.scan()["Count"] == 2)
            alice.send(json.dumps({"action": "sendmessage", "msg": "hi all"}))
            assert bob.recv(timeout=5) == "alice: hi all"
            # A connection that vanished without $disconnect: the sample drops its row.
            table.put_item(Item={"connection_id": "R0oXAdfD0kwCH6w=", "user_name": "ghost"})
            bob.send(json.dumps({"action": "sendmessage", "msg": "anyone?"}))
            assert alice.recv(timeout=5) == "bob: anyone?"
            wait_until(lambda: table.scan()["Count"] == 2)
        wait_until(lambda: table.scan()["Count"] == 0)


@pytest.mark.slow
def test_cli_tls_prints_wss_and_the_ca_and_keeps_the_ca(tmp_path: Any, ws_connect: Any) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]),
    }
    first = GatewayProcess(["--tls", "--tls-dir", str(tmp_path)], env=env).start()
    try:
        line = next(x for x in first.output if "ready" in x)
        assert f"ca={tmp_path / 'ca.pem'}" in line
        assert first.ws_url.startswith("wss://127.0.0.1:")
        assert first.management_endpoint.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        with ws_connect(first.ws_url, ssl=context):
            assert first.ca_file == str(tmp_path / "ca.pem")
            # The /_local/ helpers and boto3 go over https too, trusting the printed CA.
            (cid,) = wait_until(first.connection_ids)
            first.management_client().post_to_connection(ConnectionId=cid, Data=b"x")
        ca = (tmp_path / "ca.pem").read_bytes()
        assert oct((tmp_path / "ca-key.pem").stat().st_mode & 0o777) == "0o600"
    finally:
        first.stop()
    second = GatewayProcess(["--tls", "--tls-dir", str(tmp_path)], env=env).start()
    try:
        assert (tmp_path / "ca.pem").read_bytes() == ca  # the same CA: trust it once
        client = management_client(second.management_endpoint, verify=str(tmp_path / "ca.pem"))
        with pytest.raises(client.exceptions.GoneException):
            client.post_to_connection(ConnectionId="R0oXAdfD0kwCH6w=", Data=b"x")
    finally:
        second.stop()


@pytest.mark.slow
def test_documented_chalice_command_line(
    tmp_path: Any, ws_connect: Any, lambda_like_environment: None
) -> None:
    """The docs' recipe, as a command: ``apigw-ws local --tls --lambda-route ...``."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]),
    }
    module = "tests.local.samples.chalice_chat"
    args = [
        "--tls",
        "--tls-dir",
        str(tmp_path),
        "--lambda-route",
        f"$connect={module}:connect",
        "--lambda-route",
        f"$default={module}:message",
        "--lambda-route",
        f"$disconnect={module}:disconnect",
    ]
    gateway = GatewayProcess(args, env=env).start()
    try:
        assert gateway.ca_file is not None
        context = ssl.create_default_context(cafile=gateway.ca_file)
        with (
            ws_connect(gateway.ws_url, ssl=context) as alice,
            ws_connect(gateway.ws_url, ssl=context) as bob,
        ):
            alice.send("/name alice")
            assert alice.recv(timeout=10) == "ok"
            bob.send("hi")
            assert alice.recv(timeout=10) == "anonymous: hi"
    finally:
        assert gateway.stop() == 0


def test_the_library_transport_trusts_aws_ca_bundle_like_botocore(
    gateway_factory: Any, ws_connect: Any, tls: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apigw_ws_core.errors import ConfigurationError
    from apigw_ws_core.http1 import ManagementApiTransport

    gw = gateway_factory(config_from_lambda(lambda event, context: None), tls=tls)
    with ws_connect(gw.ws_url, ssl=_client_ssl(tls)) as ws:
        (cid,) = wait_until(gw.connection_ids)
        monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
        plain = ManagementApiTransport(gw.management_endpoint, timeout=5)
        with pytest.raises(ConfigurationError, match="certificate verification failed"):
            plain.post(cid, b"untrusted")
        plain.close()
        monkeypatch.setenv("AWS_CA_BUNDLE", str(tls.bundle_file))
        trusted = ManagementApiTransport(gw.management_endpoint, timeout=5)
        trusted.post(cid, b"via AWS_CA_BUNDLE")
        trusted.close()
        assert ws.recv(timeout=5) == "via AWS_CA_BUNDLE"


@pytest.mark.slow
def test_a_tls_gateway_is_discovered_with_its_ca_bundle(
    tmp_path: Any, ws_connect: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apigw_ws_core import MemoryStorage, WebSocketApp
    from apigw_ws_core.config import Config

    monkeypatch.setenv("APIGW_WS_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]),
    }
    gateway = GatewayProcess(["--tls", "--tls-dir", str(tmp_path / "tls")], env=env).start()
    try:
        app = WebSocketApp(storage=MemoryStorage(), config=Config(allow_insecure_no_secret=True))
        context = ssl.create_default_context(cafile=gateway.ca_file)
        with ws_connect(gateway.ws_url, ssl=context) as ws:
            (cid,) = wait_until(gateway.connection_ids)
            report = app.send({"hello": "tls"}, connection_id=cid)
            assert report.delivered == 1
            assert json.loads(ws.recv(timeout=10)) == {"hello": "tls"}
        app.close()
    finally:
        gateway.stop()
