"""Exporting a :class:`~apigw_ws_core.provision.spec.GatewaySpec` as infrastructure code.

``apply`` makes AWS match a spec with boto3 calls; teams that ship infrastructure as reviewed
code get the same gateway as a CloudFormation template, a SAM template or a Terraform JSON
configuration instead (:func:`export_template`, :func:`render_template`). Every format holds
the same resources ``apply`` creates: the WebSocket API, one ``HTTP_PROXY`` integration per
route with every wire-contract request parameter mapping, the routes, a ``$default`` route
response on two-way routes, a deployment and the stage (variables, throttling), and the
custom domain with its certificate, DNS validation and alias record.

The shared secret is never written into the output. It comes from a template parameter
(CloudFormation/SAM: ``NoEcho``; Terraform: a ``sensitive`` variable) or from AWS Secrets
Manager (a ``{{resolve:secretsmanager:...}}`` dynamic reference; Terraform: a
``aws_secretsmanager_secret_version`` data source). See :class:`SecretSource`.

The backend base URL is a parameter too (``TargetBaseUrl`` / ``target_base_url``, defaulting
to the spec's ``target_base_url``), so one template serves several environments and the local
gateway can run it against a development server (``apigw-ws local --from-template``).
Nothing here talks to AWS; the functions are pure.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any, Literal

import attrs

from apigw_ws_core.provision.errors import SpecError
from apigw_ws_core.provision.plan import (
    deploy_hash,
    desired_authorizer,
    integration_description,
    throttle_settings,
)
from apigw_ws_core.provision.spec import (
    PREDEFINED_ROUTES,
    SECRET_HEADER,
    GatewaySpec,
    RouteSpec,
    request_parameters,
)

__all__ = [
    "ALARMS",
    "FORMATS",
    "SYNTAXES",
    "ExportFormat",
    "SecretSource",
    "export_template",
    "parse_secret_source",
    "render_template",
]

ExportFormat = Literal["cloudformation", "sam", "terraform"]
#: The formats :func:`export_template` writes.
FORMATS: tuple[ExportFormat, ...] = ("cloudformation", "sam", "terraform")
#: The text syntaxes :func:`render_template` writes (YAML for CloudFormation and SAM only).
SYNTAXES = ("json", "yaml")

#: CloudFormation/SAM parameter names (Terraform uses the snake_case variable names).
SECRET_PARAMETER = "SharedSecret"
TARGET_PARAMETER = "TargetBaseUrl"
ZONE_PARAMETER = "HostedZoneId"
ALARM_TOPIC_PARAMETER = "AlarmTopicArn"

SAM_TRANSFORM = "AWS::Serverless-2016-10-31"

#: The request parameter carrying the secret header.
SECRET_TARGET = f"integration.request.header.{SECRET_HEADER}"
_SECRET_PATTERN = "^[A-Za-z0-9_.~+/=-]{16,256}$"
_SECRET_ID_RE = re.compile(r"\A[A-Za-z0-9/_+=.@:-]{1,2048}\Z")
_JSON_KEY_RE = re.compile(r"\A[A-Za-z0-9_.-]{1,256}\Z")
_SECRET_HINT = (
    "16-256 characters from A-Z a-z 0-9 _ . ~ + / = - (the value of the app's secret setting)"
)


@attrs.frozen(kw_only=True)
class SecretSource:
    """Where the exported infrastructure takes the shared secret from.

    ``kind="parameter"`` (the default): a ``NoEcho`` template parameter ``SharedSecret``
    (Terraform: the ``sensitive`` variable ``shared_secret``), given at deploy time.
    ``kind="secretsmanager"``: the secret ``secret_id`` (name or ARN) in AWS Secrets Manager;
    its whole ``SecretString``, or the field ``json_key`` of a JSON ``SecretString``.
    """

    kind: Literal["parameter", "secretsmanager"] = "parameter"
    secret_id: str = ""
    json_key: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.kind == "parameter":
            if self.secret_id or self.json_key:
                raise SpecError("a parameter secret source takes no secret id or key")
            return
        if not _SECRET_ID_RE.match(self.secret_id):
            raise SpecError(f"Secrets Manager secret id {self.secret_id!r} is not valid")
        if self.json_key is not None and not _JSON_KEY_RE.match(self.json_key):
            raise SpecError(f"Secrets Manager JSON key {self.json_key!r} is not valid")

    def dynamic_reference(self) -> str:
        """The CloudFormation dynamic reference reading the secret (``secretsmanager`` only)."""
        if self.json_key is None:
            return f"{{{{resolve:secretsmanager:{self.secret_id}}}}}"
        return f"{{{{resolve:secretsmanager:{self.secret_id}:SecretString:{self.json_key}}}}}"


def parse_secret_source(text: str) -> SecretSource:
    """Parse ``parameter`` or ``secretsmanager:SECRET_ID[#JSON_KEY]`` (the CLI's
    ``--secret-from``)."""
    if text == "parameter":
        return SecretSource()
    kind, sep, rest = text.partition(":")
    if kind != "secretsmanager" or not sep:
        raise SpecError(
            f"--secret-from {text!r}: use 'parameter' or 'secretsmanager:SECRET_ID[#JSON_KEY]'"
        )
    secret_id, _, key = rest.partition("#")
    return SecretSource(kind="secretsmanager", secret_id=secret_id, json_key=key or None)


# --- names -----------------------------------------------------------------------------


def _short_hash(text: str, length: int = 6) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _camel(key: str) -> str:
    """``"chat_message"`` -> ``"ChatMessage"``; ``"$connect"`` -> ``"Connect"``."""
    parts = [p for p in re.split(r"[^A-Za-z0-9]+", key) if p]
    return "".join(p[:1].upper() + p[1:] for p in parts) or "Route"


def _snake(key: str) -> str:
    """``"$connect"`` -> ``"connect"``; ``"chat.message"`` -> ``"chat_message"``."""
    name = re.sub(r"[^A-Za-z0-9]+", "_", key).strip("_").lower() or "route"
    return f"r_{name}" if name[0].isdigit() else name


def _unique_names(keys: list[str], make: Any) -> dict[str, str]:
    """One name per route key; names that would collide get a short hash of their key."""
    names = {key: make(key) for key in keys}
    seen: dict[str, int] = {}
    for name in names.values():
        seen[name.lower()] = seen.get(name.lower(), 0) + 1
    sep = "" if all(n[:1].isupper() for n in names.values()) else "_"
    for key, name in names.items():
        if seen[name.lower()] > 1:
            names[key] = f"{name}{sep}{_short_hash(key)}"
    return names


def _route_uri_suffix(spec: GatewaySpec, route_key: str) -> str | None:
    """The slug a route posts to under the base URL, or ``None`` for an explicit target URL."""
    given = next((r for r in spec.routes if r.key == route_key), None) or RouteSpec(key=route_key)
    if given.target_url is not None:
        return None
    if given.slug is not None:
        return given.slug
    return PREDEFINED_ROUTES.get(route_key, route_key)


def _secret_parameters_without_secret(spec: GatewaySpec) -> dict[str, str]:
    params = dict(request_parameters(spec.secret, spec.authorizer))
    del params[SECRET_TARGET]
    return dict(sorted(params.items()))


def _export_deploy_hash(spec: GatewaySpec) -> str:
    """What a deployment freezes, minus the secret (the template does not know it)."""
    return deploy_hash(attrs.evolve(spec, secret="0" * 32))


# --- CloudFormation and SAM ------------------------------------------------------------


def _cfn_tags_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def _cfn_template(
    spec: GatewaySpec, secret: SecretSource, *, sam: bool, alarms: bool = False
) -> dict[str, Any]:
    routes = spec.resolved_routes()
    names = _unique_names([r.key for r in routes], _camel)
    params: dict[str, Any] = {}
    if secret.kind == "parameter":
        params[SECRET_PARAMETER] = {
            "Type": "String",
            "NoEcho": True,
            "MinLength": 16,
            "MaxLength": 256,
            "AllowedPattern": _SECRET_PATTERN,
            "ConstraintDescription": _SECRET_HINT,
            "Description": f"Shared secret API Gateway sends as {SECRET_HEADER}: "
            "the same value as the app's secret setting",
        }
        secret_value: Any = {"Fn::Sub": f"'${{{SECRET_PARAMETER}}}'"}
    else:
        secret_value = f"'{secret.dynamic_reference()}'"
    params[TARGET_PARAMETER] = {
        "Type": "String",
        "Default": spec.target_base_url,
        "AllowedPattern": "^https?://\\S+/$",
        "ConstraintDescription": "an absolute http(s) URL ending with /",
        "Description": "Base URL of the app's gateway endpoints: each route posts to it "
        "plus the route's slug (connect, disconnect, default, <route>)",
    }
    tags = dict(sorted(spec.tags.items()))
    resources: dict[str, Any] = {}
    api_props: dict[str, Any] = {
        "Name": spec.effective_api_name,
        "ProtocolType": "WEBSOCKET",
        "RouteSelectionExpression": spec.route_selection_expression,
        "Description": spec.description,
    }
    if tags:
        api_props["Tags"] = tags
    resources["Api"] = {"Type": "AWS::ApiGatewayV2::Api", "Properties": api_props}
    auth = spec.authorizer
    auth_wanted = desired_authorizer(spec)
    if auth is not None and auth_wanted is not None:
        resources["Authorizer"] = {
            "Type": "AWS::ApiGatewayV2::Authorizer",
            "Properties": {"ApiId": {"Ref": "Api"}, **auth_wanted},
        }
        if not auth.credentials_arn:
            # Without a role to assume, API Gateway needs the function's permission to call it.
            resources["AuthorizerPermission"] = {
                "Type": "AWS::Lambda::Permission",
                "Properties": {
                    "Action": "lambda:InvokeFunction",
                    "FunctionName": auth.function_arn,
                    "Principal": "apigateway.amazonaws.com",
                    "SourceArn": {
                        "Fn::Sub": "arn:${AWS::Partition}:execute-api:${AWS::Region}:"
                        "${AWS::AccountId}:${Api}/authorizers/${Authorizer}"
                    },
                },
            }
    route_ids: list[str] = []
    for route in routes:
        name = names[route.key]
        suffix = _route_uri_suffix(spec, route.key)
        uri: Any = route.uri if suffix is None else {"Fn::Sub": f"${{{TARGET_PARAMETER}}}{suffix}"}
        request_params: dict[str, Any] = _secret_parameters_without_secret(spec)
        request_params[SECRET_TARGET] = secret_value
        resources[f"{name}Integration"] = {
            "Type": "AWS::ApiGatewayV2::Integration",
            "Properties": {
                "ApiId": {"Ref": "Api"},
                "IntegrationType": "HTTP_PROXY",
                "IntegrationMethod": "POST",
                "IntegrationUri": uri,
                "RequestParameters": request_params,
                "TimeoutInMillis": spec.timeout_ms,
                "Description": integration_description(spec, route.key),
            },
        }
        route_props: dict[str, Any] = {
            "ApiId": {"Ref": "Api"},
            "RouteKey": route.key,
            "Target": {"Fn::Sub": f"integrations/${{{name}Integration}}"},
        }
        if route.two_way:
            route_props["RouteResponseSelectionExpression"] = "$default"
        if auth is not None and route.key == "$connect":
            route_props["AuthorizationType"] = "CUSTOM"
            route_props["AuthorizerId"] = {"Ref": "Authorizer"}
        resources[f"{name}Route"] = {"Type": "AWS::ApiGatewayV2::Route", "Properties": route_props}
        route_ids.append(f"{name}Route")
        if route.two_way:
            resources[f"{name}RouteResponse"] = {
                "Type": "AWS::ApiGatewayV2::RouteResponse",
                "Properties": {
                    "ApiId": {"Ref": "Api"},
                    "RouteId": {"Ref": f"{name}Route"},
                    "RouteResponseKey": "$default",
                },
            }
            route_ids.append(f"{name}RouteResponse")
    # A deployment freezes routes and integrations; its logical id carries a hash of them, so
    # a changed spec makes CloudFormation create a new deployment (and point the stage at it).
    digest = _export_deploy_hash(spec)[:10]
    deployment = f"Deployment{digest}"
    resources[deployment] = {
        "Type": "AWS::ApiGatewayV2::Deployment",
        "DependsOn": route_ids,
        "Properties": {"ApiId": {"Ref": "Api"}, "Description": f"apigw-ws {spec.name} {digest}"},
    }
    stage_props: dict[str, Any] = {
        "ApiId": {"Ref": "Api"},
        "StageName": spec.stage,
        "DeploymentId": {"Ref": deployment},
        "Description": f"apigw-ws {spec.name}",
    }
    if spec.stage_variables:
        stage_props["StageVariables"] = dict(sorted(spec.stage_variables.items()))
    settings = throttle_settings(spec)
    if settings:
        stage_props["DefaultRouteSettings"] = settings
    if tags:
        stage_props["Tags"] = tags
    resources["Stage"] = {"Type": "AWS::ApiGatewayV2::Stage", "Properties": stage_props}
    outputs: dict[str, Any] = {
        "ApiId": {"Description": "The WebSocket API's id", "Value": {"Ref": "Api"}},
        "WebSocketUrl": {
            "Description": "What clients connect to",
            "Value": {
                "Fn::Sub": f"wss://${{Api}}.execute-api.${{AWS::Region}}.amazonaws.com/{spec.stage}"
            },
        },
        "ManagementEndpoint": {
            "Description": "The app's management_endpoint setting (@connections API)",
            "Value": {
                "Fn::Sub": f"https://${{Api}}.execute-api.${{AWS::Region}}.amazonaws.com/{spec.stage}"
            },
        },
    }
    if spec.domain is not None:
        _cfn_domain(spec, params, resources, outputs)
    conditions = _cfn_alarms(spec, params, resources) if alarms else {}
    template: dict[str, Any] = {"AWSTemplateFormatVersion": "2010-09-09"}
    if sam:
        template["Transform"] = SAM_TRANSFORM
    template["Description"] = (
        f"apigw-ws gateway {spec.name}: WebSocket API {spec.effective_api_name}"
    )
    template["Parameters"] = params
    if conditions:
        template["Conditions"] = conditions
    template["Resources"] = resources
    template["Outputs"] = outputs
    return template


#: The alarms ``--alarms`` adds: (name, what it watches, metric math or metric, threshold).
#: IntegrationError counts calls your app answered 4xx/5xx or did not answer in time (a
#: rejected ``$connect`` included); ExecutionError calls API Gateway could not make at all.
ALARMS = (
    ("IntegrationErrorRate", "more than 5 % of calls to the app failed (5 minutes)"),
    ("ExecutionErrors", "API Gateway could not call the app (any, 5 minutes)"),
    ("IntegrationLatencyP99", "p99 of the app's answer time above 2 s (3 x 5 minutes)"),
)


#: Failed calls in percent of all calls (messages and connects) over the period.
_RATE_EXPRESSION = "IF(messages + connects > 0, 100 * FILL(errors, 0) / (messages + connects), 0)"


def _cfn_alarms(
    spec: GatewaySpec, params: dict[str, Any], resources: dict[str, Any]
) -> dict[str, Any]:
    """Add the :data:`ALARMS`; returns the template's ``Conditions``."""
    params[ALARM_TOPIC_PARAMETER] = {
        "Type": "String",
        "Default": "",
        "Description": "SNS topic ARN the alarms notify (empty: alarms without actions)",
    }
    conditions = {
        "HasAlarmTopic": {"Fn::Not": [{"Fn::Equals": [{"Ref": ALARM_TOPIC_PARAMETER}, ""]}]}
    }
    actions = {
        "Fn::If": ["HasAlarmTopic", [{"Ref": ALARM_TOPIC_PARAMETER}], {"Ref": "AWS::NoValue"}]
    }
    dimensions = [
        {"Name": "ApiId", "Value": {"Ref": "Api"}},
        {"Name": "Stage", "Value": spec.stage},
    ]

    def metric(name: str, stat: str, id_: str) -> dict[str, Any]:
        return {
            "Id": id_,
            "ReturnData": False,
            "MetricStat": {
                "Metric": {
                    "Namespace": "AWS/ApiGateway",
                    "MetricName": name,
                    "Dimensions": dimensions,
                },
                "Period": 300,
                "Stat": stat,
            },
        }

    common: dict[str, Any] = {"AlarmActions": actions, "OKActions": actions}
    descriptions = dict(ALARMS)
    resources["IntegrationErrorRateAlarm"] = {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            **common,
            "AlarmDescription": f"apigw-ws {spec.name}: {descriptions['IntegrationErrorRate']}",
            "ComparisonOperator": "GreaterThanThreshold",
            "EvaluationPeriods": 1,
            "Threshold": 5,
            "TreatMissingData": "notBreaching",
            "Metrics": [
                metric("IntegrationError", "Sum", "errors"),
                metric("MessageCount", "Sum", "messages"),
                metric("ConnectCount", "Sum", "connects"),
                {
                    "Id": "rate",
                    "Label": "failed calls, %",
                    "Expression": _RATE_EXPRESSION,
                    "ReturnData": True,
                },
            ],
        },
    }
    resources["ExecutionErrorsAlarm"] = {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            **common,
            "AlarmDescription": f"apigw-ws {spec.name}: {descriptions['ExecutionErrors']}",
            "Namespace": "AWS/ApiGateway",
            "MetricName": "ExecutionError",
            "Dimensions": dimensions,
            "Statistic": "Sum",
            "Period": 300,
            "EvaluationPeriods": 1,
            "Threshold": 0,
            "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching",
        },
    }
    resources["IntegrationLatencyP99Alarm"] = {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            **common,
            "AlarmDescription": f"apigw-ws {spec.name}: {descriptions['IntegrationLatencyP99']}",
            "Namespace": "AWS/ApiGateway",
            "MetricName": "IntegrationLatency",
            "Dimensions": dimensions,
            "ExtendedStatistic": "p99",
            "Period": 300,
            "EvaluationPeriods": 3,
            "Threshold": 2000,
            "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching",
        },
    }
    return conditions


