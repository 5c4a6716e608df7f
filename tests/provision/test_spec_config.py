"""GatewaySpec validation, the wire contract it encodes, TOML configs and state files."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from apigw_ws_core.errors import ConfigurationError
from apigw_ws_core.gateways import GatewayRecord
from apigw_ws_core.provision import (
    FileGatewayStore,
    GatewaySpec,
    ProvisionError,
    RouteSpec,
    SpecError,
    load_config,
    request_parameters,
    spec_from_dict,
)
from tests.provision.conftest import SECRET, make_spec

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "apigw-ws.toml"


def test_request_parameters_follow_the_wire_contract() -> None:
    params = request_parameters(SECRET)
    assert params == {
        "integration.request.header.X-Apigw-Ws-Connection-Id": "context.connectionId",
        "integration.request.header.X-Apigw-Ws-Route-Key": "context.routeKey",
        "integration.request.header.X-Apigw-Ws-Event-Type": "context.eventType",
        "integration.request.header.X-Apigw-Ws-Request-Id": "context.requestId",
        "integration.request.header.X-Apigw-Ws-Stage": "context.stage",
        "integration.request.header.X-Apigw-Ws-Source-Ip": "context.identity.sourceIp",
        "integration.request.header.X-Apigw-Ws-Secret": f"'{SECRET}'",
        "integration.request.header.connectionId": "context.connectionId",
    }


def test_resolved_routes_slugs_targets_and_two_way() -> None:
    spec = make_spec(
        routes=[
            RouteSpec(key="$default", slug="messages", two_way=False),
            RouteSpec(key="chat_message"),
            RouteSpec(key="x", target_url="https://other.example.com/x", two_way=True),
        ],
        default_two_way=True,
    )
    resolved = {r.key: (r.uri, r.two_way) for r in spec.resolved_routes()}
    assert resolved == {
        "$connect": ("https://app.example.com/ws/connect", False),
        "$disconnect": ("https://app.example.com/ws/disconnect", False),
        "$default": ("https://app.example.com/ws/messages", False),
        "chat_message": ("https://app.example.com/ws/chat_message", True),
        "x": ("https://other.example.com/x", True),
    }
    assert [r.key for r in spec.resolved_routes()][:3] == ["$connect", "$disconnect", "$default"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"target_base_url": "https://app.example.com/ws"}, "end with '/'"),
        ({"target_base_url": "ftp://app.example.com/"}, "http"),
        ({"secret": "short"}, "secret"),
        ({"secret": "has'quote-0123456789"}, "secret"),
        ({"name": "bad name"}, "gateway name"),
        ({"stage": "a/b"}, "stage"),
        ({"route_selection_expression": "$request.header.x"}, "route_selection_expression"),
        ({"timeout_ms": 30000}, "timeout_ms"),
        ({"stage_variables": {"bad-name": "x"}}, "stage variable"),
        ({"routes": [RouteSpec(key="a"), RouteSpec(key="a")]}, "twice"),
        ({"routes": [RouteSpec(key="a", slug="s"), RouteSpec(key="b", slug="s")]}, "slug"),
        ({"tags": {"apigw-ws:gateway": "x"}}, "reserved"),
    ],
)
def test_invalid_specs_are_refused(overrides: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        make_spec(**overrides)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"key": "$custom"}, "must not start with"),
        ({"key": "has space"}, "whitespace"),
        ({"key": "a/b"}, "slug"),
        ({"key": "$connect", "two_way": True}, "two-way"),
        ({"key": "a", "target_url": "not-a-url"}, "URL"),
    ],
)
def test_invalid_routes_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        RouteSpec(**kwargs)


def test_spec_errors_are_configuration_errors_and_secret_is_hidden() -> None:
    assert issubclass(SpecError, ConfigurationError)
    spec = make_spec()
    assert SECRET not in repr(spec)
    assert SECRET not in json.dumps(spec.canonical())
    assert spec.spec_hash() == make_spec().spec_hash()
    assert spec.spec_hash() != make_spec(secret="x" * 20).spec_hash()


def test_example_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APIGW_WS_SECRET", SECRET)
    config = load_config(EXAMPLE)
    spec = config.spec
    assert spec.name == "chat" and spec.region == "eu-west-1"
    assert [r.key for r in spec.resolved_routes()] == [
        "$connect",
        "$disconnect",
        "$default",
        "chat_message",
        "typing",
        "upload",
    ]
    assert spec.domain is not None and spec.domain.request_certificate
    assert spec.throttling is not None and spec.throttling.burst_limit == 500
    assert config.state_file == EXAMPLE.parent / ".apigw-ws-state.json"


def test_config_secret_comes_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "apigw-ws.toml"
    path.write_text(
        'name = "x"\ntarget_base_url = "https://a.example.com/ws/"\nsecret_env = "MY_SECRET"\n'
    )
    with pytest.raises(SpecError, match="MY_SECRET"):
        load_config(path, environ={})
    assert load_config(path, environ={"MY_SECRET": SECRET}).spec.secret == SECRET
    assert load_config(path, environ={}, need_secret=False).spec.secret


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "x"}, "target_base_url"),
        ({"name": "x", "target_base_url": "https://a.example.com/", "typo": 1}, "typo"),
        ({"name": 3, "target_base_url": "https://a.example.com/"}, "expected str"),
        (
            {"name": "x", "target_base_url": "https://a.example.com/", "routes": [{"slug": "a"}]},
            "key is required",
        ),
        (
            {
                "name": "x",
                "target_base_url": "https://a.example.com/",
                "routes": [{"key": "a", "twoway": True}],
            },
            "twoway",
        ),
        ({"name": "x", "target_base_url": "https://a.example.com/", "domain": {}}, "name"),
        (
            {"name": "x", "target_base_url": "https://a.example.com/", "throttling": {"burst": 1}},
            "burst",
        ),
        ({"name": "x", "target_base_url": "https://a.example.com/", "tags": {"a": 1}}, "tags"),
        (
            {"name": "x", "target_base_url": "https://a.example.com/", "timeout_ms": True},
            "expected int",
        ),
    ],
)
def test_bad_config_data(data: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        spec_from_dict(data, environ={"APIGW_WS_SECRET": SECRET})


def test_bad_config_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = ")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_config(bad)


def test_file_gateway_store_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.json"
    store = FileGatewayStore(path)
    assert store.get_gateway("chat") is None
    record = GatewayRecord(
        name="chat",
        api_id="abc",
        region="us-east-1",
        resources={"api": "abc", "route:$default": "r1"},
        status="ready",
        updated_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    store.save_gateway(record)
    store.save_gateway(GatewayRecord(name="other"))
    assert FileGatewayStore(path).get_gateway("chat") == record
    data = json.loads(path.read_text())
    assert set(data["gateways"]) == {"chat", "other"}
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]  # no temp files left


def test_file_gateway_store_refuses_foreign_files(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("[1, 2]")
    with pytest.raises(ProvisionError, match="not an apigw-ws state file"):
        FileGatewayStore(path).get_gateway("x")
    path.write_text("{")
    with pytest.raises(ProvisionError, match="not valid JSON"):
        FileGatewayStore(path).get_gateway("x")


def test_gateway_spec_accepts_lists_and_copies_mappings() -> None:
    variables = {"a": "b"}
    spec = GatewaySpec(
        name="x",
        target_base_url="https://a.example.com/",
        secret=SECRET,
        routes=[RouteSpec(key="r")],
        stage_variables=variables,
    )
    variables["a"] = "changed"
    assert isinstance(spec.routes, tuple) and spec.stage_variables == {"a": "b"}
