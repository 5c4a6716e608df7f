"""apply/plan/destroy of the API itself under moto: create, no-op, update, delete, resume."""

from __future__ import annotations

import pytest

from apigw_ws_core.provision import (
    GATEWAY_TAG,
    MemoryGatewayStore,
    ProvisionError,
    RouteSpec,
    Throttling,
    apply,
    destroy,
    plan,
    render_changes,
)
from tests.provision.conftest import REGION, SECRET, AwsEnv, make_spec

CONTRACT = {
    "integration.request.header.X-Apigw-Ws-Connection-Id": "context.connectionId",
    "integration.request.header.X-Apigw-Ws-Route-Key": "context.routeKey",
    "integration.request.header.X-Apigw-Ws-Event-Type": "context.eventType",
    "integration.request.header.X-Apigw-Ws-Request-Id": "context.requestId",
    "integration.request.header.X-Apigw-Ws-Stage": "context.stage",
    "integration.request.header.X-Apigw-Ws-Source-Ip": "context.identity.sourceIp",
    "integration.request.header.X-Apigw-Ws-Secret": f"'{SECRET}'",
    "integration.request.header.connectionId": "context.connectionId",
}


def _pending(changes):
    return [c for c in changes if c.action != "noop"]


def _read(aws: AwsEnv, api_id: str):
    client = aws.client("apigatewayv2")
    integrations = {i["IntegrationId"]: i for i in client.get_integrations(ApiId=api_id)["Items"]}
    routes = {r["RouteKey"]: r for r in client.get_routes(ApiId=api_id)["Items"]}
    stages = {s["StageName"]: s for s in client.get_stages(ApiId=api_id)["Items"]}
    return integrations, routes, stages


def _route_integration(integrations, route):
    return integrations[route["Target"].split("/", 1)[1]]


def test_apply_creates_the_wire_contract(aws: AwsEnv) -> None:
    result = apply(make_spec(), storage=aws.store, aws=aws.clients)
    assert result.changed and result.drift == []
    record = result.record
    assert record.status == "ready"
    api_id = record.api_id
    assert record.api_endpoint == f"wss://{api_id}.execute-api.{REGION}.amazonaws.com/prod"
    assert record.management_endpoint == f"https://{api_id}.execute-api.{REGION}.amazonaws.com/prod"

    api = aws.client("apigatewayv2").get_api(ApiId=api_id)
    assert api["ProtocolType"] == "WEBSOCKET"
    assert api["RouteSelectionExpression"] == "$request.body.action"
    assert api["Tags"][GATEWAY_TAG] == "chat"

    integrations, routes, stages = _read(aws, api_id)
    assert set(routes) == {"$connect", "$disconnect", "$default", "chat_message", "upload"}
    uris = {key: _route_integration(integrations, r)["IntegrationUri"] for key, r in routes.items()}
    assert uris == {
        "$connect": "https://app.example.com/ws/connect",
        "$disconnect": "https://app.example.com/ws/disconnect",
        "$default": "https://app.example.com/ws/default",
        "chat_message": "https://app.example.com/ws/chat_message",
        "upload": "https://files.example.com/ws/upload",
    }
    for integration in integrations.values():
        assert integration["IntegrationType"] == "HTTP_PROXY"
        assert integration["IntegrationMethod"] == "POST"
        assert integration["TimeoutInMillis"] == 29000
        assert integration["RequestParameters"] == CONTRACT
    # Two-way routes: route response selection + a $default route response.
    assert routes["$default"]["RouteResponseSelectionExpression"] == "$default"
    assert routes["chat_message"]["RouteResponseSelectionExpression"] == "$default"
    for key in ("$connect", "$disconnect", "upload"):
        assert not routes[key].get("RouteResponseSelectionExpression")
    backend_api = aws.gaps.backend.apis[api_id]
    with_responses = {
        r.route_key: [rr.route_response_key for rr in r.route_responses.values()]
        for r in backend_api.routes.values()
        if r.route_responses
    }
    assert with_responses == {"$default": ["$default"], "chat_message": ["$default"]}
    # Stage with variables and throttling, deployed once.
    assert stages["prod"]["StageVariables"] == {"env": "test"}
    assert stages["prod"]["DefaultRouteSettings"]["ThrottlingBurstLimit"] == 100
    assert stages["prod"]["DefaultRouteSettings"]["ThrottlingRateLimit"] == 50.0
    assert aws.gaps.count("CreateDeployment") == 1
    # The record knows every resource.
    assert record.resources["api"] == api_id
    assert {k for k in record.resources if k.startswith("route:")} == {f"route:{k}" for k in routes}
    assert record.resources["route_response:chat_message"]
    assert aws.store.get_gateway("chat") == record


