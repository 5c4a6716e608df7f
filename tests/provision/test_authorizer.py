"""A Lambda REQUEST authorizer on $connect: spec, config file, plan/apply/destroy under moto."""

from __future__ import annotations

import pytest

from apigw_ws_core.provision import (
    AuthorizerSpec,
    SpecError,
    apply,
    destroy,
    plan,
    render_changes,
    spec_from_dict,
)
from tests.provision.conftest import SECRET, AwsEnv, make_spec

FUNCTION = "arn:aws:lambda:us-east-1:123456789012:function:ws-auth"
URI = f"arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/{FUNCTION}/invocations"


def _authorizer(**overrides: object) -> AuthorizerSpec:
    values: dict[str, object] = {
        "function_arn": FUNCTION,
        "identity_sources": ("route.request.querystring.token",),
        "context_keys": ("userId", "tenant"),
    }
    values.update(overrides)
    return AuthorizerSpec(**values)  # type: ignore[arg-type]


def _routes(aws: AwsEnv, api_id: str) -> dict[str, dict]:
    client = aws.client("apigatewayv2")
    return {r["RouteKey"]: r for r in client.get_routes(ApiId=api_id)["Items"]}


def test_apply_creates_the_authorizer_on_connect_and_maps_its_result(aws: AwsEnv) -> None:
    spec = make_spec(authorizer=_authorizer())
    shown = render_changes(plan(spec, storage=aws.store, aws=aws.clients))
    assert "+ authorizer apigw-ws-authorizer" in shown
    result = apply(spec, storage=aws.store, aws=aws.clients)
    assert result.drift == []
    api_id = result.record.api_id
    client = aws.client("apigatewayv2")
    auth_id = result.record.resources["authorizer"]
    auth = client.get_authorizer(ApiId=api_id, AuthorizerId=auth_id)
    assert auth["AuthorizerType"] == "REQUEST"
    assert auth["AuthorizerUri"] == URI
    assert auth["IdentitySource"] == ["route.request.querystring.token"]
    routes = _routes(aws, api_id)
    assert routes["$connect"]["AuthorizationType"] == "CUSTOM"
    assert routes["$connect"]["AuthorizerId"] == auth_id
    assert routes["$default"].get("AuthorizationType") in (None, "NONE")
    for item in client.get_integrations(ApiId=api_id)["Items"]:
        params = item["RequestParameters"]
        assert (
            params["integration.request.header.X-Apigw-Ws-Authorizer-Principal-Id"]
            == "context.authorizer.principalId"
        )
        assert (
            params["integration.request.header.X-Apigw-Ws-Authorizer-userId"]
            == "context.authorizer.userId"
        )
        assert params["integration.request.header.X-Apigw-Ws-Secret"] == f"'{SECRET}'"
    # Idempotent.
    again = plan(spec, storage=aws.store, aws=aws.clients)
    assert [c for c in again if c.action != "noop"] == []


def test_changed_authorizer_updates_in_place_and_removal_detaches_then_deletes(
    aws: AwsEnv,
) -> None:
    first = apply(make_spec(authorizer=_authorizer()), storage=aws.store, aws=aws.clients)
    api_id = first.record.api_id
    auth_id = first.record.resources["authorizer"]
    changed = make_spec(
        authorizer=_authorizer(identity_sources=("route.request.header.Authorization",))
    )
    result = apply(changed, storage=aws.store, aws=aws.clients)
    done = [(c.action, c.resource) for c in result.changes if c.action != "noop"]
    assert ("update", "authorizer") in done and ("create", "authorizer") not in done
    assert result.drift == []
    client = aws.client("apigatewayv2")
    auth = client.get_authorizer(ApiId=api_id, AuthorizerId=auth_id)
    assert auth["IdentitySource"] == ["route.request.header.Authorization"]

    removed = apply(make_spec(), storage=aws.store, aws=aws.clients)
    order = [(c.action, c.resource, c.name) for c in removed.changes if c.action != "noop"]
    route_update = order.index(("update", "route", "$connect"))
    deletion = order.index(("delete", "authorizer", "apigw-ws-authorizer"))
    assert route_update < deletion
    assert removed.drift == []
    assert "authorizer" not in removed.record.resources
    assert _routes(aws, api_id)["$connect"]["AuthorizationType"] == "NONE"
    params = client.get_integrations(ApiId=api_id)["Items"][0]["RequestParameters"]
    assert not any("Authorizer" in k for k, v in params.items() if v)


def test_destroy_takes_the_authorizer_with_the_api(aws: AwsEnv) -> None:
    spec = make_spec(authorizer=_authorizer())
    apply(spec, storage=aws.store, aws=aws.clients)
    result = destroy(spec, storage=aws.store, aws=aws.clients)
    assert result.drift == [] and result.record.status == "destroyed"
    assert aws.client("apigatewayv2").get_apis()["Items"] == []


def test_authorizer_from_the_config_file() -> None:
    spec = spec_from_dict(
        {
            "name": "chat",
            "target_base_url": "https://app.example.com/ws/",
            "authorizer": {
                "function_arn": FUNCTION,
                "identity_sources": ["route.request.header.Authorization"],
                "context_keys": ["userId"],
            },
        },
        environ={"APIGW_WS_SECRET": SECRET},
    )
    assert spec.authorizer == AuthorizerSpec(
        function_arn=FUNCTION,
        identity_sources=("route.request.header.Authorization",),
        context_keys=("userId",),
    )
    with pytest.raises(SpecError, match="unknown key"):
        spec_from_dict(
            {
                "name": "chat",
                "target_base_url": "https://app.example.com/ws/",
                "authorizer": {"function_arn": FUNCTION, "ttl": 5},
            },
            environ={"APIGW_WS_SECRET": SECRET},
        )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("function_arn", "arn:aws:iam::123456789012:role/x", "Lambda function ARN"),
        ("identity_sources", ("header.Authorization",), "identity source"),
        ("identity_sources", (), "at least one"),
        ("context_keys", ("user id",), "context key"),
        ("credentials_arn", "role", "not a role"),
    ],
)
def test_bad_authorizer_specs_are_refused(field: str, value: object, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        _authorizer(**{field: value})