def _cfn_domain(
    spec: GatewaySpec, params: dict[str, Any], resources: dict[str, Any], outputs: dict[str, Any]
) -> None:
    dom = spec.domain
    assert dom is not None
    zone: Any = None
    if dom.manage_dns:
        if dom.hosted_zone_id:
            zone = dom.hosted_zone_id
        else:
            params[ZONE_PARAMETER] = {
                "Type": "AWS::Route53::HostedZone::Id",
                "Description": f"Route 53 hosted zone holding {dom.name}",
            }
            zone = {"Ref": ZONE_PARAMETER}
    cert: Any = dom.certificate_arn
    if dom.request_certificate:
        cert_props: dict[str, Any] = {
            "DomainName": dom.name,
            "ValidationMethod": "DNS",
            # With the hosted zone given, CloudFormation writes the validation CNAME itself.
            "DomainValidationOptions": [{"DomainName": dom.name, "HostedZoneId": zone}],
        }
        if spec.tags:
            cert_props["Tags"] = _cfn_tags_list(spec.tags)
        resources["Certificate"] = {
            "Type": "AWS::CertificateManager::Certificate",
            "Properties": cert_props,
        }
        cert = {"Ref": "Certificate"}
    domain_props: dict[str, Any] = {
        "DomainName": dom.name,
        "DomainNameConfigurations": [
            {"CertificateArn": cert, "EndpointType": "REGIONAL", "SecurityPolicy": "TLS_1_2"}
        ],
    }
    if spec.tags:
        domain_props["Tags"] = dict(sorted(spec.tags.items()))
    resources["DomainName"] = {"Type": "AWS::ApiGatewayV2::DomainName", "Properties": domain_props}
    mapping_props: dict[str, Any] = {
        "ApiId": {"Ref": "Api"},
        "DomainName": {"Ref": "DomainName"},
        "Stage": {"Ref": "Stage"},
    }
    if dom.base_path:
        mapping_props["ApiMappingKey"] = dom.base_path
    resources["ApiMapping"] = {"Type": "AWS::ApiGatewayV2::ApiMapping", "Properties": mapping_props}
    if dom.manage_dns:
        resources["AliasRecord"] = {
            "Type": "AWS::Route53::RecordSet",
            "Properties": {
                "HostedZoneId": zone,
                "Name": f"{dom.name}.",
                "Type": "A",
                "AliasTarget": {
                    "DNSName": {"Fn::GetAtt": ["DomainName", "RegionalDomainName"]},
                    "HostedZoneId": {"Fn::GetAtt": ["DomainName", "RegionalHostedZoneId"]},
                    "EvaluateTargetHealth": False,
                },
            },
        }
    path = f"/{dom.base_path}" if dom.base_path else "/"
    outputs["CustomDomainUrl"] = {
        "Description": "The WebSocket URL on the custom domain",
        "Value": f"wss://{dom.name}{path}",
    }


