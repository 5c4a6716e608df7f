"""Filling moto's API Gateway v2 gaps with botocore event hooks, for provisioning tests.

moto 5.2 does not implement ``CreateDeployment``, ``GetDeployment``, ``GetRouteResponses``,
``GetAuthorizers``,
``UpdateStage``, ``UpdateDomainName`` or ``UpdateApiMapping``, and its ``CreateDomainName``
does not fill ``ApiGatewayDomainName``/``HostedZoneId``. :class:`MotoGaps` registers hooks on
a ``boto3.Session`` (before its clients are created) that answer those calls the way AWS does,
reading and writing moto's own backend so everything stays consistent. It also records every
call made (``calls``) and can make a chosen call fail (``fail_on``) to test resumption.
"""

from __future__ import annotations

import hashlib
import itertools
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from moto.apigatewayv2.models import apigatewayv2_backends
from moto.core import DEFAULT_ACCOUNT_ID

#: API Gateway's hosted zone for regional endpoints in us-east-1 (what AWS reports).
REGIONAL_ZONE = "Z1UJRXOUMOOFQ8"

MUTATING_PREFIXES = ("Create", "Update", "Delete", "Tag", "Untag", "Request", "Change")


def _ok(parsed: dict[str, Any]) -> tuple[AWSResponse, dict[str, Any]]:
    http = AWSResponse("https://moto.invalid/", 200, {}, None)
    return http, {"ResponseMetadata": {"HTTPStatusCode": 200}, **parsed}


def _not_found(operation: str, message: str) -> ClientError:
    return ClientError({"Error": {"Code": "NotFoundException", "Message": message}}, operation)


