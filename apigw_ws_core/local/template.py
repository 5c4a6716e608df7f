"""Running the local gateway from a CloudFormation (or SAM) template.

``apigw-ws provision export --format cloudformation`` writes the gateway as a template;
:func:`config_from_template` reads the ``AWS::ApiGatewayV2`` resources of such a template (or
any hand-written one) into an :class:`~apigw_ws_core.local.config.ApiConfig`, so what is
deployed with ``aws cloudformation deploy`` / ``sam deploy`` is what runs locally
(``apigw-ws local --from-template template.yaml --parameter SharedSecret=...``).

What is read: the WebSocket API (its route selection expression), every route with its
integration (type, method, URI, request parameter mappings, timeout), route responses (a route
with a ``$default`` route response is two-way, as on AWS) and the stage (name, stage
variables). A Lambda ``REQUEST`` authorizer runs locally when its Python stand-in is given
(``authorizer_handler``, ``--authorizer``); otherwise it is not run (a warning says so).
Template parameters take the values given, else their ``Default``; the intrinsic functions
``Ref``, ``Fn::Sub``, ``Fn::Join``, ``Fn::Select`` and ``Fn::GetAtt`` (of the API) are
evaluated the way CloudFormation would. A ``{{resolve:...}}`` dynamic reference has no local
meaning: give its value as a parameter named after the reference
(``--parameter '{{resolve:secretsmanager:my-secret}}=value'``). JSON and YAML (long or short
``!Sub`` form).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from .config import (
    DEFAULT,
    DEFAULT_API_ID,
    DEFAULT_ROUTE_SELECTION_EXPRESSION,
    DEFAULT_STAGE,
    DEFAULT_TIMEOUT_MS,
    ApiConfig,
    Authorizer,
    ConfigError,
    Integration,
    IntegrationType,
    LambdaHandler,
    Route,
)

__all__ = ["config_from_template", "load_template", "parse_parameters"]

logger = logging.getLogger("apigw_ws_core.local")

_PSEUDO = {
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackName": "apigw-ws-local",
    "AWS::StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/apigw-ws-local/local",
}
_DYNAMIC = re.compile(r"\{\{resolve:[^}]+\}\}")
_SUB_VAR = re.compile(r"\$\{(!?)([^}]*)\}")


def parse_parameters(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["Name=value", ...]`` (the CLI's ``--parameter``) as a mapping."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--parameter {item!r}: expected NAME=VALUE")
        out[name] = value
    return out


def load_template(path: str | Path) -> dict[str, Any]:
    """Read a JSON or YAML CloudFormation template (YAML needs PyYAML)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read template {file}: {exc}") from exc
    try:
        data = json.loads(text) if text.lstrip().startswith("{") else _load_yaml(text)
    except (json.JSONDecodeError, ValueError) as exc:
        raise ConfigError(f"cannot parse template {file}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("Resources"), dict):
        raise ConfigError(f"{file} is not a CloudFormation template (no Resources)")
    return data


def _load_yaml(text: str) -> Any:
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - PyYAML comes with the [local] extra
        raise ConfigError("YAML templates need PyYAML (pip install 'apigw-ws[local]')") from exc

    class _Loader(yaml.SafeLoader):
        """SafeLoader that turns CloudFormation's short tags (``!Sub``) into long form."""

    def _tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
        value: Any
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(cast(yaml.MappingNode, node), deep=True)
        if suffix == "Ref":
            return {"Ref": value}
        if suffix == "GetAtt" and isinstance(value, str):
            return {"Fn::GetAtt": value.split(".", 1)}
        return {f"Fn::{suffix}": value}

    _Loader.add_multi_constructor("!", _tagged)
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from exc


class _Resolver:
    """Evaluates intrinsic functions against parameters and the template's resources."""

    def __init__(
        self, template: Mapping[str, Any], parameters: Mapping[str, str], api_id: str
    ) -> None:
        self.resources: Mapping[str, Any] = template.get("Resources") or {}
        self.declared: Mapping[str, Any] = template.get("Parameters") or {}
        self.given = dict(parameters)
        unknown = sorted(
            k for k in self.given if k not in self.declared and not _DYNAMIC.fullmatch(k)
        )
        if unknown:
            raise ConfigError(f"the template declares no parameter {', '.join(unknown)}")
        self.api_id = api_id
        self.refs: dict[str, str] = {}

    def parameter(self, name: str) -> str:
        if name in self.given:
            return self.given[name]
        declared = self.declared.get(name)
        if isinstance(declared, Mapping) and "Default" in declared:
            return str(declared["Default"])
        raise ConfigError(f"template parameter {name} has no default: pass --parameter {name}=...")

    def ref(self, name: str) -> str:
        if name in self.declared:
            return self.parameter(name)
        if name in _PSEUDO:
            return _PSEUDO[name]
        if name in self.resources:
            return self.refs.get(name, name)
        raise ConfigError(f"Ref to {name!r}, which the template does not declare")

    def get_att(self, name: str, attribute: str) -> str:
        kind = (self.resources.get(name) or {}).get("Type")
        if kind == "AWS::ApiGatewayV2::Api" and attribute == "ApiId":
            return self.api_id
        if kind == "AWS::ApiGatewayV2::Api" and attribute == "ApiEndpoint":
            return f"wss://{self.api_id}.execute-api.{_PSEUDO['AWS::Region']}.amazonaws.com"
        raise ConfigError(f"Fn::GetAtt {name}.{attribute} has no local value")

    def string(self, value: Any, where: str) -> str:
        resolved = self.value(value, where)
        if not isinstance(resolved, (str, int, float)) or isinstance(resolved, bool):
            raise ConfigError(f"{where}: expected a string, got {resolved!r}")
        return self.dynamic(str(resolved), where)

    def dynamic(self, text: str, where: str) -> str:
        def replace(match: re.Match[str]) -> str:
            if match.group(0) in self.given:
                return self.given[match.group(0)]
            raise ConfigError(
                f"{where}: the dynamic reference {match.group(0)} cannot be resolved locally; "
                f"pass --parameter '{match.group(0)}=VALUE'"
            )

        return _DYNAMIC.sub(replace, text)

    def sub(self, text: str, variables: Mapping[str, Any], where: str) -> str:
        def replace(match: re.Match[str]) -> str:
            if match.group(1):
                return "${" + match.group(2) + "}"
            name = match.group(2).strip()
            if name in variables:
                return self.string(variables[name], where)
            if "." in name and name.split(".", 1)[0] in self.resources:
                return self.get_att(*name.split(".", 1))
            return self.ref(name)

        return _SUB_VAR.sub(replace, text)

    def value(self, value: Any, where: str) -> Any:
        if isinstance(value, list):
            return [self.value(v, where) for v in value]
        if not isinstance(value, Mapping):
            return value
        if len(value) != 1:
            return {k: self.value(v, f"{where}.{k}") for k, v in value.items()}
        ((fn, arg),) = value.items()
        if fn == "Ref":
            return self.ref(str(arg))
        if fn == "Fn::Sub":
            if isinstance(arg, str):
                return self.sub(arg, {}, where)
            text, variables = arg
            return self.sub(str(text), variables, where)
        if fn == "Fn::Join":
            delimiter, items = arg
            return str(delimiter).join(self.string(v, where) for v in self.value(items, where))
        if fn == "Fn::Select":
            index, items = arg
            return self.value(items, where)[int(self.value(index, where))]
        if fn == "Fn::GetAtt":
            name, attribute = arg.split(".", 1) if isinstance(arg, str) else arg
            return self.get_att(str(name), str(attribute))
        if fn.startswith("Fn::") or fn == "Condition":
            raise ConfigError(f"{where}: {fn} is not supported by the local gateway")
        return {fn: self.value(arg, f"{where}.{fn}")}


def _of_type(resources: Mapping[str, Any], kind: str) -> dict[str, Mapping[str, Any]]:
    return {
        name: body.get("Properties") or {}
        for name, body in resources.items()
        if isinstance(body, Mapping) and body.get("Type") == kind
    }


def _ref_name(value: Any) -> str | None:
    """The logical id a ``{"Ref": X}`` names (``None`` for anything else)."""
    if isinstance(value, Mapping) and set(value) == {"Ref"}:
        return str(value["Ref"])
    return None


def config_from_template(
    template: Mapping[str, Any],
    parameters: Mapping[str, str] | None = None,
    *,
    stage: str | None = None,
    api: str | None = None,
    api_id: str = DEFAULT_API_ID,
    lambda_handler: LambdaHandler | None = None,
    authorizer_handler: LambdaHandler | None = None,
) -> ApiConfig:
    """Build an :class:`ApiConfig` from a CloudFormation template's ``AWS::ApiGatewayV2``
    resources.

    :param parameters: template parameter values (and dynamic reference values); parameters
        not given take their ``Default``.
    :param stage: which ``AWS::ApiGatewayV2::Stage`` (by ``StageName``) supplies the stage
        name and variables; default: the API's only (or first) stage.
    :param api: the logical id of the API when the template holds more than one WebSocket API.
    :param api_id: the API id the local gateway shows to backends.
    :param lambda_handler: the Python callable ``AWS_PROXY`` integrations call locally.
    :param authorizer_handler: the Python callable a route's Lambda ``REQUEST`` authorizer
        (``AuthorizationType: CUSTOM``) calls locally, with the template's identity sources;
        without it the authorizer is not run (a warning says so).
    """
    resources: Mapping[str, Any] = template.get("Resources") or {}
    resolver = _Resolver(template, parameters or {}, api_id)
    apis = {
        name: props
        for name, props in _of_type(resources, "AWS::ApiGatewayV2::Api").items()
        if str(props.get("ProtocolType", "")).upper() == "WEBSOCKET"
    }
    if api is not None:
        if api not in apis:
            raise ConfigError(f"the template has no WebSocket API {api!r}")
        api_name = api
    elif len(apis) == 1:
        api_name = next(iter(apis))
    else:
        found = ", ".join(sorted(apis)) or "none"
        raise ConfigError(f"expected one WebSocket API in the template, found: {found}")
    resolver.refs[api_name] = api_id

    def belongs(props: Mapping[str, Any]) -> bool:
        return _ref_name(props.get("ApiId")) == api_name

    integrations = {
        n: p for n, p in _of_type(resources, "AWS::ApiGatewayV2::Integration").items() if belongs(p)
    }
    two_way_routes = {
        _ref_name(p.get("RouteId"))
        for p in _of_type(resources, "AWS::ApiGatewayV2::RouteResponse").values()
        if belongs(p) and resolver.value(p.get("RouteResponseKey"), "RouteResponseKey") == DEFAULT
    }
    routes: list[Route] = []
    for name, props in _of_type(resources, "AWS::ApiGatewayV2::Route").items():
        if not belongs(props):
            continue
        key = resolver.string(props.get("RouteKey"), f"{name}.RouteKey")
        authorizer: Authorizer | None = None
        if props.get("AuthorizationType") not in (None, "NONE"):
            auth_name = _ref_name(props.get("AuthorizerId")) or ""
            auth_props = _of_type(resources, "AWS::ApiGatewayV2::Authorizer").get(auth_name)
            if (
                props.get("AuthorizationType") == "CUSTOM"
                and auth_props is not None
                and authorizer_handler is not None
            ):
                where_auth = f"{auth_name}.IdentitySource"
                sources = resolver.value(auth_props.get("IdentitySource") or [], where_auth)
                uri = auth_props.get("AuthorizerUri") or auth_name
                authorizer = Authorizer(
                    uri=resolver.string(uri, f"{auth_name}.AuthorizerUri"),
                    identity_sources=[resolver.string(v, where_auth) for v in sources or []],
                    handler=authorizer_handler,
                )
            else:
                logger.warning(
                    "route %s has a %s authorizer, which the local gateway does not run "
                    "without its code: clients connect without it (a Lambda REQUEST "
                    "authorizer runs with --authorizer module:function)",
                    key,
                    props.get("AuthorizationType"),
                )
        target = resolver.string(props.get("Target", ""), f"{name}.Target")
        integration_name = target.split("/", 1)[1] if target.startswith("integrations/") else ""
        if integration_name not in integrations:
            raise ConfigError(f"route {key!r} ({name}) has no integration target ({target!r})")
        spec = integrations[integration_name]
        where = integration_name
        kind = resolver.string(spec.get("IntegrationType", ""), f"{where}.IntegrationType")
        uri = resolver.string(spec.get("IntegrationUri", ""), f"{where}.IntegrationUri")
        params = {
            target_name: resolver.string(source, f"{where}.RequestParameters.{target_name}")
            for target_name, source in (
                resolver.value(spec.get("RequestParameters") or {}, where) or {}
            ).items()
        }
        handler: LambdaHandler | None = None
        if kind.upper() == "AWS_PROXY":
            if lambda_handler is None:
                raise ConfigError(
                    f"route {key!r} is AWS_PROXY to {uri!r}; pass lambda_handler "
                    "(--lambda module:function) to run it locally"
                )
            handler = lambda_handler
        elif kind.upper() != "HTTP_PROXY":
            raise ConfigError(f"route {key!r}: integration type {kind} is not supported locally")
        timeout = spec.get("TimeoutInMillis", DEFAULT_TIMEOUT_MS)
        integration = Integration(
            type=cast(IntegrationType, kind.upper()),
            uri=uri,
            method=resolver.string(spec.get("IntegrationMethod") or "POST", where),
            request_parameters=params,
            timeout_ms=int(resolver.string(timeout, f"{where}.TimeoutInMillis")),
            handler=handler,
        )
        routes.append(
            Route(
                key=key,
                integration=integration,
                two_way=name in two_way_routes,
                authorizer=authorizer,
            )
        )
    stages = [p for p in _of_type(resources, "AWS::ApiGatewayV2::Stage").values() if belongs(p)]
    chosen: Mapping[str, Any] | None = None
    for props in stages:
        if stage is None or resolver.string(props.get("StageName"), "StageName") == stage:
            chosen = props
            break
    if stage is not None and chosen is None:
        raise ConfigError(f"the template has no stage {stage!r} for API {api_name}")
    stage_name = stage or DEFAULT_STAGE
    variables: dict[str, str] = {}
    if chosen is not None:
        stage_name = resolver.string(chosen.get("StageName"), "StageName")
        raw = resolver.value(chosen.get("StageVariables") or {}, "StageVariables") or {}
        variables = {str(k): resolver.string(v, f"StageVariables.{k}") for k, v in raw.items()}
    expression = apis[api_name].get("RouteSelectionExpression")
    return ApiConfig(
        routes=routes,
        api_id=api_id,
        route_selection_expression=resolver.string(expression, "RouteSelectionExpression")
        if expression
        else DEFAULT_ROUTE_SELECTION_EXPRESSION,
        stage=stage_name,
        stage_variables=variables,
    )