# --- Terraform -------------------------------------------------------------------------


def _tf(ref: str) -> str:
    return f"${{{ref}}}"


def _tf_alarms(spec: GatewaySpec, variables: dict[str, Any], resource: dict[str, Any]) -> None:
    variables["alarm_topic_arn"] = {
        "type": "string",
        "default": "",
        "description": "SNS topic ARN the alarms notify (empty: alarms without actions)",
    }
    actions = '${var.alarm_topic_arn == "" ? [] : [var.alarm_topic_arn]}'
    dimensions = {"ApiId": _tf("aws_apigatewayv2_api.this.id"), "Stage": spec.stage}
    descriptions = dict(ALARMS)

    def query(id_: str, name: str) -> dict[str, Any]:
        return {
            "id": id_,
            "return_data": False,
            "metric": [
                {
                    "namespace": "AWS/ApiGateway",
                    "metric_name": name,
                    "dimensions": dimensions,
                    "period": 300,
                    "stat": "Sum",
                }
            ],
        }

    common: dict[str, Any] = {
        "alarm_actions": actions,
        "ok_actions": actions,
        "treat_missing_data": "notBreaching",
        "comparison_operator": "GreaterThanThreshold",
    }
    resource["aws_cloudwatch_metric_alarm"] = {
        "integration_error_rate": {
            **common,
            "alarm_name": f"apigw-ws-{spec.name}-integration-error-rate",
            "alarm_description": descriptions["IntegrationErrorRate"],
            "evaluation_periods": 1,
            "threshold": 5,
            "metric_query": [
                query("errors", "IntegrationError"),
                query("messages", "MessageCount"),
                query("connects", "ConnectCount"),
                {
                    "id": "rate",
                    "label": "failed calls, %",
                    "expression": _RATE_EXPRESSION,
                    "return_data": True,
                },
            ],
        },
        "execution_errors": {
            **common,
            "alarm_name": f"apigw-ws-{spec.name}-execution-errors",
            "alarm_description": descriptions["ExecutionErrors"],
            "namespace": "AWS/ApiGateway",
            "metric_name": "ExecutionError",
            "dimensions": dimensions,
            "statistic": "Sum",
            "period": 300,
            "evaluation_periods": 1,
            "threshold": 0,
        },
        "integration_latency_p99": {
            **common,
            "alarm_name": f"apigw-ws-{spec.name}-integration-latency-p99",
            "alarm_description": descriptions["IntegrationLatencyP99"],
            "namespace": "AWS/ApiGateway",
            "metric_name": "IntegrationLatency",
            "dimensions": dimensions,
            "extended_statistic": "p99",
            "period": 300,
            "evaluation_periods": 3,
            "threshold": 2000,
        },
    }


