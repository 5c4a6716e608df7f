"""``config_from_template``: the local gateway reading a CloudFormation template."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from apigw_ws_core.local import ConfigError
from apigw_ws_core.local.cli import add_arguments, build_api
from apigw_ws_core.local.template import config_from_template, load_template, parse_parameters

YAML = """
AWSTemplateFormatVersion: "2010-09-09"
Parameters:
  Secret: {Type: String, NoEcho: true}
  Base: {Type: String, Default: "https://app.example.com/ws/"}
Resources:
  Ws:
    Type: AWS::ApiGatewayV2::Api
    Properties: {Name: x, ProtocolType: WEBSOCKET, RouteSelectionExpression: $request.body.type}
  Http:
    Type: AWS::ApiGatewayV2::Api
    Properties: {Name: y, ProtocolType: HTTP}
  ChatIntegration:
    Type: AWS::ApiGatewayV2::Integration
    Properties:
      ApiId: !Ref Ws
      IntegrationType: HTTP_PROXY
      IntegrationMethod: POST
      IntegrationUri: !Join ["", [!Ref Base, "chat"]]
      TimeoutInMillis: 5000
      RequestParameters:
        integration.request.header.X-Secret: !Sub "'${Secret}'"
        integration.request.header.X-Region: !Sub "'${AWS::Region}'"
        integration.request.header.X-Api: !Sub ["'${Id}'", {Id: !GetAtt Ws.ApiId}]
        integration.request.header.X-Other: "'{{resolve:secretsmanager:other}}'"
        integration.request.header.X-Literal: !Sub "'${!NotAVariable}'"
  ChatRoute:
    Type: AWS::ApiGatewayV2::Route
    Properties:
      ApiId: !Ref Ws
      RouteKey: chat
      Target: !Sub "integrations/${ChatIntegration}"
      RouteResponseSelectionExpression: $default
  ChatResponse:
    Type: AWS::ApiGatewayV2::RouteResponse
    Properties: {ApiId: !Ref Ws, RouteId: !Ref ChatRoute, RouteResponseKey: $default}
  PlainRoute:
    Type: AWS::ApiGatewayV2::Route
    Properties:
      ApiId: !Ref Ws
      RouteKey: $default
      Target: !Join ["/", ["integrations", !Ref ChatIntegration]]
      RouteResponseSelectionExpression: $default
  Stage:
    Type: AWS::ApiGatewayV2::Stage
    Properties:
      ApiId: !Ref Ws
      StageName: beta
      StageVariables: {region: !Ref "AWS::Region"}
"""

DYNAMIC = "{{resolve:secretsmanager:other}}"


@pytest.fixture
def template(tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "t.yaml"
    path.write_text(YAML)
    return load_template(path)


def test_yaml_short_forms_and_intrinsics(template: dict[str, Any]) -> None:
    api = config_from_template(template, {"Secret": "s3cr3t", DYNAMIC: "other-value"})
    assert api.stage == "beta"
    assert dict(api.stage_variables) == {"region": "us-east-1"}
    assert api.route_selection_expression == "$request.body.type"
    chat = api.routes["chat"]
    assert chat.two_way is True  # it has a $default route response
    assert api.routes["$default"].two_way is False  # an expression alone is not enough
    assert chat.integration.uri == "https://app.example.com/ws/chat"
    assert chat.integration.timeout_ms == 5000
    assert dict(chat.integration.request_parameters) == {
        "integration.request.header.X-Secret": "'s3cr3t'",
        "integration.request.header.X-Region": "'us-east-1'",
        "integration.request.header.X-Api": f"'{api.api_id}'",
        "integration.request.header.X-Other": "'other-value'",
        "integration.request.header.X-Literal": "'${NotAVariable}'",
    }


def test_missing_values_are_clear_errors(template: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="parameter Secret has no default"):
        config_from_template(template, {DYNAMIC: "x"})
    with pytest.raises(ConfigError, match=r"dynamic reference .* cannot be resolved locally"):
        config_from_template(template, {"Secret": "x"})
    with pytest.raises(ConfigError, match="declares no parameter Nope"):
        config_from_template(template, {"Secret": "x", DYNAMIC: "y", "Nope": "z"})
    with pytest.raises(ConfigError, match="no stage 'prod'"):
        config_from_template(template, {"Secret": "x", DYNAMIC: "y"}, stage="prod")
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        parse_parameters(["novalue"])


def test_unsupported_template_content(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        '{"Resources": {"A": {"Type": "AWS::ApiGatewayV2::Api", "Properties": '
        '{"ProtocolType": "WEBSOCKET", "RouteSelectionExpression": '
        '{"Fn::If": ["c", "a", "b"]}}}}}'
    )
    with pytest.raises(ConfigError, match="Fn::If is not supported"):
        config_from_template(load_template(bad))
    none = tmp_path / "none.json"
    none.write_text('{"Resources": {}}')
    with pytest.raises(ConfigError, match="expected one WebSocket API"):
        config_from_template(load_template(none))
    with pytest.raises(ConfigError, match="not a CloudFormation template"):
        (tmp_path / "x.json").write_text("[]")
        load_template(tmp_path / "x.json")


def test_cli_flags(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(YAML)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--from-template", str(path), "--parameter", "Secret=abc", "--parameter", f"{DYNAMIC}=d"]
    )
    assert (
        build_api(args)
        .routes["chat"]
        .integration.request_parameters["integration.request.header.X-Secret"]
        == "'abc'"
    )
    with pytest.raises(ConfigError, match="--parameter only applies to --from-template"):
        build_api(parser.parse_args(["--backend", "http://x/", "--parameter", "a=b"]))
    with pytest.raises(ConfigError, match="use only one of"):
        build_api(parser.parse_args(["--backend", "http://x/", "--from-template", str(path)]))


def test_exported_authorizer_runs_with_its_python_stand_in(
    gateway_factory: Any, ws_connect: Any
) -> None:
    import json as _json

    from websockets.exceptions import InvalidStatus

    from apigw_ws_core.local.template import config_from_template as from_template
    from apigw_ws_core.provision import AuthorizerSpec, GatewaySpec
    from apigw_ws_core.provision.export import export_template, render_template

    spec = GatewaySpec(
        name="chat",
        target_base_url="https://app.example.com/ws/",
        secret="s3cret-value-0123456789",
        authorizer=AuthorizerSpec(
            function_arn="arn:aws:lambda:us-east-1:123456789012:function:auth",
            identity_sources=("route.request.querystring.token",),
        ),
    )
    template = _json.loads(render_template(export_template(spec, "cloudformation")))
    without = from_template(template, {"SharedSecret": "s3cret-value-0123456789"})
    assert without.routes["$connect"].authorizer is None  # warned, not run

    def allow(event: dict[str, Any], context: Any) -> dict[str, Any]:
        effect = "Allow" if event["queryStringParameters"]["token"] == "good" else "Deny"
        return {
            "principalId": "u",
            "policyDocument": {
                "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": "*"}]
            },
        }

    api = from_template(
        template, {"SharedSecret": "s3cret-value-0123456789"}, authorizer_handler=allow
    )
    authorizer = api.routes["$connect"].authorizer
    assert authorizer is not None
    assert authorizer.identity_sources == ("route.request.querystring.token",)
    # No backend runs here: rejections happen before the $connect integration is called.
    gw = gateway_factory(api)
    for url, status in ((gw.ws_url, 401), (f"{gw.ws_url}?token=bad", 403)):
        with pytest.raises(InvalidStatus) as info:
            ws_connect(url)
        assert info.value.response.status_code == status
