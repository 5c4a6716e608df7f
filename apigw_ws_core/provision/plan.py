"""Comparing a spec with what exists: the list of :class:`Change` objects, and its rendering.

:func:`compute_changes` is pure: it takes a :class:`~apigw_ws_core.provision.spec.GatewaySpec`
and an :class:`~apigw_ws_core.provision.state.Observed` and returns every change in the
order ``apply`` performs them (noops included, so a plan also says what stays). Secrets never
appear in a change: the secret header's value is replaced by a fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import attrs

from apigw_ws_core.gateways import GatewayRecord
from apigw_ws_core.provision.spec import (
    SECRET_HEADER,
    GatewaySpec,
    ResolvedRoute,
    request_parameters,
    secret_fingerprint,
)
from apigw_ws_core.provision.state import CertificateState, DomainState, Observed

__all__ = [
    "Action",
    "Change",
    "compute_changes",
    "deploy_hash",
    "desired_authorizer",
    "desired_integration",
    "destroy_changes",
    "integration_description",
    "render_changes",
    "summarize",
]

Action = Literal["create", "update", "delete", "noop"]

#: Changes to these resources take effect only after a new deployment of the stage.
DEPLOYED_RESOURCES = frozenset({"api", "authorizer", "integration", "route", "route_response"})

_SECRET_PARAM = f"integration.request.header.{SECRET_HEADER}"
_PENDING = "(known after apply)"


@attrs.frozen(kw_only=True)
class Change:
    """One thing ``apply`` does (or, with ``noop``, leaves alone).

    ``resource`` is the kind (``api``, ``integration``, ``route``, ``route_response``,
    ``stage``, ``deployment``, ``certificate``, ``validation_record``, ``domain``,
    ``api_mapping``, ``alias_record``); ``name`` says which one (a route key, a stage name, a
    domain); ``details`` maps each field that differs to ``(old, new)`` (``old`` is ``None``
    on create, ``new`` is ``None`` on delete); ``resource_id`` is the AWS id of an existing
    resource.
    """

    action: Action
    resource: str
    name: str
    details: dict[str, tuple[Any, Any]] = attrs.field(factory=dict, hash=False)
    resource_id: str = ""

    @property
    def label(self) -> str:
        """``"route chat_message"``: what the change is about, for progress lines."""
        return f"{self.resource} {self.name}"


# --- desired state ----------------------------------------------------------------------


def integration_description(spec: GatewaySpec, route_key: str) -> str:
    """The description we give each integration; it finds them again without a record."""
    return f"apigw-ws {spec.name} {route_key}"


def desired_integration(spec: GatewaySpec, route: ResolvedRoute) -> dict[str, Any]:
    """The integration parameters of one route, as sent to ``create_integration``."""
    return {
        "IntegrationType": "HTTP_PROXY",
        "IntegrationMethod": "POST",
        "IntegrationUri": route.uri,
        "RequestParameters": request_parameters(spec.secret, spec.authorizer),
        "TimeoutInMillis": spec.timeout_ms,
        "Description": integration_description(spec, route.key),
    }


def desired_authorizer(spec: GatewaySpec) -> dict[str, Any] | None:
    """The authorizer parameters, as sent to ``create_authorizer`` (``None``: no authorizer)."""
    auth = spec.authorizer
    if auth is None:
        return None
    wanted: dict[str, Any] = {
        "Name": auth.name,
        "AuthorizerType": "REQUEST",
        "AuthorizerUri": auth.uri,
        "IdentitySource": list(auth.identity_sources),
    }
    if auth.credentials_arn:
        wanted["AuthorizerCredentialsArn"] = auth.credentials_arn
    return wanted


def deploy_hash(spec: GatewaySpec) -> str:
    """A hash of everything a deployment freezes: routes, integrations, authorizer, secret."""
    data: dict[str, Any] = {
        "rse": spec.route_selection_expression,
        "routes": [attrs.asdict(r) for r in spec.resolved_routes()],
        "secret": secret_fingerprint(spec.secret),
        "timeout": spec.timeout_ms,
    }
    if spec.authorizer is not None:
        data["authorizer"] = attrs.asdict(spec.authorizer)
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def throttle_settings(spec: GatewaySpec) -> dict[str, Any]:
    """The stage's default route throttling (``ThrottlingBurstLimit``/``ThrottlingRateLimit``,
    only those the spec sets): what provisioning applies and what the exports write."""
    settings: dict[str, Any] = {}
    if spec.throttling is not None:
        if spec.throttling.burst_limit is not None:
            settings["ThrottlingBurstLimit"] = spec.throttling.burst_limit
        if spec.throttling.rate_limit is not None:
            settings["ThrottlingRateLimit"] = float(spec.throttling.rate_limit)
    return settings


def desired_stage(spec: GatewaySpec) -> dict[str, Any]:
    """The stage fields we manage."""
    return {
        "StageVariables": dict(spec.stage_variables),
        "DefaultRouteSettings": throttle_settings(spec),
    }


# --- helpers -----------------------------------------------------------------------------


def _mask_params(params: Mapping[str, str] | None) -> dict[str, str] | None:
    if params is None:
        return None
    masked = {}
    for key, value in sorted(params.items()):
        if key == _SECRET_PARAM and value:
            value = f"'<secret {secret_fingerprint(value.strip(chr(39)))}>'"
        masked[key] = value
    return masked


def _non_empty(mapping: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (mapping or {}).items() if v not in ("", None)}


def _rrse(value: Any) -> str | None:
    return value or None


def _same_dns(a: str | None, b: str | None) -> bool:
    return (a or "").rstrip(".").lower() == (b or "").rstrip(".").lower()


def _created(fields: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {k: (None, v) for k, v in fields.items()}


def _deleted(fields: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {k: (v, None) for k, v in fields.items()}


def _change(
    action: Action,
    resource: str,
    name: str,
    details: dict[str, tuple[Any, Any]] | None = None,
    resource_id: str = "",
) -> Change:
    return Change(
        action=action,
        resource=resource,
        name=name,
        details=details or {},
        resource_id=resource_id,
    )


# --- the diff ----------------------------------------------------------------------------


def _api_changes(spec: GatewaySpec, observed: Observed, record: GatewayRecord | None) -> Change:
    wanted = {
        "Name": spec.effective_api_name,
        "RouteSelectionExpression": spec.route_selection_expression,
        "Description": spec.description,
    }
    if observed.api is None:
        return _change(
            "create",
            "api",
            spec.effective_api_name,
            _created({**wanted, "ProtocolType": "WEBSOCKET", "Tags": spec.all_tags}),
        )
    api = observed.api
    details: dict[str, tuple[Any, Any]] = {
        k: (api.get(k), v) for k, v in wanted.items() if (api.get(k) or "") != v
    }
    tags = dict(api.get("Tags") or {})
    previously = set(filter(None, (record.resources.get("tags", "") if record else "").split(",")))
    stale = sorted(k for k in previously if k in tags and k not in spec.all_tags)
    missing = {k: v for k, v in spec.all_tags.items() if tags.get(k) != v}
    if missing or stale:
        old = {k: tags.get(k) for k in [*missing, *stale] if k in tags}
        new = {**missing}
        details["Tags"] = (old or None, new or None)
    action: Action = "update" if details else "noop"
    return _change(action, "api", spec.effective_api_name, details, str(api["ApiId"]))


def _claim_integrations(
    spec: GatewaySpec, observed: Observed, record: GatewayRecord | None
) -> dict[str, str]:
    """Which existing integration serves which route key (each used at most once)."""
    claimed: dict[str, str] = {}
    used: set[str] = set()
    routes = spec.resolved_routes()
    by_description = {str(i.get("Description")): iid for iid, i in observed.integrations.items()}
    for route in routes:
        candidates = []
        existing_route = observed.routes.get(route.key)
        if existing_route and str(existing_route.get("Target", "")).startswith("integrations/"):
            candidates.append(str(existing_route["Target"]).split("/", 1)[1])
        if record is not None and record.api_id == observed.api_id:
            candidates.append(record.resources.get(f"integration:{route.key}", ""))
        candidates.append(by_description.get(integration_description(spec, route.key), ""))
        for iid in candidates:
            if iid and iid in observed.integrations and iid not in used:
                claimed[route.key] = iid
                used.add(iid)
                break
    return claimed


def _integration_change(
    spec: GatewaySpec, route: ResolvedRoute, existing: dict[str, Any] | None
) -> Change:
    wanted = desired_integration(spec, route)
    if existing is None:
        shown = {**wanted, "RequestParameters": _mask_params(wanted["RequestParameters"])}
        return _change("create", "integration", route.key, _created(shown))
    details: dict[str, tuple[Any, Any]] = {}
    for field in (
        "IntegrationType",
        "IntegrationMethod",
        "IntegrationUri",
        "TimeoutInMillis",
        "Description",
    ):
        if existing.get(field) != wanted[field]:
            details[field] = (existing.get(field), wanted[field])
    old_params = _non_empty(existing.get("RequestParameters"))
    if old_params != wanted["RequestParameters"]:
        old_shown = _mask_params(old_params) or {}
        new_shown = _mask_params(wanted["RequestParameters"]) or {}
        changed = sorted(
            k for k in {*old_shown, *new_shown} if old_shown.get(k) != new_shown.get(k)
        )
        details["RequestParameters"] = (
            {k: old_shown[k] for k in changed if k in old_shown},
            {k: new_shown[k] for k in changed if k in new_shown},
        )
    action: Action = "update" if details else "noop"
    return _change(action, "integration", route.key, details, str(existing["IntegrationId"]))


def _route_change(
    route: ResolvedRoute,
    existing: dict[str, Any] | None,
    integration_id: str | None,
    authorizer: tuple[str, str] | None = None,
) -> Change:
    """``authorizer`` is ``("CUSTOM", authorizer id)`` for the route that runs one."""
    target = f"integrations/{integration_id}" if integration_id else _PENDING
    rrse = "$default" if route.two_way else None
    if existing is None:
        fields = {"RouteKey": route.key, "Target": target}
        if rrse:
            fields["RouteResponseSelectionExpression"] = rrse
        if authorizer is not None:
            fields["AuthorizationType"], fields["AuthorizerId"] = authorizer
        return _change("create", "route", route.key, _created(fields))
    details: dict[str, tuple[Any, Any]] = {}
    if existing.get("Target") != target:
        details["Target"] = (existing.get("Target"), target)
    old_type = existing.get("AuthorizationType") or "NONE"
    if authorizer is None:
        if old_type != "NONE":
            details["AuthorizationType"] = (old_type, "NONE")
    else:
        if old_type != authorizer[0]:
            details["AuthorizationType"] = (old_type, authorizer[0])
        if existing.get("AuthorizerId") != authorizer[1]:
            details["AuthorizerId"] = (existing.get("AuthorizerId"), authorizer[1])
    if _rrse(existing.get("RouteResponseSelectionExpression")) != rrse:
        details["RouteResponseSelectionExpression"] = (
            _rrse(existing.get("RouteResponseSelectionExpression")),
            rrse,
        )
    action: Action = "update" if details else "noop"
    return _change(action, "route", route.key, details, str(existing["RouteId"]))


def _authorizer_changes(spec: GatewaySpec, observed: Observed) -> tuple[list[Change], list[Change]]:
    """The authorizer's create/update/noop, and the deletions of authorizers no longer wanted.

    Deletions come after the routes stop using them (AWS refuses to delete one in use).
    """
    wanted = desired_authorizer(spec)
    existing = observed.authorizers
    keep = None
    if wanted is not None:
        keep = next((a for a in existing.values() if a.get("Name") == wanted["Name"]), None)
    first: list[Change] = []
    if wanted is not None and keep is None:
        first.append(_change("create", "authorizer", wanted["Name"], _created(wanted)))
    elif wanted is not None and keep is not None:
        details = {
            k: (keep.get(k), v)
            for k, v in wanted.items()
            if (list(keep.get(k) or []) if k == "IdentitySource" else keep.get(k)) != v
        }
        if not wanted.get("AuthorizerCredentialsArn") and keep.get("AuthorizerCredentialsArn"):
            details["AuthorizerCredentialsArn"] = (keep.get("AuthorizerCredentialsArn"), None)
        action: Action = "update" if details else "noop"
        first.append(
            _change(action, "authorizer", wanted["Name"], details, str(keep["AuthorizerId"]))
        )
    last = [
        _change(
            "delete",
            "authorizer",
            str(item.get("Name") or aid),
            _deleted({"AuthorizerUri": item.get("AuthorizerUri")}),
            aid,
        )
        for aid, item in sorted(existing.items())
        if item is not keep
    ]
    return first, last


def _route_response_changes(route: ResolvedRoute, observed: Observed) -> list[Change]:
    responses = observed.route_responses.get(route.key, [])
    changes: list[Change] = []
    keep = None
    if route.two_way:
        keep = next((r for r in responses if r.get("RouteResponseKey") == "$default"), None)
        if keep is not None:
            rid = str(keep["RouteResponseId"])
            changes.append(_change("noop", "route_response", route.key, resource_id=rid))
        else:
            changes.append(
                _change(
                    "create",
                    "route_response",
                    route.key,
                    _created({"RouteResponseKey": "$default"}),
                )
            )
    for response in responses:
        if response is keep:
            continue
        changes.append(
            _change(
                "delete",
                "route_response",
                route.key,
                _deleted({"RouteResponseKey": response.get("RouteResponseKey")}),
                str(response["RouteResponseId"]),
            )
        )
    return changes


def _stage_changes(spec: GatewaySpec, observed: Observed) -> list[Change]:
    wanted = desired_stage(spec)
    changes: list[Change] = []
    existing = observed.stages.get(spec.stage)
    if existing is None:
        fields = {"StageName": spec.stage}
        if wanted["StageVariables"]:
            fields["StageVariables"] = wanted["StageVariables"]
        if wanted["DefaultRouteSettings"]:
            fields["DefaultRouteSettings"] = wanted["DefaultRouteSettings"]
        changes.append(_change("create", "stage", spec.stage, _created(fields)))
    else:
        details: dict[str, tuple[Any, Any]] = {}
        old_vars = _non_empty(existing.get("StageVariables"))
        if old_vars != wanted["StageVariables"]:
            details["StageVariables"] = (old_vars or None, wanted["StageVariables"] or None)
        old_settings = existing.get("DefaultRouteSettings") or {}
        for key, value in wanted["DefaultRouteSettings"].items():
            if old_settings.get(key) != value:
                details[key] = (old_settings.get(key), value)
        action: Action = "update" if details else "noop"
        changes.append(_change(action, "stage", spec.stage, details, spec.stage))
    for name in sorted(observed.stages):
        if name != spec.stage:
            changes.append(_change("delete", "stage", name, _deleted({"StageName": name}), name))
    return changes


def _certificate_for(spec: GatewaySpec, observed: Observed) -> CertificateState | None:
    """The requested certificate we keep for the spec's domain, if one exists and is usable."""
    if spec.domain is None or not spec.domain.request_certificate:
        return None
    usable = [
        c
        for c in observed.certificates
        if c.domain_name == spec.domain.name and c.status in ("ISSUED", "PENDING_VALIDATION")
    ]
    usable.sort(key=lambda c: c.status != "ISSUED")
    return usable[0] if usable else None