def _terraform(spec: GatewaySpec, secret: SecretSource, *, alarms: bool = False) -> dict[str, Any]:
    routes = spec.resolved_routes()
    names = _unique_names([r.key for r in routes], _snake)
    variables: dict[str, Any] = {}
    data: dict[str, Any] = {}
    if secret.kind == "parameter":
        variables["shared_secret"] = {
            "type": "string",
            "sensitive": True,
            "description": f"Shared secret API Gateway sends as {SECRET_HEADER}: the same "
            "value as the app's secret setting",
            "validation": [
                {
                    "condition": f'${{can(regex("{_SECRET_PATTERN}", var.shared_secret))}}',
                    "error_message": f"The shared secret must be {_SECRET_HINT}.",
                }
            ],
        }
        secret_expr = "var.shared_secret"
    else:
        data["aws_secretsmanager_secret_version"] = {
            "shared_secret": {"secret_id": secret.secret_id}
        }
        raw = "data.aws_secretsmanager_secret_version.shared_secret.secret_string"
        secret_expr = raw if secret.json_key is None else f'jsondecode({raw})["{secret.json_key}"]'
    variables["target_base_url"] = {
        "type": "string",
        "default": spec.target_base_url,
        "description": "Base URL of the app's gateway endpoints: each route posts to it plus "
        "the route's slug (connect, disconnect, default, <route>)",
    }
    tags = dict(sorted(spec.tags.items()))
    api: dict[str, Any] = {
        "name": spec.effective_api_name,
        "protocol_type": "WEBSOCKET",
        "route_selection_expression": spec.route_selection_expression,
        "description": spec.description,
    }
    if tags:
        api["tags"] = tags
    auth = spec.authorizer
    tf_auth: dict[str, Any] = {}
    permission: dict[str, Any] = {}
    if auth is not None:
        tf_auth = {
            "api_id": _tf("aws_apigatewayv2_api.this.id"),
            "name": auth.name,
            "authorizer_type": "REQUEST",
            "authorizer_uri": auth.uri,
            "identity_sources": list(auth.identity_sources),
        }
        if auth.credentials_arn:
            tf_auth["authorizer_credentials_arn"] = auth.credentials_arn
        else:
            permission = {
                "action": "lambda:InvokeFunction",
                "function_name": auth.function_arn,
                "principal": "apigateway.amazonaws.com",
                "source_arn": "${aws_apigatewayv2_api.this.execution_arn}/authorizers/"
                "${aws_apigatewayv2_authorizer.this.id}",
            }
    integrations: dict[str, Any] = {}
    tf_routes: dict[str, Any] = {}
    responses: dict[str, Any] = {}
    for route in routes:
        name = names[route.key]
        suffix = _route_uri_suffix(spec, route.key)
        uri = route.uri if suffix is None else f"${{var.target_base_url}}{suffix}"
        request_params: dict[str, str] = _secret_parameters_without_secret(spec)
        request_params[SECRET_TARGET] = f"'${{{secret_expr}}}'"
        integrations[name] = {
            "api_id": _tf("aws_apigatewayv2_api.this.id"),
            "integration_type": "HTTP_PROXY",
            "integration_method": "POST",
            "integration_uri": uri,
            "request_parameters": request_params,
            "timeout_milliseconds": spec.timeout_ms,
            "description": integration_description(spec, route.key),
        }
        tf_route: dict[str, Any] = {
            "api_id": _tf("aws_apigatewayv2_api.this.id"),
            "route_key": route.key,
            "target": f"integrations/${{aws_apigatewayv2_integration.{name}.id}}",
        }
        if auth is not None and route.key == "$connect":
            tf_route["authorization_type"] = "CUSTOM"
            tf_route["authorizer_id"] = _tf("aws_apigatewayv2_authorizer.this.id")
        if route.two_way:
            tf_route["route_response_selection_expression"] = "$default"
            responses[name] = {
                "api_id": _tf("aws_apigatewayv2_api.this.id"),
                "route_id": _tf(f"aws_apigatewayv2_route.{name}.id"),
                "route_response_key": "$default",
            }
        tf_routes[name] = tf_route
    frozen = ["aws_apigatewayv2_authorizer.this"] if tf_auth else []
    frozen += [f"aws_apigatewayv2_integration.{n}" for n in integrations]
    frozen += [f"aws_apigatewayv2_route.{n}" for n in tf_routes]
    frozen += [f"aws_apigatewayv2_route_response.{n}" for n in responses]
    resource: dict[str, Any] = {"aws_apigatewayv2_api": {"this": api}}
    if tf_auth:
        resource["aws_apigatewayv2_authorizer"] = {"this": tf_auth}
    if permission:
        resource["aws_lambda_permission"] = {"authorizer": permission}
    resource["aws_apigatewayv2_integration"] = integrations
    resource["aws_apigatewayv2_route"] = tf_routes
    if responses:
        resource["aws_apigatewayv2_route_response"] = responses
    resource["aws_apigatewayv2_deployment"] = {
        "this": {
            "api_id": _tf("aws_apigatewayv2_api.this.id"),
            "description": f"apigw-ws {spec.name}",
            # Any change to what a deployment freezes (the secret included) redeploys.
            "triggers": {"redeployment": f"${{sha1(jsonencode([{', '.join(frozen)}]))}}"},
            "depends_on": frozen,
            "lifecycle": [{"create_before_destroy": True}],
        }
    }
    stage: dict[str, Any] = {
        "api_id": _tf("aws_apigatewayv2_api.this.id"),
        "name": spec.stage,
        "deployment_id": _tf("aws_apigatewayv2_deployment.this.id"),
        "description": f"apigw-ws {spec.name}",
    }
    if spec.stage_variables:
        stage["stage_variables"] = dict(sorted(spec.stage_variables.items()))
    settings = throttle_settings(spec)
    if settings:
        stage["default_route_settings"] = [
            {
                {"ThrottlingBurstLimit": "throttling_burst_limit"}.get(
                    k, "throttling_rate_limit"
                ): v
                for k, v in settings.items()
            }
        ]
    if tags:
        stage["tags"] = tags
    resource["aws_apigatewayv2_stage"] = {"this": stage}
    outputs: dict[str, Any] = {
        "api_id": {
            "description": "The WebSocket API's id",
            "value": _tf("aws_apigatewayv2_api.this.id"),
        },
        "websocket_url": {
            "description": "What clients connect to",
            "value": _tf("aws_apigatewayv2_stage.this.invoke_url"),
        },
        "management_endpoint": {
            "description": "The app's management_endpoint setting (@connections API)",
            "value": '${replace(aws_apigatewayv2_stage.this.invoke_url, "wss://", "https://")}',
        },
    }
    if spec.domain is not None:
        _tf_domain(spec, variables, resource, outputs)
    if alarms:
        _tf_alarms(spec, variables, resource)
    config: dict[str, Any] = {
        "//": f"apigw-ws gateway {spec.name}: WebSocket API {spec.effective_api_name} "
        "(generated by apigw-ws provision export)",
        "terraform": {
            "required_version": ">= 1.3.0",
            "required_providers": {"aws": {"source": "hashicorp/aws", "version": ">= 5.0"}},
        },
    }
    if spec.region:
        config["provider"] = {"aws": {"region": spec.region}}
    config["variable"] = variables
    if data:
        config["data"] = data
    config["resource"] = resource
    config["output"] = outputs
    return config


