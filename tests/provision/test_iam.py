"""IAM policies: the runtime one is exact; the deploy one allows every call provisioning makes.

The deploy-policy test records every AWS call of a full apply + change + destroy (custom
domain, requested certificate, DNS) and evaluates each against the generated policy with a
small evaluator of the IAM features the policy uses (wildcards, the ACM and Route 53
condition keys). A call the policy does not allow fails the test, so the policy cannot fall
behind the code.
"""

from __future__ import annotations

import fnmatch
from typing import Any
from urllib.parse import unquote

import pytest

from apigw_ws_core.provision import (
    GatewaySpec,
    apply,
    deploy_policy,
    destroy,
    runtime_policy,
)
from tests.provision.conftest import REGION, AwsEnv, domain_spec, make_spec

ACCOUNT = "123456789012"


def test_runtime_policy_is_manage_connections_on_one_stage() -> None:
    policy = runtime_policy("eu-west-1", "111122223333", "abc123", "prod")
    assert policy["Version"] == "2012-10-17"
    (statement,) = policy["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == "execute-api:ManageConnections"
    assert statement["Resource"] == [
        "arn:aws:execute-api:eu-west-1:111122223333:abc123/prod/POST/@connections/*",
        "arn:aws:execute-api:eu-west-1:111122223333:abc123/prod/GET/@connections/*",
        "arn:aws:execute-api:eu-west-1:111122223333:abc123/prod/DELETE/@connections/*",
    ]


def test_deploy_policy_without_domain_has_no_acm_or_route53() -> None:
    policy = deploy_policy(make_spec(), ACCOUNT, api_id="abc")
    actions = {a for s in policy["Statement"] for a in _as_list(s["Action"])}
    assert all(a.startswith("apigateway:") for a in actions)
    resources = {r for s in policy["Statement"] for r in _as_list(s["Resource"])}
    assert f"arn:aws:apigateway:{REGION}::/apis/abc/*" in resources
    assert not any("/apis/*" in r for r in resources)


# --- a tiny IAM evaluator ---------------------------------------------------------------


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _conditions_hold(condition: dict[str, Any], context: dict[str, list[str]]) -> bool:
    for operator, keys in condition.items():
        for key, allowed in keys.items():
            values = context.get(key)
            if values is None:
                return False
            if operator == "ForAllValues:StringEquals":
                ok = all(v in allowed for v in values)
            elif operator == "ForAllValues:StringLike":
                ok = all(any(fnmatch.fnmatchcase(v, p) for p in allowed) for v in values)
            else:
                raise AssertionError(f"evaluator does not know {operator}")
            if not ok:
                return False
    return True


def _allowed(policy: dict[str, Any], action: str, resource: str, context: dict) -> bool:
    for statement in policy["Statement"]:
        if statement["Effect"] != "Allow":
            continue
        if not any(fnmatch.fnmatchcase(action, a) for a in _as_list(statement["Action"])):
            continue
        if not any(fnmatch.fnmatchcase(resource, r) for r in _as_list(statement["Resource"])):
            continue
        if _conditions_hold(statement.get("Condition", {}), context):
            return True
    return False


def _request_uri(model: Any, params: dict[str, Any]) -> str:
    uri = model.http["requestUri"].split("?")[0]
    for name, shape in model.input_shape.members.items():
        if shape.serialization.get("location") == "uri" and name in params:
            uri = uri.replace("{" + shape.serialization["name"] + "}", unquote(str(params[name])))
    return uri


def _iam_request(model: Any, params: dict[str, Any]) -> tuple[str, str, dict] | None:
    service = model.service_model.service_name
    if service == "apigatewayv2":
        path = _request_uri(model, params).removeprefix("/v2")
        return f"apigateway:{model.http['method']}", f"arn:aws:apigateway:{REGION}::{path}", {}
    if service == "acm":
        action = f"acm:{model.name}"
        if model.name == "RequestCertificate":
            names = [params["DomainName"], *params.get("SubjectAlternativeNames", [])]
            return action, "*", {"acm:DomainNames": names}
        return action, params.get("CertificateArn", "*"), {}
    if service == "route53":
        action = f"route53:{model.name}"
        zone = params.get("HostedZoneId")
        if zone is None:
            return action, "*", {}
        resource = f"arn:aws:route53:::hostedzone/{zone}"
        context: dict[str, list[str]] = {}
        if model.name == "ChangeResourceRecordSets":
            rrsets = [c["ResourceRecordSet"] for c in params["ChangeBatch"]["Changes"]]
            context = {
                "route53:ChangeResourceRecordSetsNormalizedRecordNames": [
                    r["Name"].lower().rstrip(".") for r in rrsets
                ],
                "route53:ChangeResourceRecordSetsRecordTypes": [r["Type"] for r in rrsets],
            }
        return action, resource, context
    return None  # sts:GetCallerIdentity needs no permission


def _check_calls(aws: AwsEnv, policy: dict[str, Any]) -> set[str]:
    denied = []
    seen = set()
    for model, params in aws.gaps.requests:
        request = _iam_request(model, params)
        if request is None:
            continue
        action, resource, context = request
        seen.add(action)
        if not _allowed(policy, action, resource, context):
            denied.append(f"{model.name}: {action} on {resource} {context}")
    assert denied == []
    return seen


def _full_lifecycle(aws: AwsEnv, spec: GatewaySpec) -> None:
    apply(spec, storage=aws.store, aws=aws.clients)
    changed = make_spec(
        target_base_url="https://v2.example.com/ws/",
        routes=[],
        domain=spec.domain,
        tags={"team": "x"},
        stage_variables={"b": "c"},
    )
    apply(changed, storage=aws.store, aws=aws.clients)
    destroy(changed, storage=aws.store, aws=aws.clients)


def test_deploy_policy_allows_every_call_of_a_full_lifecycle(aws: AwsEnv) -> None:
    zone = aws.client("route53").create_hosted_zone(Name="example.com", CallerReference="z")
    zone_id = zone["HostedZone"]["Id"].split("/")[-1]
    spec = make_spec(domain=domain_spec())
    aws.gaps.reset()
    _full_lifecycle(aws, spec)
    # The policy before the first apply: any API id, any zone.
    seen = _check_calls(aws, deploy_policy(spec, ACCOUNT, region=REGION))
    assert {
        "apigateway:POST",
        "apigateway:PATCH",
        "apigateway:DELETE",
        "apigateway:GET",
        "acm:RequestCertificate",
        "acm:DeleteCertificate",
        "route53:ChangeResourceRecordSets",
    } <= seen
    # The tight one: this zone only.
    _check_calls(aws, deploy_policy(spec, ACCOUNT, region=REGION, hosted_zone_id=zone_id))


def test_tight_deploy_policy_names_the_api(aws: AwsEnv) -> None:
    spec = make_spec()
    first = apply(spec, storage=aws.store, aws=aws.clients)
    aws.gaps.reset()
    apply(
        make_spec(target_base_url="https://v2.example.com/ws/"), storage=aws.store, aws=aws.clients
    )
    _check_calls(aws, deploy_policy(spec, ACCOUNT, region=REGION, api_id=first.record.api_id))
    with pytest.raises(AssertionError):
        _check_calls(aws, deploy_policy(spec, ACCOUNT, region=REGION, api_id="someotherapi"))


def test_route53_condition_rejects_other_names(aws: AwsEnv) -> None:
    policy = deploy_policy(make_spec(domain=domain_spec()), ACCOUNT, region=REGION)
    context = {
        "route53:ChangeResourceRecordSetsNormalizedRecordNames": ["www.other.com"],
        "route53:ChangeResourceRecordSetsRecordTypes": ["A"],
    }
    assert not _allowed(
        policy, "route53:ChangeResourceRecordSets", "arn:aws:route53:::hostedzone/Z1", context
    )
    context["route53:ChangeResourceRecordSetsNormalizedRecordNames"] = ["_x.ws.example.com"]
    assert _allowed(
        policy, "route53:ChangeResourceRecordSets", "arn:aws:route53:::hostedzone/Z1", context
    )