def _domain_state(observed: Observed, name: str) -> DomainState:
    for state in observed.domains:
        if state.name == name:
            return state
    return DomainState(name=name)


def _certificate_changes(spec: GatewaySpec, observed: Observed) -> list[Change]:
    changes: list[Change] = []
    if spec.domain is None or not spec.domain.request_certificate:
        return changes
    name = spec.domain.name
    kept = _certificate_for(spec, observed)
    if kept is None:
        changes.append(
            _change(
                "create",
                "certificate",
                name,
                _created({"DomainName": name, "ValidationMethod": "DNS"}),
            )
        )
        changes.append(
            _change(
                "create",
                "validation_record",
                f"validation of {name}",
                _created({"Type": "CNAME", "Value": _PENDING}),
            )
        )
        return changes
    changes.append(_change("noop", "certificate", name, resource_id=kept.arn))
    if kept.validation is None:
        changes.append(
            _change(
                "create",
                "validation_record",
                f"validation of {name}",
                _created({"Type": "CNAME", "Value": _PENDING}),
                kept.arn,
            )
        )
        return changes
    current = kept.validation_rrset
    wanted_value = kept.validation["Value"]
    old_value = None
    if current is not None:
        values = [r.get("Value") for r in current.get("ResourceRecords", [])]
        old_value = values[0] if values else None
    if current is None:
        action: Action = "create"
    elif _same_dns(old_value, wanted_value):
        action = "noop"
    else:
        action = "update"
    details = {} if action == "noop" else {"Value": (old_value, wanted_value)}
    changes.append(_change(action, "validation_record", kept.validation["Name"], details, kept.arn))
    return changes