def _tf_domain(
    spec: GatewaySpec,
    variables: dict[str, Any],
    resource: dict[str, Any],
    outputs: dict[str, Any],
) -> None:
    dom = spec.domain
    assert dom is not None
    tags = dict(sorted(spec.tags.items()))
    if dom.manage_dns:
        zone_var: dict[str, Any] = {
            "type": "string",
            "description": f"Route 53 hosted zone holding {dom.name}",
        }
        if dom.hosted_zone_id:
            zone_var["default"] = dom.hosted_zone_id
        variables["hosted_zone_id"] = zone_var
    records: dict[str, Any] = {}
    cert_arn = dom.certificate_arn or ""
    if dom.request_certificate:
        cert: dict[str, Any] = {
            "domain_name": dom.name,
            "validation_method": "DNS",
            "lifecycle": [{"create_before_destroy": True}],
        }
        if tags:
            cert["tags"] = tags
        resource["aws_acm_certificate"] = {"this": cert}
        records["validation"] = {
            "for_each": "${{for dvo in aws_acm_certificate.this.domain_validation_options : "
            "dvo.domain_name => {name = dvo.resource_record_name, "
            "record = dvo.resource_record_value, type = dvo.resource_record_type}}}",
            "zone_id": "${var.hosted_zone_id}",
            "name": "${each.value.name}",
            "type": "${each.value.type}",
            "records": ["${each.value.record}"],
            "ttl": 300,
            "allow_overwrite": True,
        }
        resource["aws_acm_certificate_validation"] = {
            "this": {
                "certificate_arn": _tf("aws_acm_certificate.this.arn"),
                "validation_record_fqdns": "${[for record in aws_route53_record.validation : "
                "record.fqdn]}",
            }
        }
        cert_arn = _tf("aws_acm_certificate_validation.this.certificate_arn")
    domain: dict[str, Any] = {
        "domain_name": dom.name,
        "domain_name_configuration": [
            {"certificate_arn": cert_arn, "endpoint_type": "REGIONAL", "security_policy": "TLS_1_2"}
        ],
    }
    if tags:
        domain["tags"] = tags
    resource["aws_apigatewayv2_domain_name"] = {"this": domain}
    mapping: dict[str, Any] = {
        "api_id": _tf("aws_apigatewayv2_api.this.id"),
        "domain_name": _tf("aws_apigatewayv2_domain_name.this.id"),
        "stage": _tf("aws_apigatewayv2_stage.this.id"),
    }
    if dom.base_path:
        mapping["api_mapping_key"] = dom.base_path
    resource["aws_apigatewayv2_api_mapping"] = {"this": mapping}
    if dom.manage_dns:
        target = "aws_apigatewayv2_domain_name.this.domain_name_configuration[0]"
        records["alias"] = {
            "zone_id": "${var.hosted_zone_id}",
            "name": dom.name,
            "type": "A",
            "alias": [
                {
                    "name": _tf(f"{target}.target_domain_name"),
                    "zone_id": _tf(f"{target}.hosted_zone_id"),
                    "evaluate_target_health": False,
                }
            ],
        }
    if records:
        resource["aws_route53_record"] = records
    path = f"/{dom.base_path}" if dom.base_path else "/"
    outputs["custom_domain_url"] = {
        "description": "The WebSocket URL on the custom domain",
        "value": f"wss://{dom.name}{path}",
    }