class MotoGaps:
    """Hooks answering the API Gateway v2 calls moto lacks; call log; failure injection."""

    def __init__(self, session: Any, region: str = "us-east-1") -> None:
        self.region = region
        self.calls: list[tuple[str, str]] = []
        #: (operation model, API parameters) of every call, for IAM policy checks.
        self.requests: list[tuple[Any, dict[str, Any]]] = []
        self.deployments: dict[str, dict[str, dict[str, Any]]] = {}
        self.stage_deployment: dict[tuple[str, str], str] = {}
        self._failures: dict[str, tuple[int, str]] = {}
        self._ids = itertools.count(1)
        events = session.events
        for service in ("apigatewayv2", "acm", "route53"):
            events.register(f"before-parameter-build.{service}", self._capture)
        events.register("before-call.apigatewayv2.CreateDeployment", self._create_deployment)
        events.register("before-call.apigatewayv2.GetDeployment", self._get_deployment)
        events.register("before-call.apigatewayv2.GetDeployments", self._get_deployments)
        events.register("before-call.apigatewayv2.GetRouteResponses", self._get_route_responses)
        events.register("before-call.apigatewayv2.GetAuthorizers", self._get_authorizers)
        events.register("before-call.apigatewayv2.UpdateStage", self._update_stage)
        events.register("before-call.apigatewayv2.UpdateDomainName", self._update_domain_name)
        events.register("before-call.apigatewayv2.UpdateApiMapping", self._update_api_mapping)
        events.register("after-call.apigatewayv2.CreateDomainName", self._fill_domain)
        events.register("after-call.apigatewayv2.GetDomainName", self._fill_domain)
        events.register("after-call.apigatewayv2.GetStages", self._fill_stages)
        events.register("before-call.apigatewayv2.DeleteStage", self._forget_stage)
        events.register("before-call.apigatewayv2.DeleteApi", self._forget_stage)

    # --- bookkeeping ---------------------------------------------------------------------

    @property
    def backend(self) -> Any:
        return apigatewayv2_backends[DEFAULT_ACCOUNT_ID][self.region]

    def mutating_calls(self) -> list[str]:
        """Names of the calls made so far that change something."""
        return [op for _, op in self.calls if op.startswith(MUTATING_PREFIXES)]

    def count(self, operation: str) -> int:
        return sum(1 for _, op in self.calls if op == operation)

    def reset(self) -> None:
        self.calls.clear()
        self.requests.clear()

    def fail_on(self, operation: str, nth: int = 1, code: str = "TooManyRequestsException") -> None:
        """Make the ``nth`` next call of ``operation`` fail with ``code``."""
        self._failures[operation] = (nth, code)

    def _capture(
        self, params: dict[str, Any], context: dict[str, Any], model: Any, **kwargs: Any
    ) -> None:
        # Runs for every call (more specific before-call hooks would hide it from a generic
        # one), and before-call only sees the serialized request: keep the API parameters.
        context["moto_gaps_params"] = dict(params)
        self.calls.append((model.service_model.service_name, model.name))
        self.requests.append((model, dict(params)))
        failure = self._failures.get(model.name)
        if failure is not None:
            nth, code = failure
            if nth <= 1:
                del self._failures[model.name]
                raise ClientError({"Error": {"Code": code, "Message": "injected"}}, model.name)
            self._failures[model.name] = (nth - 1, code)

    # --- deployments -----------------------------------------------------------------

    def _create_deployment(self, context: dict[str, Any], **kwargs: Any) -> Any:
        params = context["moto_gaps_params"]
        api_id = params["ApiId"]
        api = self.backend.apis.get(api_id)
        if api is None:
            raise _not_found("CreateDeployment", f"Invalid API identifier specified {api_id}")
        stage = params.get("StageName")
        if stage and stage not in api.stages:
            raise _not_found("CreateDeployment", f"Invalid stage identifier specified {stage}")
        deployment_id = f"dep{next(self._ids):05d}"
        item = {
            "DeploymentId": deployment_id,
            "DeploymentStatus": "DEPLOYED",
            "Description": params.get("Description", ""),
        }
        self.deployments.setdefault(api_id, {})[deployment_id] = item
        if stage:
            self.stage_deployment[(api_id, stage)] = deployment_id
        return _ok(dict(item))

    def _get_deployment(self, context: dict[str, Any], **kwargs: Any) -> Any:
        params = context["moto_gaps_params"]
        item = self.deployments.get(params["ApiId"], {}).get(params["DeploymentId"])
        if item is None:
            raise _not_found("GetDeployment", "Invalid deployment identifier")
        return _ok(dict(item))

    def _get_deployments(self, context: dict[str, Any], **kwargs: Any) -> Any:
        params = context["moto_gaps_params"]
        return _ok({"Items": list(self.deployments.get(params["ApiId"], {}).values())})

    def _fill_stages(self, parsed: dict[str, Any], context: dict[str, Any], **kwargs: Any) -> None:
        api_id = context.get("moto_gaps_params", {}).get("ApiId")
        for item in parsed.get("Items", []):
            dep = self.stage_deployment.get((api_id, item.get("StageName")))
            if dep:
                item["DeploymentId"] = dep

    def _forget_stage(self, context: dict[str, Any], **kwargs: Any) -> None:
        params = context["moto_gaps_params"]
        for key in list(self.stage_deployment):
            if key[0] == params["ApiId"] and params.get("StageName") in (None, key[1]):
                del self.stage_deployment[key]

    # --- route responses, stages, domains --------------------------------------------

    def _get_route_responses(self, context: dict[str, Any], **kwargs: Any) -> Any:
        params = context["moto_gaps_params"]
        api = self.backend.apis.get(params["ApiId"])
        if api is None or params["RouteId"] not in api.routes:
            raise _not_found("GetRouteResponses", "Invalid route identifier")
        route = api.routes[params["RouteId"]]
        items = [
            {"RouteResponseId": r.id, "RouteResponseKey": r.route_response_key}
            for r in route.route_responses.values()
        ]
        return _ok({"Items": items})

    def _get_authorizers(self, context: dict[str, Any], **kwargs: Any) -> Any:
        params = context["moto_gaps_params"]
        api = self.backend.apis.get(params["ApiId"])
        if api is None:
            raise _not_found("GetAuthorizers", "Invalid API identifier")
        items = []
        for auth in api.authorizers.values():
            raw = auth.to_json()
            items.append({k[0].upper() + k[1:]: v for k, v in raw.items() if v not in (None, "")})
        return _ok({"Items": items})

    def _update_stage(self, context: dict[str, Any], **kwargs: Any) -> Any:
        params = context["moto_gaps_params"]
        api = self.backend.apis.get(params["ApiId"])
        stage = api.stages.get(params["StageName"]) if api else None
        if stage is None:
            raise _not_found("UpdateStage", "Invalid stage identifier")
        for name, value in (params.get("StageVariables") or {}).items():
            if value == "":
                stage.stage_variables.pop(name, None)
            else:
                stage.stage_variables[name] = value
        settings = params.get("DefaultRouteSettings")
        if settings is not None:
            camel = {k[0].lower() + k[1:]: v for k, v in settings.items()}
            stage.default_route_settings = {**stage.default_route_settings, **camel}
        return _ok({"StageName": stage.name})

    @staticmethod
    def _target_for(domain: str, region: str) -> str:
        digest = hashlib.sha256(domain.encode()).hexdigest()[:10]
        return f"d-{digest}.execute-api.{region}.amazonaws.com"

    def _fill_domain(self, parsed: dict[str, Any], **kwargs: Any) -> None:
        name = parsed.get("DomainName")
        if not name:
            return
        domain = self.backend.domain_names.get(name)
        for config in parsed.get("DomainNameConfigurations", []):
            config.setdefault("ApiGatewayDomainName", self._target_for(name, self.region))
            config.setdefault("HostedZoneId", REGIONAL_ZONE)
            config.setdefault("DomainNameStatus", "AVAILABLE")
        if domain is not None:
            for config in domain.domain_name_configurations:
                config.setdefault("apiGatewayDomainName", self._target_for(name, self.region))
                config.setdefault("hostedZoneId", REGIONAL_ZONE)

    def _update_domain_name(self, context: dict[str, Any], **kwargs: Any) -> Any:
        params = context["moto_gaps_params"]
        domain = self.backend.domain_names.get(params["DomainName"])
        if domain is None:
            raise _not_found("UpdateDomainName", "Invalid domain name")
        configs = []
        for config in params.get("DomainNameConfigurations", []):
            camel = {k[0].lower() + k[1:]: v for k, v in config.items()}
            configs.append(camel)
        domain.domain_name_configurations = configs
        parsed = {
            "DomainName": domain.domain_name,
            "DomainNameConfigurations": [
                dict(c) for c in params.get("DomainNameConfigurations", [])
            ],
        }
        self._fill_domain(parsed)
        return _ok(parsed)

    def _update_api_mapping(self, context: dict[str, Any], **kwargs: Any) -> Any:
        params = context["moto_gaps_params"]
        mapping = self.backend.api_mappings.get(params["ApiMappingId"])
        if mapping is None:
            raise _not_found("UpdateApiMapping", "Invalid mapping")
        mapping.api_id = params.get("ApiId", mapping.api_id)
        mapping.stage = params.get("Stage", mapping.stage)
        mapping.api_mapping_key = params.get("ApiMappingKey", mapping.api_mapping_key)
        return _ok(mapping.to_json() | {"ApiMappingId": mapping.api_mapping_id})