def test_second_apply_is_a_noop(aws: AwsEnv) -> None:
    spec = make_spec()
    apply(spec, storage=aws.store, aws=aws.clients)
    aws.gaps.reset()
    changes = plan(spec, storage=aws.store, aws=aws.clients)
    assert _pending(changes) == []
    assert "No changes" in render_changes(changes)
    result = apply(spec, storage=aws.store, aws=aws.clients)
    assert not result.changed
    assert aws.gaps.mutating_calls() == []
    assert aws.gaps.count("CreateDeployment") == 0


def test_changed_target_url_updates_integrations_in_place(aws: AwsEnv) -> None:
    apply(make_spec(), storage=aws.store, aws=aws.clients)
    before, _, _ = _read(aws, aws.store.get_gateway("chat").api_id)
    spec = make_spec(target_base_url="https://new.example.com/apigw/")
    changes = _pending(plan(spec, storage=aws.store, aws=aws.clients))
    updated = sorted(c.name for c in changes if c.resource == "integration")
    # "upload" has its own target_url and stays as it is.
    assert updated == ["$connect", "$default", "$disconnect", "chat_message"]
    assert all(c.action == "update" for c in changes if c.resource == "integration")
    assert [c.resource for c in changes if c.resource != "integration"] == ["deployment"]
    text = render_changes(changes)
    assert (
        '~ IntegrationUri: "https://app.example.com/ws/connect" -> '
        '"https://new.example.com/apigw/connect"'
    ) in text

    aws.gaps.reset()
    result = apply(spec, storage=aws.store, aws=aws.clients)
    assert result.drift == []
    assert set(aws.gaps.mutating_calls()) == {"UpdateIntegration", "CreateDeployment"}
    after, routes, _ = _read(aws, result.record.api_id)
    assert set(after) == set(before)  # same ids: updated, not replaced
    assert _route_integration(after, routes["$default"])["IntegrationUri"] == (
        "https://new.example.com/apigw/default"
    )
    assert _pending(plan(spec, storage=aws.store, aws=aws.clients)) == []


def test_removed_route_is_deleted_with_its_integration_and_response(aws: AwsEnv) -> None:
    apply(make_spec(), storage=aws.store, aws=aws.clients)
    spec = make_spec(routes=[RouteSpec(key="upload", target_url="https://files.example.com/u")])
    changes = _pending(plan(spec, storage=aws.store, aws=aws.clients))
    summary = {(c.action, c.resource, c.name.split()[-1]) for c in changes}
    assert ("delete", "route", "chat_message") in summary
    assert ("delete", "integration", "chat_message") in summary
    assert ("update", "integration", "upload") in summary

    result = apply(spec, storage=aws.store, aws=aws.clients)
    assert result.drift == []
    integrations, routes, _ = _read(aws, result.record.api_id)
    assert set(routes) == {"$connect", "$disconnect", "$default", "upload"}
    assert len(integrations) == 4
    assert not any(k.endswith("chat_message") for k in result.record.resources)


def test_two_way_flag_and_new_route(aws: AwsEnv) -> None:
    apply(make_spec(), storage=aws.store, aws=aws.clients)
    spec = make_spec(
        routes=[
            RouteSpec(key="chat_message", two_way=False),
            RouteSpec(key="upload", target_url="https://files.example.com/ws/upload", two_way=True),
            RouteSpec(key="presence.join", slug="presence-join"),
        ]
    )
    result = apply(spec, storage=aws.store, aws=aws.clients)
    assert result.drift == []
    integrations, routes, _ = _read(aws, result.record.api_id)
    assert not routes["chat_message"].get("RouteResponseSelectionExpression")
    assert routes["upload"]["RouteResponseSelectionExpression"] == "$default"
    assert _route_integration(integrations, routes["presence.join"])["IntegrationUri"] == (
        "https://app.example.com/ws/presence-join"
    )
    backend_routes = aws.gaps.backend.apis[result.record.api_id].routes
    responses = {r.route_key: len(r.route_responses) for r in backend_routes.values()}
    assert responses["chat_message"] == 0
    assert responses["upload"] == 1
    assert responses["presence.join"] == 1


