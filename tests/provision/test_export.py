"""``apigw-ws provision export``: CloudFormation, SAM and Terraform from the same spec.

Checked by real tools, not by eye: every CloudFormation and SAM template (JSON and YAML) goes
through cfn-lint (its CloudFormation resource schemas, and the SAM translator for SAM) with
every stable rule on; the Terraform JSON is checked against the AWS provider's resource schema
(``tests/provision/tf_schema.py``). What the template declares is what ``apply`` creates
(compared under moto), and an exported template runs in the local gateway with a real client.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from apigw_ws_core.local.template import config_from_template, load_template
from apigw_ws_core.provision import (
    AuthorizerSpec,
    DomainSpec,
    GatewaySpec,
    RouteSpec,
    SecretSource,
    SpecError,
    apply,
    export_template,
    render_template,
)
from apigw_ws_core.provision.export import FORMATS, parse_secret_source
from apigw_ws_core.provision.spec import request_parameters
from tests.provision.conftest import SECRET, AwsEnv, make_spec
from tests.provision.tf_schema import check_config, load_provider_schema

cfnlint_api = pytest.importorskip("cfnlint.api")
cfnlint_core = pytest.importorskip("cfnlint.core")

SECRET_HEADER_PARAM = "integration.request.header.X-Apigw-Ws-Secret"
FUNCTION = "arn:aws:lambda:us-east-1:123456789012:function:ws-auth"
AUTHORIZER = AuthorizerSpec(
    function_arn=FUNCTION,
    identity_sources=("route.request.querystring.token",),
    context_keys=("userId",),
)


@pytest.fixture(scope="module")
def cfn_rules() -> Any:
    # Every rule: errors, warnings and the informational ones too (not the experimental
    # I4010, which asks for AI-context metadata blocks).
    return cfnlint_core.get_rules([], [], ["I", "W", "E"])


def lint(text: str, rules: Any) -> list[str]:
    matches = cfnlint_api.lint(text, rules=rules, regions=["us-east-1", "eu-west-1"])
    return [f"{m.rule.id} line {m.linenumber}: {m.message}" for m in matches]


def full_spec(**overrides: Any) -> GatewaySpec:
    """Custom routes (one two-way, one one-way to its own URL, one with a slug), stage
    variables, throttling, tags, a custom domain with a requested certificate, and a Lambda
    authorizer."""
    values: dict[str, Any] = {
        "routes": [
            RouteSpec(key="chat_message"),
            RouteSpec(
                key="upload", target_url="https://files.example.com/ws/upload", two_way=False
            ),
            RouteSpec(key="chat.typing", slug="typing", two_way=False),
        ],
        "tags": {"team": "chat", "env": "test"},
        "domain": DomainSpec(name="ws.example.com", base_path="v1"),
        "authorizer": AUTHORIZER,
    }
    values.update(overrides)
    return make_spec(**values)


SPECS = {
    "full": lambda: full_spec(),
    "minimal": lambda: make_spec(routes=[], throttling=None, stage_variables={}),
    "domain-own-cert": lambda: full_spec(
        domain=DomainSpec(
            name="ws.example.com",
            certificate_arn="arn:aws:acm:us-east-1:123456789012:certificate/abc",
            hosted_zone_id="Z0123456789ABC",
        ),
        authorizer=AuthorizerSpec(
            function_arn=FUNCTION,
            credentials_arn="arn:aws:iam::123456789012:role/apigw-invoke-ws-auth",
        ),
    ),
    "domain-no-dns": lambda: full_spec(
        domain=DomainSpec(
            name="ws.example.com",
            certificate_arn="arn:aws:acm:us-east-1:123456789012:certificate/abc",
            manage_dns=False,
        )
    ),
}
SOURCES = {
    "parameter": SecretSource(),
    "secretsmanager": parse_secret_source("secretsmanager:prod/apigw-ws#secret"),
}


#: (spec, secret source, syntaxes): YAML is the same data, so it is linted once per format.
LINTED = [
    ("full", "parameter", ("json", "yaml")),
    ("full", "secretsmanager", ("json",)),
    ("minimal", "parameter", ("json",)),
    ("domain-own-cert", "parameter", ("json",)),
    ("domain-no-dns", "secretsmanager", ("yaml",)),
]


@pytest.mark.parametrize(("name", "source", "syntaxes"), LINTED)
@pytest.mark.parametrize("fmt", ["cloudformation", "sam"])
def test_cfn_lint_passes_on_every_template(
    fmt: str, name: str, source: str, syntaxes: tuple[str, ...], cfn_rules: Any
) -> None:
    template = export_template(SPECS[name](), fmt, secret=SOURCES[source])  # type: ignore[arg-type]
    for syntax in syntaxes:
        text = render_template(template, syntax)
        assert lint(text, cfn_rules) == [], f"{fmt} {syntax}:\n{text}"
        assert SECRET not in text


@pytest.mark.parametrize("fmt", ["cloudformation", "sam"])
def test_alarms_pass_cfn_lint(fmt: str, cfn_rules: Any) -> None:
    template = export_template(full_spec(), fmt, alarms=True)  # type: ignore[arg-type]
    for syntax in ("json", "yaml"):
        assert lint(render_template(template, syntax), cfn_rules) == []
    alarms = {
        k: v["Properties"]
        for k, v in template["Resources"].items()
        if v["Type"] == "AWS::CloudWatch::Alarm"
    }
    assert set(alarms) == {
        "IntegrationErrorRateAlarm",
        "ExecutionErrorsAlarm",
        "IntegrationLatencyP99Alarm",
    }
    assert alarms["IntegrationLatencyP99Alarm"]["ExtendedStatistic"] == "p99"
    assert alarms["ExecutionErrorsAlarm"]["Dimensions"] == [
        {"Name": "ApiId", "Value": {"Ref": "Api"}},
        {"Name": "Stage", "Value": "prod"},
    ]
    assert template["Parameters"]["AlarmTopicArn"]["Default"] == ""
    assert "HasAlarmTopic" in template["Conditions"]
    # The local gateway still reads the template (it ignores resources it does not run).
    local = config_from_template(template, {"SharedSecret": SECRET, "HostedZoneId": "Z1"})
    assert "chat_message" in local.routes


def test_cfn_lint_catches_what_we_would_get_wrong(cfn_rules: Any) -> None:
    """The linter really checks resource properties (so a clean run means something)."""
    template = export_template(full_spec(), "cloudformation")
    props = template["Resources"]["ChatMessageIntegration"]["Properties"]
    props["TimeoutMillis"] = props.pop("TimeoutInMillis")
    template["Resources"]["Stage"]["Properties"].pop("ApiId")
    problems = lint(render_template(template), cfn_rules)
    assert any("TimeoutMillis" in p for p in problems)
    assert any("'ApiId' is a required property" in p for p in problems)


def test_template_content_follows_the_wire_contract() -> None:
    spec = full_spec()
    template = export_template(spec, "cloudformation")
    resources = template["Resources"]
    assert template["Parameters"]["SharedSecret"]["NoEcho"] is True
    assert template["Parameters"]["TargetBaseUrl"]["Default"] == spec.target_base_url
    assert "HostedZoneId" in template["Parameters"]  # no zone id in the spec: asked at deploy
    kinds: dict[str, list[str]] = {}
    for logical, body in resources.items():
        kinds.setdefault(body["Type"], []).append(logical)
    assert len(kinds["AWS::ApiGatewayV2::Route"]) == 6
    assert len(kinds["AWS::ApiGatewayV2::Integration"]) == 6
    # Two-way: $default and chat_message only.
    response_routes = sorted(
        resources[r]["Properties"]["RouteId"]["Ref"]
        for r in kinds["AWS::ApiGatewayV2::RouteResponse"]
    )
    assert response_routes == ["ChatMessageRoute", "DefaultRoute"]
    expected = request_parameters(SECRET, AUTHORIZER)
    assert "integration.request.header.X-Apigw-Ws-Authorizer-userId" in expected
    for logical in kinds["AWS::ApiGatewayV2::Integration"]:
        params = resources[logical]["Properties"]["RequestParameters"]
        assert set(params) == set(expected)
        for key, value in expected.items():
            if key != SECRET_HEADER_PARAM:
                assert params[key] == value
        assert params[SECRET_HEADER_PARAM] == {"Fn::Sub": "'${SharedSecret}'"}
    typing = resources["ChatTypingIntegration"]["Properties"]
    assert typing["IntegrationUri"] == {"Fn::Sub": "${TargetBaseUrl}typing"}
    assert resources["UploadIntegration"]["Properties"]["IntegrationUri"] == (
        "https://files.example.com/ws/upload"
    )
    stage = resources["Stage"]["Properties"]
    assert stage["StageVariables"] == {"env": "test"}
    assert stage["DefaultRouteSettings"] == {
        "ThrottlingBurstLimit": 100,
        "ThrottlingRateLimit": 50.0,
    }
    (deployment,) = kinds["AWS::ApiGatewayV2::Deployment"]
    assert stage["DeploymentId"] == {"Ref": deployment}
    assert sorted(resources[deployment]["DependsOn"]) == sorted(
        kinds["AWS::ApiGatewayV2::Route"] + kinds["AWS::ApiGatewayV2::RouteResponse"]
    )
    cert = resources["Certificate"]["Properties"]
    assert cert["DomainValidationOptions"] == [
        {"DomainName": "ws.example.com", "HostedZoneId": {"Ref": "HostedZoneId"}}
    ]
    assert resources["ApiMapping"]["Properties"]["ApiMappingKey"] == "v1"
    assert resources["AliasRecord"]["Properties"]["Type"] == "A"
    assert template["Outputs"]["CustomDomainUrl"]["Value"] == "wss://ws.example.com/v1"
    authorizer = resources["Authorizer"]["Properties"]
    assert authorizer["AuthorizerType"] == "REQUEST"
    assert authorizer["AuthorizerUri"] == AUTHORIZER.uri
    assert authorizer["IdentitySource"] == ["route.request.querystring.token"]
    connect = resources["ConnectRoute"]["Properties"]
    assert connect["AuthorizationType"] == "CUSTOM"
    assert connect["AuthorizerId"] == {"Ref": "Authorizer"}
    assert "AuthorizationType" not in resources["DefaultRoute"]["Properties"]
    permission = resources["AuthorizerPermission"]["Properties"]
    assert permission["FunctionName"] == FUNCTION
    assert permission["Principal"] == "apigateway.amazonaws.com"
    with_role = export_template(SPECS["domain-own-cert"](), "cloudformation")["Resources"]
    assert "AuthorizerPermission" not in with_role
    assert with_role["Authorizer"]["Properties"]["AuthorizerCredentialsArn"].endswith(
        "role/apigw-invoke-ws-auth"
    )


def test_deployment_is_replaced_when_routes_change_not_otherwise() -> None:
    def deployment(spec: GatewaySpec) -> str:
        (name,) = [
            k
            for k, v in export_template(spec, "cloudformation")["Resources"].items()
            if v["Type"] == "AWS::ApiGatewayV2::Deployment"
        ]
        return name

    base = make_spec()
    assert deployment(base) == deployment(make_spec(secret="another-secret-0123456789"))
    assert deployment(base) == deployment(make_spec(stage_variables={"env": "other"}))
    assert deployment(base) != deployment(make_spec(routes=[RouteSpec(key="other")]))
    assert deployment(base) != deployment(make_spec(timeout_ms=5000))


def test_secretsmanager_source_uses_a_dynamic_reference() -> None:
    source = parse_secret_source("secretsmanager:arn:aws:secretsmanager:us-east-1:1:secret:x#k")
    assert source.secret_id == "arn:aws:secretsmanager:us-east-1:1:secret:x"
    template = export_template(make_spec(), "sam", secret=source)
    assert "SharedSecret" not in template["Parameters"]
    params = template["Resources"]["ConnectIntegration"]["Properties"]["RequestParameters"]
    assert params[SECRET_HEADER_PARAM] == (
        "'{{resolve:secretsmanager:arn:aws:secretsmanager:us-east-1:1:secret:x:SecretString:k}}'"
    )
    whole = parse_secret_source("secretsmanager:prod/secret")
    assert whole.dynamic_reference() == "{{resolve:secretsmanager:prod/secret}}"
    for bad in ("ssm:/x", "secretsmanager:", "plain", "secretsmanager:a b"):
        with pytest.raises(SpecError):
            parse_secret_source(bad)


def test_route_names_never_collide() -> None:
    spec = make_spec(
        routes=[
            RouteSpec(key="a_b"),
            RouteSpec(key="aB", slug="ab2"),
            RouteSpec(key="a.b", slug="ab3"),
        ]
    )
    cfn = export_template(spec, "cloudformation")["Resources"]
    routes = [v for v in cfn.values() if v["Type"] == "AWS::ApiGatewayV2::Route"]
    assert len(routes) == 6
    tf = export_template(spec, "terraform")["resource"]["aws_apigatewayv2_route"]
    assert len(tf) == 6
    assert check_config(export_template(spec, "terraform"), load_provider_schema()) == []


# --- Terraform -----------------------------------------------------------------------


@pytest.mark.parametrize("source", sorted(SOURCES))
@pytest.mark.parametrize("name", sorted(SPECS))
def test_terraform_matches_the_aws_provider_schema(name: str, source: str) -> None:
    provider = load_provider_schema()
    assert provider.version  # e.g. 6.62.0: the hashicorp/aws release the schema came from
    config = export_template(SPECS[name](), "terraform", secret=SOURCES[source])
    assert check_config(config, provider) == []
    text = render_template(config)
    assert SECRET not in text
    json.loads(text)


def test_terraform_alarms_match_the_schema() -> None:
    config = export_template(full_spec(), "terraform", alarms=True)
    assert check_config(config, load_provider_schema()) == []
    alarms = config["resource"]["aws_cloudwatch_metric_alarm"]
    assert set(alarms) == {"integration_error_rate", "execution_errors", "integration_latency_p99"}
    assert config["variable"]["alarm_topic_arn"]["default"] == ""


def test_terraform_content() -> None:
    config = export_template(full_spec(), "terraform")
    assert config["variable"]["shared_secret"]["sensitive"] is True
    resource = config["resource"]
    integrations = resource["aws_apigatewayv2_integration"]
    assert set(integrations) == {
        "connect",
        "disconnect",
        "default",
        "chat_message",
        "upload",
        "chat_typing",
    }
    for body in integrations.values():
        params = body["request_parameters"]
        assert params[SECRET_HEADER_PARAM] == "'${var.shared_secret}'"
        assert set(params) == set(request_parameters(SECRET, AUTHORIZER))
    assert integrations["chat_typing"]["integration_uri"] == "${var.target_base_url}typing"
    assert set(resource["aws_apigatewayv2_route_response"]) == {"default", "chat_message"}
    trigger = resource["aws_apigatewayv2_deployment"]["this"]["triggers"]["redeployment"]
    assert "aws_apigatewayv2_integration.connect" in trigger  # the secret change redeploys
    stage = resource["aws_apigatewayv2_stage"]["this"]
    assert stage["default_route_settings"] == [
        {"throttling_burst_limit": 100, "throttling_rate_limit": 50.0}
    ]
    assert set(resource["aws_route53_record"]) == {"validation", "alias"}
    assert resource["aws_apigatewayv2_route"]["connect"]["authorizer_id"] == (
        "${aws_apigatewayv2_authorizer.this.id}"
    )
    assert resource["aws_lambda_permission"]["authorizer"]["function_name"] == FUNCTION
    assert "aws_apigatewayv2_authorizer.this" in trigger
    assert config["provider"] == {"aws": {"region": "us-east-1"}}
    secret = export_template(full_spec(), "terraform", secret=SOURCES["secretsmanager"])
    assert "shared_secret" not in secret["variable"]
    assert secret["data"]["aws_secretsmanager_secret_version"]["shared_secret"] == {
        "secret_id": "prod/apigw-ws"
    }


def test_schema_checker_catches_mistakes() -> None:
    """The provider-schema check is not a rubber stamp."""
    provider = load_provider_schema()
    config = export_template(full_spec(), "terraform")
    resource = config["resource"]
    connect = resource["aws_apigatewayv2_integration"]["connect"]
    connect["timeout_ms"] = connect.pop("timeout_milliseconds")
    del resource["aws_apigatewayv2_route"]["connect"]["route_key"]
    resource["aws_apigatewayv2_stage"]["this"]["deployment_id"] = (
        "${aws_apigatewayv2_deployment.other.id}"
    )
    resource["aws_apigatewayv2_api_mapping"]["this"]["stage"] = (
        "${aws_apigatewayv2_stage.this.no_such_attribute}"
    )
    resource["aws_apigatewayv2_route"]["default"]["route_response_selection_expression"] = 3
    resource["aws_apigatewayv2_websocket"] = {"x": {}}
    problems = "\n".join(check_config(config, provider))
    assert "unknown argument or block 'timeout_ms'" in problems
    assert "required argument 'route_key' missing" in problems
    assert "undeclared 'aws_apigatewayv2_deployment.other.id'" in problems
    assert "no attribute 'no_such_attribute'" in problems
    assert "3 is not a string" in problems
    assert "'aws_apigatewayv2_websocket' is not in the AWS provider schema" in problems


# --- the command line ------------------------------------------------------------------


def run_cli(*argv: str) -> tuple[int, str, str]:
    import argparse

    from apigw_ws_core.provision_cli import add_provision_arguments, run_provision

    parser = argparse.ArgumentParser()
    add_provision_arguments(parser)
    out, err = io.StringIO(), io.StringIO()
    code = run_provision(parser.parse_args(list(argv)), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


CONFIG = """
name = "chat"
target_base_url = "https://app.example.com/ws/"
stage = "live"
[stage_variables]
env = "prod"
[throttling]
burst_limit = 50
rate_limit = 20
[[routes]]
key = "chat_message"
[[routes]]
key = "typing"
two_way = false
"""


def test_cli_exports_every_format_without_aws_or_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cfn_rules: Any
) -> None:
    monkeypatch.delenv("APIGW_WS_SECRET", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "unused")  # nothing may call AWS
    config = tmp_path / "apigw-ws.toml"
    config.write_text(CONFIG)
    for fmt in FORMATS:
        code, out, err = run_cli("export", "-c", str(config), "--format", fmt)
        assert code == 0, err
        data = json.loads(out)
        if fmt == "terraform":
            assert check_config(data, load_provider_schema()) == []
        else:
            assert lint(out, cfn_rules) == []
    target = tmp_path / "template.yaml"
    code, out, err = run_cli("export", "-c", str(config), "--format", "sam", "-o", str(target))
    assert code == 0 and out == "" and "wrote sam (yaml)" in err
    assert target.read_text().startswith("AWSTemplateFormatVersion")
    assert lint(target.read_text(), cfn_rules) == []
    code, out, err = run_cli("export", "-c", str(config), "--alarms")
    assert code == 0 and "AlarmTopicArn" in json.loads(out)["Parameters"]
    code, _, err = run_cli("export", "-c", str(config), "--format", "terraform", "--yaml")
    assert code == 1 and "Terraform is exported as JSON" in err
    code, _, err = run_cli("export", "-c", str(config), "--secret-from", "ssm:/x")
    assert code == 1 and "--secret-from" in err


# --- what is exported is what apply creates ----------------------------------------------


def _comparable(config: Any) -> dict[str, Any]:
    return {
        "stage": config.stage,
        "stage_variables": dict(config.stage_variables),
        "rse": config.route_selection_expression,
        "routes": {
            key: (
                r.integration.type,
                r.integration.method,
                r.integration.uri,
                dict(r.integration.request_parameters),
                r.integration.timeout_ms,
                r.two_way,
                None
                if r.authorizer is None
                else (r.authorizer.uri, tuple(r.authorizer.identity_sources)),
            )
            for key, r in config.routes.items()
        },
    }


def test_exported_template_declares_what_apply_creates(aws: AwsEnv) -> None:
    from apigw_ws_core.local.config import config_from_apigw

    spec = make_spec(
        routes=[
            RouteSpec(key="chat_message"),
            RouteSpec(key="typing", two_way=False),
            RouteSpec(key="upload", target_url="https://files.example.com/ws/upload"),
        ],
        stage="live",
        timeout_ms=10_000,
        authorizer=AUTHORIZER,
    )
    record = apply(spec, storage=aws.store, aws=aws.clients).record

    def authorize(event: Any, context: Any) -> dict[str, Any]:
        return {"principalId": "u1", "policyDocument": {}}

    applied = config_from_apigw(
        aws.client("apigatewayv2"), record.api_id, record.stage, authorizer_handler=authorize
    )
    template = export_template(spec, "cloudformation")
    exported = config_from_template(
        json.loads(render_template(template)),
        {"SharedSecret": SECRET},
        api_id=record.api_id,
        authorizer_handler=authorize,
    )
    assert _comparable(exported) == _comparable(applied)
    assert exported.routes["$connect"].authorizer is not None


# --- export -> cfn-lint -> apigw-ws local -> a real client ------------------------------


@attrs.define
class Served:
    app: Any
    url: str


@pytest.fixture
def served_app() -> Iterator[Served]:
    from werkzeug.serving import make_server

    from apigw_ws_core import Config, MemoryStorage, WebSocketApp
    from apigw_ws_core.wsgi import make_wsgi_app

    app = WebSocketApp(storage=MemoryStorage(), config=Config(secret=SECRET, require_token=False))

    @app.handler("chat_message")
    def chat(ctx: Any, message: dict[str, Any]) -> dict[str, Any]:
        return {"echo": message.get("text"), "stage": ctx.event.stage}

    server = make_server("127.0.0.1", 0, make_wsgi_app(app, prefix="/ws"), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Served(app=app, url=f"http://127.0.0.1:{server.port}/ws/")
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()
        app.close()


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_exported_template_runs_in_the_local_gateway(
    tmp_path: Path, served_app: Served, cfn_rules: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("aiohttp")
    from websockets.sync.client import connect

    from apigw_ws_core.local.testing import GatewayProcess, wait_until

    monkeypatch.delenv("APIGW_WS_SECRET", raising=False)
    config = tmp_path / "apigw-ws.toml"
    config.write_text(CONFIG)
    template = tmp_path / "gateway.yaml"
    code, _, err = run_cli(
        "export", "-c", str(config), "--format", "cloudformation", "-o", str(template)
    )
    assert code == 0, err
    assert lint(template.read_text(), cfn_rules) == []
    assert load_template(template)["Parameters"]["SharedSecret"]["NoEcho"] is True
    args = [
        "--from-template",
        str(template),
        "--parameter",
        f"SharedSecret={SECRET}",
        "--parameter",
        f"TargetBaseUrl={served_app.url}",
        "--port",
        "0",
        "--log-level",
        "warning",
    ]
    with GatewayProcess(args) as gateway:
        assert gateway.ws_url.endswith("/live")
        with connect(gateway.ws_url, open_timeout=20) as ws:
            (cid,) = wait_until(gateway.connection_ids, timeout=10)
            session = wait_until(lambda: served_app.app.storage.get_session(cid), timeout=10)
            assert session.connected
            ws.send(json.dumps({"action": "chat_message", "text": "hi"}))
            assert json.loads(ws.recv(timeout=10)) == {"echo": "hi", "stage": "live"}
            ws.send(json.dumps({"action": "typing"}))  # one-way: no reply, no handler
            ws.send(json.dumps({"action": "chat_message", "text": "again"}))
            assert json.loads(ws.recv(timeout=10))["echo"] == "again"
        wait_until(lambda: not served_app.app.storage.get_session(cid).connected, timeout=10)
