"""Lambda REQUEST authorizers on $connect in the local gateway: statuses, context, mappings,
the CLI flags, and the documented JWT authorizer (PyJWT) in front of a WebSocketApp."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from websockets.exceptions import InvalidStatus

from apigw_ws_core import Config, MemoryStorage, WebSocketApp
from apigw_ws_core.aws_lambda import make_handler
from apigw_ws_core.local import (
    Authorizer,
    ConfigError,
    config_from_backend,
    config_from_dict,
    config_from_lambda,
    config_from_lambda_routes,
)
from apigw_ws_core.local.authorizers import evaluate_authorizer_result
from apigw_ws_core.local.testing import wait_until
from apigw_ws_core.testing import RecordingTransport
from tests.local.test_cli import parse

pytestmark = pytest.mark.timeout(30)

ARN = "arn:aws:execute-api:us-east-1:000000000000:apigwlocal/local/$connect"
EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "jwt_authorizer.py"


def _allow(resource: Any = "*", effect: str = "Allow", **context: Any) -> dict[str, Any]:
    return {
        "principalId": "user-1",
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": resource}],
        },
        "context": context,
    }


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (_allow(), None),
        (_allow(ARN), None),
        (_allow("arn:aws:execute-api:us-east-1:*:apigwlocal/*/$connect"), None),
        (_allow([ARN.replace("$connect", "other"), ARN]), None),
        (_allow(effect="Deny"), 403),
        (_allow("arn:aws:execute-api:us-east-1:*:otherapi/*"), 403),
        ({"principalId": "x", "policyDocument": {"Statement": []}}, 403),
        ({"principalId": "x"}, 500),
        ("not a policy", 500),
        (_allow(nested={"a": 1}), 500),
    ],
)
def test_policy_evaluation(answer: Any, status: int | None) -> None:
    assert evaluate_authorizer_result(answer, ARN).status == status


class Backend:
    """A Lambda handler for every route that records the events."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        self.events.append(event)
        return {"statusCode": 200}


def test_statuses_through_the_gateway(gateway_factory: Any, ws_connect: Any) -> None:
    calls: list[dict[str, Any]] = []
    answers: dict[str, Any] = {
        "allow": _allow(role="admin"),
        "deny": _allow(effect="Deny"),
        "unauthorized": Exception("Unauthorized"),
        "broken": RuntimeError("bug"),
        "slow": "sleep",
    }

    def authorizer(event: dict[str, Any], context: Any) -> Any:
        calls.append(event)
        answer = answers[event["headers"]["Auth"]]
        if isinstance(answer, Exception):
            raise answer
        if answer == "sleep":
            time.sleep(0.5)
        return answer

    backend = Backend()
    auth = Authorizer(
        uri="tests:authorizer",
        handler=authorizer,
        identity_sources=["route.request.header.Auth"],
        timeout_ms=200,
    )
    gw = gateway_factory(config_from_lambda(backend, authorizer=auth))
    with pytest.raises(InvalidStatus) as info:
        ws_connect(gw.ws_url)
    assert info.value.response.status_code == 401 and calls == []  # identity source missing
    for name, status in (("deny", 403), ("unauthorized", 401), ("broken", 500), ("slow", 500)):
        with pytest.raises(InvalidStatus) as info:
            ws_connect(gw.ws_url, additional_headers={"Auth": name})
        assert info.value.response.status_code == status, name
        body = json.loads(info.value.response.body)
        assert body["message"] in ("Unauthorized", "Forbidden", "Internal server error")
    assert backend.events == []  # the $connect integration never ran
    with ws_connect(gw.ws_url, additional_headers={"Auth": "allow"}):
        pass
    wait_until(lambda: len(backend.events) == 2)
    assert backend.events[0]["requestContext"]["authorizer"] == {
        "principalId": "user-1",
        "role": "admin",
    }


def test_http_integrations_get_the_principal_and_context_headers(
    gateway_factory: Any, ws_connect: Any, backend: Any
) -> None:
    def authorizer(event: dict[str, Any], context: Any) -> Any:
        return _allow(userId="u-42", plan="pro")

    api = config_from_backend(
        backend.url,
        secret="s3cret-value",
        authorizer=Authorizer(uri="a:b", handler=authorizer),
        authorizer_context_keys=["userId"],
    )
    gw = gateway_factory(api)
    forged = {"X-Apigw-Ws-Authorizer-Principal-Id": "admin"}
    with ws_connect(gw.ws_url, additional_headers=forged) as ws:
        ws.send("hello")
        backend.wait_for("default")
    for route in ("connect", "default"):
        [request] = backend.requests_for(route)
        assert request.header("X-Apigw-Ws-Authorizer-Principal-Id") == "user-1", route
        assert request.header_values("X-Apigw-Ws-Authorizer-Principal-Id") == ["user-1"]
        assert request.header("X-Apigw-Ws-Authorizer-userId") == "u-42"
        assert request.header("X-Apigw-Ws-Authorizer-plan") is None  # not declared