def _domain_changes(spec: GatewaySpec, observed: Observed, api_id: str | None) -> list[Change]:
    changes: list[Change] = []
    if spec.domain is None:
        return changes
    dom = spec.domain
    state = _domain_state(observed, dom.name)
    kept = _certificate_for(spec, observed)
    cert_arn = dom.certificate_arn or (kept.arn if kept else _PENDING)
    wanted = {"CertificateArn": cert_arn, "EndpointType": "REGIONAL", "SecurityPolicy": "TLS_1_2"}
    if state.domain is None:
        changes.append(_change("create", "domain", dom.name, _created(wanted)))
        target_dns = _PENDING
        target_zone = _PENDING
    else:
        config = (state.domain.get("DomainNameConfigurations") or [{}])[0]
        details = {}
        if config.get("CertificateArn") != cert_arn:
            details["CertificateArn"] = (config.get("CertificateArn"), cert_arn)
        action: Action = "update" if details else "noop"
        changes.append(_change(action, "domain", dom.name, details, dom.name))
        target_dns = config.get("ApiGatewayDomainName") or _PENDING
        target_zone = config.get("HostedZoneId") or _PENDING
    mapping_name = f"{dom.name}/{dom.base_path}"
    wanted_mapping = {
        "ApiId": api_id or _PENDING,
        "Stage": spec.stage,
        "ApiMappingKey": dom.base_path,
    }
    same_key = [m for m in state.mappings if (m.get("ApiMappingKey") or "") == dom.base_path]
    if not same_key:
        changes.append(_change("create", "api_mapping", mapping_name, _created(wanted_mapping)))
    else:
        mapping = same_key[0]
        details = {
            k: (mapping.get(k), v) for k, v in wanted_mapping.items() if (mapping.get(k) or "") != v
        }
        action = "update" if details else "noop"
        changes.append(
            _change(action, "api_mapping", mapping_name, details, str(mapping["ApiMappingId"]))
        )
    for mapping in state.mappings:
        key = mapping.get("ApiMappingKey") or ""
        if key != dom.base_path and api_id and mapping.get("ApiId") == api_id:
            changes.append(
                _change(
                    "delete",
                    "api_mapping",
                    f"{dom.name}/{key}",
                    _deleted({"ApiId": api_id, "Stage": mapping.get("Stage")}),
                    str(mapping["ApiMappingId"]),
                )
            )
    if dom.manage_dns:
        alias = (state.alias_rrset or {}).get("AliasTarget") or {}
        wanted_alias = {"DNSName": target_dns, "HostedZoneId": target_zone}
        if state.alias_rrset is None:
            changes.append(_change("create", "alias_record", dom.name, _created(wanted_alias)))
        elif (
            _same_dns(alias.get("DNSName"), target_dns) and alias.get("HostedZoneId") == target_zone
        ):
            changes.append(_change("noop", "alias_record", dom.name, resource_id=dom.name))
        else:
            details = {k: (alias.get(k), v) for k, v in wanted_alias.items() if alias.get(k) != v}
            changes.append(_change("update", "alias_record", dom.name, details, dom.name))
    return changes