# --- entry points ----------------------------------------------------------------------


def export_template(
    spec: GatewaySpec,
    format: ExportFormat,
    *,
    secret: SecretSource | None = None,
    alarms: bool = False,
) -> dict[str, Any]:
    """The spec as infrastructure code: a CloudFormation or SAM template, or a Terraform JSON
    configuration, as plain JSON-able data. The spec's secret is not used (see
    :class:`SecretSource` for where the deployed gateway takes it from). With ``alarms``,
    CloudWatch alarms on the stage's API Gateway metrics are added (:data:`ALARMS`), notifying
    the SNS topic given at deploy time (``AlarmTopicArn`` / ``alarm_topic_arn``)."""
    source = secret or SecretSource()
    if format == "cloudformation":
        return _cfn_template(spec, source, sam=False, alarms=alarms)
    if format == "sam":
        return _cfn_template(spec, source, sam=True, alarms=alarms)
    if format == "terraform":
        return _terraform(spec, source, alarms=alarms)
    raise SpecError(f"unknown export format {format!r}; use one of {', '.join(FORMATS)}")


def render_template(template: Mapping[str, Any], syntax: str = "json") -> str:
    """Serialize an exported template: ``json`` (any format) or ``yaml`` (CloudFormation, SAM;
    needs PyYAML). YAML uses the long form of intrinsic functions (``Fn::Sub:``), which
    CloudFormation, SAM and cfn-lint read like the short ``!Sub`` tags."""
    if syntax == "json":
        return json.dumps(template, indent=2) + "\n"
    if syntax != "yaml":
        raise SpecError(f"unknown syntax {syntax!r}; use json or yaml")
    if "terraform" in template:
        raise SpecError("Terraform configurations are exported as JSON (*.tf.json)")
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - PyYAML comes with the [aws] extra
        raise SpecError("YAML output needs PyYAML (pip install 'apigw-ws[aws]')") from exc

    class _Dumper(yaml.SafeDumper):
        """Block style, no anchors/aliases (CloudFormation rejects them in some places)."""

        def ignore_aliases(self, data: Any) -> bool:
            return True

    text: str = yaml.dump(
        dict(template), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100
    )
    return text
