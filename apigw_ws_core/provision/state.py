"""Reading what exists in AWS for one gateway.

:func:`observe` finds the gateway's resources through the ids in its record **and** by
name and tag, so a lost or stale record never leads to duplicates: the API is found by the
:data:`~apigw_ws_core.provision.spec.GATEWAY_TAG` tag, integrations by the route that targets
them or by their description, the requested certificate by domain and tag, and DNS records by
name. Resources that exist but are not ours (an untagged API with our name, a foreign custom
domain) stop provisioning with a clear error instead of being taken over.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import attrs

from apigw_ws_core.gateways import GatewayRecord
from apigw_ws_core.provision.aws import (
    AwsClients,
    client_error,
    error_message,
    is_not_found,
    paginate,
)
from apigw_ws_core.provision.errors import ProvisionError
from apigw_ws_core.provision.spec import GATEWAY_TAG, GatewaySpec

__all__ = [
    "CertificateState",
    "DomainState",
    "Observed",
    "api_arn",
    "find_hosted_zone",
    "get_rrset",
    "observe",
    "validation_record_of",
    "wait_for_validation_record",
]


@attrs.define(kw_only=True)
class CertificateState:
    """An ACM certificate we requested (``describe_certificate``'s ``Certificate``)."""

    arn: str
    domain_name: str
    status: str
    validation: dict[str, str] | None
    #: The validation CNAME as it is in Route 53, if it is there.
    validation_rrset: dict[str, Any] | None = None


@attrs.define(kw_only=True)
class DomainState:
    """A custom domain name we manage (or will), with its mappings and alias record."""

    name: str
    domain: dict[str, Any] | None = None
    mappings: list[dict[str, Any]] = attrs.field(factory=list)
    alias_rrset: dict[str, Any] | None = None
    hosted_zone_id: str | None = None


@attrs.define(kw_only=True)
class Observed:
    """Everything that exists for one gateway, as read from AWS."""

    api: dict[str, Any] | None = None
    authorizers: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    integrations: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    routes: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    route_responses: dict[str, list[dict[str, Any]]] = attrs.field(factory=dict)
    stages: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    deployed_config: str | None = None
    certificates: list[CertificateState] = attrs.field(factory=list)
    domains: list[DomainState] = attrs.field(factory=list)

    @property
    def api_id(self) -> str | None:
        """The API's id, if the API exists."""
        return None if self.api is None else str(self.api["ApiId"])


def api_arn(region: str, api_id: str) -> str:
    """The ARN API Gateway uses to tag an API."""
    return f"arn:aws:apigateway:{region}::/apis/{api_id}"


def _call(what: str, fn: Any, **kwargs: Any) -> Any:
    """Call ``fn(**kwargs)``, turning AWS errors into :class:`ProvisionError`."""
    try:
        return fn(**kwargs)
    except client_error() as exc:
        raise ProvisionError(f"reading {what} failed: {error_message(exc)}") from exc


def _collect(what: str, fn: Any, key: str, **kwargs: Any) -> list[Any]:
    """Every item of a paginated list call, turning AWS errors into :class:`ProvisionError`."""
    try:
        return list(paginate(fn, key, **kwargs))
    except client_error() as exc:
        raise ProvisionError(f"reading {what} failed: {error_message(exc)}") from exc


def _get_or_none(what: str, fn: Any, **kwargs: Any) -> Any:
    try:
        return fn(**kwargs)
    except client_error() as exc:
        if is_not_found(exc):
            return None
        raise ProvisionError(f"reading {what} failed: {error_message(exc)}") from exc


def _find_api(spec: GatewaySpec, record: GatewayRecord | None, aws: AwsClients) -> Any:
    client = aws.apigatewayv2
    if record is not None and record.api_id:
        api = _get_or_none("the API", client.get_api, ApiId=record.api_id)
        if api is not None:
            return api
    ours: list[dict[str, Any]] = []
    same_name: list[dict[str, Any]] = []
    try:
        for item in paginate(client.get_apis, "Items"):
            if item.get("ProtocolType") != "WEBSOCKET":
                continue
            if (item.get("Tags") or {}).get(GATEWAY_TAG) == spec.name:
                ours.append(item)
            elif item.get("Name") == spec.effective_api_name:
                same_name.append(item)
    except client_error() as exc:
        raise ProvisionError(f"listing APIs failed: {error_message(exc)}") from exc
    if len(ours) > 1:
        ids = ", ".join(sorted(a["ApiId"] for a in ours))
        raise ProvisionError(
            f"several APIs are tagged {GATEWAY_TAG}={spec.name} ({ids}); delete the extra ones"
        )
    if ours:
        return ours[0]
    if same_name:
        raise ProvisionError(
            f"a WebSocket API named {spec.effective_api_name!r} exists "
            f"({same_name[0]['ApiId']}) but is not managed by apigw-ws; tag it "
            f"{GATEWAY_TAG}={spec.name} to adopt it, or choose another api_name"
        )
    return None


def _read_api_children(observed: Observed, aws: AwsClients) -> None:
    client = aws.apigatewayv2
    api_id = observed.api_id
    for item in _collect("authorizers", client.get_authorizers, "Items", ApiId=api_id):
        observed.authorizers[item["AuthorizerId"]] = item
    for item in _collect("integrations", client.get_integrations, "Items", ApiId=api_id):
        observed.integrations[item["IntegrationId"]] = item
    for item in _collect("routes", client.get_routes, "Items", ApiId=api_id):
        observed.routes[item["RouteKey"]] = item
    for item in _collect("stages", client.get_stages, "Items", ApiId=api_id):
        observed.stages[item["StageName"]] = item
    for key, route in observed.routes.items():
        observed.route_responses[key] = _collect(
            "route responses",
            client.get_route_responses,
            "Items",
            ApiId=api_id,
            RouteId=route["RouteId"],
        )


def _deployed_config(
    record: GatewayRecord | None, observed: Observed, stage: str, aws: AwsClients
) -> str | None:
    """The configuration hash of the stage's deployment (see ``plan.deploy_hash``).

    The record knows it; without a record, the deployment's description says it.
    """
    if record is not None and record.api_id == observed.api_id:
        value = record.resources.get("deployment:config")
        if value:
            return value
    stage_data = observed.stages.get(stage)
    deployment_id = stage_data.get("DeploymentId") if stage_data else None
    if not deployment_id:
        return None
    deployment = _get_or_none(
        "the deployment",
        aws.apigatewayv2.get_deployment,
        ApiId=observed.api_id,
        DeploymentId=deployment_id,
    )
    description = str((deployment or {}).get("Description", ""))
    prefix = "apigw-ws config "
    return description[len(prefix) :] if description.startswith(prefix) else None


def find_hosted_zone(aws: AwsClients, domain: str) -> str | None:
    """The id of the public Route 53 hosted zone that holds ``domain`` (longest match)."""
    labels = domain.rstrip(".").split(".")
    for start in range(len(labels) - 1):
        candidate = ".".join(labels[start:]) + "."
        page = _call(
            "hosted zones",
            aws.route53.list_hosted_zones_by_name,
            DNSName=candidate,
            MaxItems="10",
        )
        for zone in page.get("HostedZones", []):
            if zone["Name"].lower() == candidate.lower() and not zone.get("Config", {}).get(
                "PrivateZone"
            ):
                return str(zone["Id"]).split("/")[-1]
    return None


def get_rrset(aws: AwsClients, zone_id: str, name: str, rtype: str) -> dict[str, Any] | None:
    """The record set ``name``/``rtype`` in the zone, or ``None``."""
    fqdn = name if name.endswith(".") else name + "."
    page = _call(
        f"DNS record {fqdn}",
        aws.route53.list_resource_record_sets,
        HostedZoneId=zone_id,
        StartRecordName=fqdn,
        StartRecordType=rtype,
        MaxItems="1",
    )
    for rrset in page.get("ResourceRecordSets", []):
        if rrset["Name"].lower() == fqdn.lower() and rrset["Type"] == rtype:
            return dict(rrset)
    return None


def validation_record_of(certificate: dict[str, Any]) -> dict[str, str] | None:
    """The DNS validation CNAME ACM asks for (``Name``/``Type``/``Value``), once known."""
    for option in certificate.get("DomainValidationOptions", []):
        record = option.get("ResourceRecord")
        if record:
            return {"Name": record["Name"], "Type": record["Type"], "Value": record["Value"]}
    return None


def _describe_certificate(aws: AwsClients, arn: str) -> dict[str, Any] | None:
    described = _get_or_none("the certificate", aws.acm.describe_certificate, CertificateArn=arn)
    return None if described is None else dict(described["Certificate"])


def _owned_certificates(
    spec: GatewaySpec, record: GatewayRecord | None, names: Iterable[str], aws: AwsClients
) -> list[CertificateState]:
    arns: list[str] = []
    if record is not None and record.resources.get("certificate"):
        arns.append(record.resources["certificate"])
    wanted = set(names)
    if wanted:
        summaries = _collect(
            "certificates",
            aws.acm.list_certificates,
            "CertificateSummaryList",
            CertificateStatuses=["PENDING_VALIDATION", "ISSUED", "FAILED", "EXPIRED"],
        )
        for summary in summaries:
            arn = summary["CertificateArn"]
            if summary.get("DomainName") not in wanted or arn in arns:
                continue
            tags = _get_or_none(
                "certificate tags", aws.acm.list_tags_for_certificate, CertificateArn=arn
            )
            tag_map = {t["Key"]: t.get("Value") for t in (tags or {}).get("Tags", [])}
            if tag_map.get(GATEWAY_TAG) == spec.name:
                arns.append(arn)
    found = []
    for arn in arns:
        cert = _describe_certificate(aws, arn)
        if cert is None:
            continue
        found.append(
            CertificateState(
                arn=arn,
                domain_name=str(cert.get("DomainName", "")),
                status=str(cert.get("Status", "")),
                validation=validation_record_of(cert),
            )
        )
    return found


def _read_domain(
    spec: GatewaySpec, record: GatewayRecord | None, name: str, aws: AwsClients
) -> DomainState:
    state = DomainState(name=name)
    domain = _get_or_none("the custom domain", aws.apigatewayv2.get_domain_name, DomainName=name)
    if domain is not None:
        owned = (domain.get("Tags") or {}).get(GATEWAY_TAG) == spec.name or (
            record is not None and record.resources.get("domain") == name
        )
        if not owned:
            raise ProvisionError(
                f"custom domain {name} exists but is not managed by apigw-ws gateway "
                f"{spec.name!r}; delete it or tag it {GATEWAY_TAG}={spec.name}"
            )
        state.domain = dict(domain)
        state.mappings = _collect(
            "API mappings", aws.apigatewayv2.get_api_mappings, "Items", DomainName=name
        )
    manage_dns = spec.domain.manage_dns if spec.domain and spec.domain.name == name else True
    if manage_dns:
        zone = None
        if spec.domain is not None and spec.domain.name == name:
            zone = spec.domain.hosted_zone_id
        if zone is None and record is not None and record.resources.get("dns:zone"):
            zone = record.resources["dns:zone"]
        state.hosted_zone_id = zone or find_hosted_zone(aws, name)
        if state.hosted_zone_id:
            state.alias_rrset = get_rrset(aws, state.hosted_zone_id, name, "A")
    return state


def observe(spec: GatewaySpec, record: GatewayRecord | None, aws: AwsClients) -> Observed:
    """Read everything that exists for ``spec``'s gateway (and what ``record`` says it made)."""
    observed = Observed()
    observed.api = _find_api(spec, record, aws)
    if observed.api is not None:
        _read_api_children(observed, aws)
        observed.deployed_config = _deployed_config(record, observed, spec.stage, aws)
    names: list[str] = []
    if spec.domain is not None:
        names.append(spec.domain.name)
    if record is not None and record.resources.get("domain") not in (None, "", *names):
        names.append(record.resources["domain"])
    for name in names:
        observed.domains.append(_read_domain(spec, record, name, aws))
    cert_names = list(names)
    if record is not None and record.custom_domain and record.custom_domain not in cert_names:
        cert_names.append(record.custom_domain)
    observed.certificates = _owned_certificates(spec, record, cert_names, aws)
    zone_by_name = {d.name: d.hosted_zone_id for d in observed.domains}
    for cert in observed.certificates:
        zone = zone_by_name.get(cert.domain_name)
        if zone and cert.validation:
            cert.validation_rrset = get_rrset(aws, zone, cert.validation["Name"], "CNAME")
    return observed


def wait_for_validation_record(
    aws: AwsClients, arn: str, timeout: float = 120.0, interval: float = 2.0
) -> dict[str, str]:
    """Poll ACM until it publishes the DNS validation record of a new certificate."""
    deadline = time.monotonic() + timeout
    while True:
        cert = _describe_certificate(aws, arn)
        record = validation_record_of(cert or {})
        if record is not None:
            return record
        if time.monotonic() >= deadline:
            raise ProvisionError(
                f"ACM did not publish the validation record of {arn} within {timeout:.0f}s; "
                "run apply again"
            )
        time.sleep(interval)