def _domain_teardown(state: DomainState, api_id: str | None) -> list[Change]:
    """Changes removing one domain we manage: alias record, our mappings, the domain."""
    changes: list[Change] = []
    target = ((state.domain or {}).get("DomainNameConfigurations") or [{}])[0]
    alias = (state.alias_rrset or {}).get("AliasTarget") or {}
    if (
        state.alias_rrset is not None
        and alias
        and _same_dns(alias.get("DNSName"), target.get("ApiGatewayDomainName"))
    ):
        changes.append(
            _change(
                "delete",
                "alias_record",
                state.name,
                _deleted({"DNSName": alias.get("DNSName")}),
                state.name,
            )
        )
    for mapping in state.mappings:
        if state.domain is not None:
            key = mapping.get("ApiMappingKey") or ""
            changes.append(
                _change(
                    "delete",
                    "api_mapping",
                    f"{state.name}/{key}",
                    _deleted({"ApiId": mapping.get("ApiId"), "Stage": mapping.get("Stage")}),
                    str(mapping["ApiMappingId"]),
                )
            )
    if state.domain is not None:
        changes.append(
            _change(
                "delete",
                "domain",
                state.name,
                _deleted({"CertificateArn": target.get("CertificateArn")}),
                state.name,
            )
        )
    return changes