def test_config_file_and_cli_declare_an_authorizer(tmp_path: Any) -> None:
    api = config_from_dict(
        {
            "lambda_routes": {"$connect": "json:loads", "$default": "json:dumps"},
            "two_way_routes": ["$default"],
            "authorizer": {"uri": "json:loads", "identity_sources": ["route.request.header.A"]},
            "region": "eu-west-1",
        }
    )
    assert api.routes["$connect"].authorizer == Authorizer(
        uri="json:loads", identity_sources=["route.request.header.A"]
    )
    assert api.routes["$default"].two_way and api.region == "eu-west-1"
    with pytest.raises(ConfigError, match="needs a \\$connect"):
        config_from_dict(
            {"lambda_routes": {"$default": "json:dumps"}, "authorizer": {"uri": "a:b"}}
        )
    with pytest.raises(ConfigError, match="needs a \\$connect"):
        config_from_lambda_routes({"$default": "json:dumps"}, authorizer=Authorizer(uri="a:b"))
    from apigw_ws_core.local import Integration, Route

    with pytest.raises(ConfigError, match="\\$connect only"):
        Route(
            key="$default",
            integration=Integration(type="AWS_PROXY", uri="a:b"),
            authorizer=Authorizer(uri="a:b"),
        )

    from apigw_ws_core.local.cli import build_api

    api = build_api(
        parse(
            "--lambda-route", "$connect=json:loads",
            "--lambda-route", "$default=json:dumps",
            "--lambda-route", "send=json:dumps",
            "--two-way", "send",
            "--authorizer", "json:loads",
            "--identity-source", "route.request.querystring.token",
            "--region", "eu-central-1",
        )
    )  # fmt: skip
    assert set(api.routes) == {"$connect", "$default", "send"}
    assert api.routes["send"].two_way and not api.routes["$default"].two_way
    assert api.routes["$connect"].authorizer is not None
    assert api.routes["$connect"].authorizer.identity_sources == (
        "route.request.querystring.token",
    )
    assert api.region == "eu-central-1"
    for argv in (
        ("--lambda-route", "$connect"),
        ("--lambda-route", "$connect=json:loads", "--backend", "http://127.0.0.1:1/"),
        ("--two-way", "x", "--backend", "http://127.0.0.1:1/"),
        ("--identity-source", "route.request.header.A", "--lambda", "json:loads"),
        ("--authorizer", "json:loads"),
    ):
        with pytest.raises(ConfigError):
            build_api(parse(*argv))


def _load_example() -> Any:
    spec = importlib.util.spec_from_file_location("docs_jwt_authorizer", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_jwt_authorizer_example_in_front_of_a_websocket_app(
    gateway_factory: Any, ws_connect: Any, monkeypatch: Any
) -> None:
    secret = "jwt-test-key-0123456789-0123456789"
    monkeypatch.setenv("JWT_SECRET", secret)
    example = _load_example()
    app = WebSocketApp(
        storage=MemoryStorage(),
        transport=RecordingTransport(),
        config=Config(user_from_authorizer="userId"),
    )

    @app.handler("whoami")
    def whoami(ctx: Any, message: Any) -> Any:
        return {"user": ctx.user_id}

    handler = make_handler(app)
    api = config_from_lambda_routes(
        {"$connect": handler, "$default": handler, "$disconnect": handler},
        two_way_routes=["$default"],
        authorizer=Authorizer(
            uri="jwt_authorizer:handler",
            handler=example.handler,
            identity_sources=["route.request.querystring.token"],
        ),
    )
    gw = gateway_factory(api)

    def token(**claims: Any) -> str:
        payload = {"sub": "alice", "aud": "apigw-ws", "exp": int(time.time()) + 60, **claims}
        return jwt.encode(payload, claims.pop("key", secret), algorithm="HS256")

    with ws_connect(f"{gw.ws_url}?token={token(scope='ws chat')}") as ws:
        ws.send(json.dumps({"action": "whoami"}))
        assert json.loads(ws.recv(timeout=5)) == {"user": "alice"}
    cases = {
        "": 401,  # identity source missing: the authorizer is not even called
        token(scope="chat"): 403,  # valid, but no "ws" scope: Deny
        token(scope="ws", exp=int(time.time()) - 5): 401,  # expired
        jwt.encode(
            {"sub": "x", "aud": "apigw-ws", "exp": 2**31}, "other-key-0123456789-abcdef-0123456789"
        ): 401,
    }
    for value, status in cases.items():
        with pytest.raises(InvalidStatus) as info:
            ws_connect(f"{gw.ws_url}?token={value}" if value else gw.ws_url)
        assert info.value.response.status_code == status