def test_stage_changes_update_the_stage_without_redeploying(aws: AwsEnv) -> None:
    apply(make_spec(), storage=aws.store, aws=aws.clients)
    spec = make_spec(
        stage_variables={"region_name": "eu"},
        throttling=Throttling(burst_limit=7),
    )
    changes = _pending(plan(spec, storage=aws.store, aws=aws.clients))
    assert [(c.action, c.resource) for c in changes] == [("update", "stage")]
    assert changes[0].details == {
        "StageVariables": ({"env": "test"}, {"region_name": "eu"}),
        "ThrottlingBurstLimit": (100, 7),
    }
    aws.gaps.reset()
    result = apply(spec, storage=aws.store, aws=aws.clients)
    assert aws.gaps.mutating_calls() == ["UpdateStage"]
    assert result.drift == []
    _, _, stages = _read(aws, result.record.api_id)
    assert stages["prod"]["StageVariables"] == {"region_name": "eu"}
    # rate_limit left out of the spec: left alone.
    assert stages["prod"]["DefaultRouteSettings"]["ThrottlingRateLimit"] == 50.0


def test_changed_secret_updates_every_integration_and_never_shows(aws: AwsEnv) -> None:
    apply(make_spec(), storage=aws.store, aws=aws.clients)
    spec = make_spec(secret="another-secret-value-0123456789")
    changes = _pending(plan(spec, storage=aws.store, aws=aws.clients))
    assert sum(1 for c in changes if c.resource == "integration") == 5
    text = render_changes(changes, show_noop=True)
    assert SECRET not in text and "another-secret-value" not in text
    assert "<secret " in text
    result = apply(spec, storage=aws.store, aws=aws.clients)
    integrations, _, _ = _read(aws, result.record.api_id)
    for integration in integrations.values():
        params = integration["RequestParameters"]
        assert params["integration.request.header.X-Apigw-Ws-Secret"] == (
            "'another-secret-value-0123456789'"
        )
    assert SECRET not in repr(result.record)


def test_renamed_stage_replaces_the_old_one(aws: AwsEnv) -> None:
    apply(make_spec(), storage=aws.store, aws=aws.clients)
    result = apply(make_spec(stage="live"), storage=aws.store, aws=aws.clients)
    _, _, stages = _read(aws, result.record.api_id)
    assert set(stages) == {"live"}
    assert result.record.stage == "live"
    assert result.record.api_endpoint.endswith("/live")
    assert aws.gaps.count("CreateDeployment") == 2


def test_failure_midway_leaves_an_accurate_record_and_apply_resumes(aws: AwsEnv) -> None:
    spec = make_spec()
    aws.gaps.fail_on("CreateRoute", nth=3)
    events = []
    with pytest.raises(ProvisionError) as info:
        apply(spec, storage=aws.store, aws=aws.clients, progress=events.append)
    assert info.value.step == "route $default"
    assert "run apply again" in str(info.value)
    assert [e.phase for e in events][-1] == "failed"

    record = aws.store.get_gateway("chat")
    assert record is not None and record.status == "partial"
    client = aws.client("apigatewayv2")
    integrations, routes, stages = _read(aws, record.api_id)
    assert len(integrations) == 5
    assert set(routes) == {"$connect", "$disconnect"}
    assert stages == {}
    # The record lists exactly what exists.
    assert {k for k in record.resources if k.startswith("integration:")} == {
        f"integration:{k}"
        for k in ("$connect", "$disconnect", "$default", "chat_message", "upload")
    }
    assert {k for k in record.resources if k.startswith("route:")} == {
        "route:$connect",
        "route:$disconnect",
    }
    assert set(record.resources.values()) >= set(integrations)

    remaining = _pending(plan(spec, storage=aws.store, aws=aws.clients))
    assert not any(c.resource in ("api", "integration") for c in remaining)
    result = apply(spec, storage=aws.store, aws=aws.clients)
    assert result.record.status == "ready" and result.drift == []
    assert len(client.get_apis()["Items"]) == 1
    integrations, routes, _ = _read(aws, result.record.api_id)
    assert len(integrations) == 5 and len(routes) == 5
    assert _pending(plan(spec, storage=aws.store, aws=aws.clients)) == []