def _certificate_teardown(
    certificates: Iterable[CertificateState], keep: CertificateState | None
) -> list[Change]:
    changes: list[Change] = []
    kept_names = {keep.validation["Name"].lower()} if keep and keep.validation else set()
    for cert in certificates:
        if keep is not None and cert.arn == keep.arn:
            continue
        if (
            cert.validation_rrset is not None
            and cert.validation is not None
            and (cert.validation["Name"].lower() not in kept_names)
        ):
            changes.append(
                _change(
                    "delete",
                    "validation_record",
                    cert.validation["Name"],
                    _deleted({"Value": cert.validation["Value"]}),
                    cert.arn,
                )
            )
        changes.append(
            _change(
                "delete",
                "certificate",
                cert.domain_name,
                _deleted({"CertificateArn": cert.arn, "Status": cert.status}),
                cert.arn,
            )
        )
    return changes


def compute_changes(
    spec: GatewaySpec, observed: Observed, record: GatewayRecord | None = None
) -> list[Change]:
    """Everything ``apply`` must do to make AWS match ``spec``, in execution order.

    Order: certificate and its validation record, API, authorizer, integrations, route
    deletions, routes, authorizers no longer wanted, route responses, orphaned integrations,
    stages, deployment, custom domain, API mapping, alias record, and last what the spec
    dropped (old domain, old certificates).
    """
    changes: list[Change] = _certificate_changes(spec, observed)
    api_change = _api_changes(spec, observed, record)
    changes.append(api_change)
    routes = spec.resolved_routes()
    wanted_keys = {r.key for r in routes}
    claimed = _claim_integrations(spec, observed, record) if observed.api else {}
    api_level: list[Change] = [api_change]
    authorizer_first, authorizer_last = _authorizer_changes(spec, observed)
    api_level.extend(authorizer_first)
    changes.extend(authorizer_first)
    authorization: tuple[str, str] | None = None
    if authorizer_first:
        authorization = ("CUSTOM", authorizer_first[0].resource_id or _PENDING)
    for route in routes:
        iid = claimed.get(route.key)
        change = _integration_change(spec, route, observed.integrations.get(iid or ""))
        api_level.append(change)
        changes.append(change)
    for key in sorted(observed.routes):
        if key not in wanted_keys:
            gone = observed.routes[key]
            change = _change(
                "delete",
                "route",
                key,
                _deleted({"Target": gone.get("Target")}),
                str(gone["RouteId"]),
            )
            api_level.append(change)
            changes.append(change)
    for route in routes:
        change = _route_change(
            route,
            observed.routes.get(route.key),
            claimed.get(route.key),
            authorization if route.key == "$connect" else None,
        )
        api_level.append(change)
        changes.append(change)
    api_level.extend(authorizer_last)
    changes.extend(authorizer_last)
    for route in routes:
        for change in _route_response_changes(route, observed):
            api_level.append(change)
            changes.append(change)
    used = set(claimed.values())
    for iid in sorted(observed.integrations):
        if iid not in used:
            integration = observed.integrations[iid]
            name = str(integration.get("Description") or iid)
            change = _change(
                "delete",
                "integration",
                name,
                _deleted({"IntegrationUri": integration.get("IntegrationUri")}),
                iid,
            )
            api_level.append(change)
            changes.append(change)
    stage_changes = _stage_changes(spec, observed)
    changes.extend(stage_changes)
    wanted_hash = deploy_hash(spec)
    deploy_reasons = [
        c
        for c in api_level
        if c.action != "noop" and not (c.resource == "api" and set(c.details) <= {"Tags"})
    ]
    stage_created = any(c.action == "create" and c.name == spec.stage for c in stage_changes)
    if deploy_reasons or stage_created or observed.deployed_config != wanted_hash:
        old = observed.deployed_config[:12] if observed.deployed_config else None
        changes.append(
            _change("create", "deployment", spec.stage, {"config": (old, wanted_hash[:12])})
        )
    else:
        changes.append(_change("noop", "deployment", spec.stage))
    changes.extend(_domain_changes(spec, observed, observed.api_id))
    for state in observed.domains:
        if spec.domain is None or state.name != spec.domain.name:
            changes.extend(_domain_teardown(state, observed.api_id))
    changes.extend(_certificate_teardown(observed.certificates, _certificate_for(spec, observed)))
    return changes


def destroy_changes(spec: GatewaySpec, observed: Observed) -> list[Change]:
    """Everything ``destroy`` removes: domains, the API (with all its parts), certificates."""
    changes: list[Change] = []
    for state in observed.domains:
        changes.extend(_domain_teardown(state, observed.api_id))
    if observed.api is not None:
        details = {
            "Name": (observed.api.get("Name"), None),
            "routes": (len(observed.routes), None),
            "integrations": (len(observed.integrations), None),
            "stages": (sorted(observed.stages) or None, None),
        }
        changes.append(
            _change(
                "delete", "api", str(observed.api.get("Name")), details, str(observed.api["ApiId"])
            )
        )
    changes.extend(_certificate_teardown(observed.certificates, None))
    return changes


# --- rendering ---------------------------------------------------------------------------

_SIGNS = {"create": "+", "update": "~", "delete": "-", "noop": " "}


def _fmt(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    return json.dumps(value, sort_keys=True, default=str)


def summarize(changes: Sequence[Change]) -> str:
    """``"Plan: 3 to create, 1 to update, 0 to delete, 12 unchanged."``"""
    counts = {a: sum(1 for c in changes if c.action == a) for a in _SIGNS}
    if not any(counts[a] for a in ("create", "update", "delete")):
        return f"No changes: {counts['noop']} resources up to date."
    return (
        f"Plan: {counts['create']} to create, {counts['update']} to update, "
        f"{counts['delete']} to delete, {counts['noop']} unchanged."
    )


def render_changes(changes: Sequence[Change], *, show_noop: bool = False) -> str:
    """A readable diff: one ``+``/``~``/``-`` line per change, then its fields.

    Dict-valued fields (request parameters, stage variables, tags) are shown key by key.
    """
    lines: list[str] = []
    for change in changes:
        if change.action == "noop" and not show_noop:
            continue
        sign = _SIGNS[change.action]
        head = f"{sign} {change.resource} {change.name}"
        if change.resource_id and change.resource_id != change.name:
            head += f"  ({change.resource_id})"
        lines.append(head)
        for field, (old, new) in change.details.items():
            if isinstance(old, dict) or isinstance(new, dict):
                old_d = old if isinstance(old, dict) else {}
                new_d = new if isinstance(new, dict) else {}
                lines.append(f"    {sign} {field}:")
                for key in sorted({*old_d, *new_d}):
                    if key in old_d and key in new_d and old_d[key] == new_d[key]:
                        continue
                    if key in old_d and key in new_d:
                        lines.append(f"        ~ {key}: {_fmt(old_d[key])} -> {_fmt(new_d[key])}")
                    elif key in new_d:
                        lines.append(f"        + {key}: {_fmt(new_d[key])}")
                    else:
                        lines.append(f"        - {key}: {_fmt(old_d[key])}")
            elif change.action == "create":
                lines.append(f"    + {field}: {_fmt(new)}")
            elif change.action == "delete":
                lines.append(f"    - {field}: {_fmt(old)}")
            else:
                lines.append(f"    ~ {field}: {_fmt(old)} -> {_fmt(new)}")
    lines.append(summarize(changes))
    return "\n".join(lines)