def test_failure_before_deployment_redeploys_on_resume(aws: AwsEnv) -> None:
    spec = make_spec()
    apply(spec, storage=aws.store, aws=aws.clients)
    changed = make_spec(target_base_url="https://v2.example.com/ws/")
    aws.gaps.fail_on("CreateDeployment")
    with pytest.raises(ProvisionError):
        apply(changed, storage=aws.store, aws=aws.clients)
    # Integrations are already updated; the deployment is still owed.
    remaining = _pending(plan(changed, storage=aws.store, aws=aws.clients))
    assert [c.resource for c in remaining] == ["deployment"]
    apply(changed, storage=aws.store, aws=aws.clients)
    assert _pending(plan(changed, storage=aws.store, aws=aws.clients)) == []


def test_lost_record_finds_the_api_by_tag(aws: AwsEnv) -> None:
    spec = make_spec()
    first = apply(spec, storage=aws.store, aws=aws.clients)
    fresh = MemoryGatewayStore()
    changes = _pending(plan(spec, storage=fresh, aws=aws.clients))
    # Everything is found; only the deployment is unknown without a record... unless AWS
    # says which configuration the stage's deployment has (its description does).
    assert changes == []
    result = apply(spec, storage=fresh, aws=aws.clients)
    assert result.record.api_id == first.record.api_id
    assert len(aws.client("apigatewayv2").get_apis()["Items"]) == 1
    assert result.record.resources == first.record.resources


def test_untagged_api_with_the_same_name_is_not_taken_over(aws: AwsEnv) -> None:
    aws.client("apigatewayv2").create_api(
        Name="chat", ProtocolType="WEBSOCKET", RouteSelectionExpression="$request.body.action"
    )
    with pytest.raises(ProvisionError, match="not managed by apigw-ws"):
        plan(make_spec(), storage=aws.store, aws=aws.clients)


def test_tags_are_updated_and_stale_ones_removed(aws: AwsEnv) -> None:
    apply(make_spec(tags={"team": "a", "old": "x"}), storage=aws.store, aws=aws.clients)
    result = apply(make_spec(tags={"team": "b"}), storage=aws.store, aws=aws.clients)
    tags = aws.client("apigatewayv2").get_api(ApiId=result.record.api_id)["Tags"]
    assert tags == {"team": "b", GATEWAY_TAG: "chat"}
    assert aws.gaps.count("CreateDeployment") == 1  # tags alone need no deployment


def test_destroy_removes_everything_and_is_idempotent(aws: AwsEnv) -> None:
    spec = make_spec()
    apply(spec, storage=aws.store, aws=aws.clients)
    dry = destroy(spec, storage=aws.store, aws=aws.clients, dry_run=True)
    assert [(c.action, c.resource) for c in dry.changes] == [("delete", "api")]
    assert len(aws.client("apigatewayv2").get_apis()["Items"]) == 1
    result = destroy(spec, storage=aws.store, aws=aws.clients)
    assert result.record.status == "destroyed" and result.record.resources == {}
    assert result.drift == []
    assert aws.client("apigatewayv2").get_apis()["Items"] == []
    again = destroy(spec, storage=aws.store, aws=aws.clients)
    assert again.changes == []
    # And it can be provisioned again from scratch.
    assert apply(spec, storage=aws.store, aws=aws.clients).record.status == "ready"


def test_apply_without_storage_still_finds_resources(aws: AwsEnv) -> None:
    spec = make_spec()
    apply(spec, storage=None, aws=aws.clients)
    assert _pending(plan(spec, storage=None, aws=aws.clients)) == []


def test_region_mismatch_is_refused(aws: AwsEnv) -> None:
    with pytest.raises(ProvisionError, match="region"):
        plan(make_spec(region="eu-west-1"), storage=aws.store, aws=aws.clients)
