"""Making AWS match a spec: :func:`plan`, :func:`apply` and :func:`destroy`.

``apply`` re-reads what exists, computes the changes and performs them one by one in the
order of :func:`~apigw_ws_core.provision.plan.compute_changes`. After every step the gateway
record is saved with the ids of everything that exists at that moment (status
``"partial"``), so a failure midway leaves an accurate record and the next ``apply`` picks up
where this one stopped. When all steps succeed the record becomes ``"ready"``, and the
result is read back from AWS once more: anything still differing is reported as drift.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import attrs

from apigw_ws_core.gateways import GatewayRecord
from apigw_ws_core.provision.aws import (
    AwsClients,
    client_error,
    error_code,
    error_message,
    is_not_found,
)
from apigw_ws_core.provision.errors import ProvisionError
from apigw_ws_core.provision.plan import (
    Change,
    compute_changes,
    deploy_hash,
    desired_authorizer,
    desired_integration,
    desired_stage,
    destroy_changes,
)
from apigw_ws_core.provision.spec import GatewaySpec, ResolvedRoute
from apigw_ws_core.provision.state import (
    Observed,
    api_arn,
    find_hosted_zone,
    get_rrset,
    observe,
    wait_for_validation_record,
)
from apigw_ws_core.provision.store import GatewayStore, MemoryGatewayStore

__all__ = [
    "ApplyResult",
    "ProgressEvent",
    "apply",
    "destroy",
    "plan",
]


@attrs.frozen(kw_only=True)
class ProgressEvent:
    """One step of ``apply``/``destroy`` starting, finishing, failing, or waiting.

    ``index`` counts from 1 over the ``total`` changes that do something; ``message`` is a
    short human sentence (``"created abc123"``, ``"waiting up to 900s for ACM"``).
    """

    index: int
    total: int
    change: Change
    phase: Literal["start", "done", "failed", "info"]
    message: str = ""


Progress = Callable[[ProgressEvent], None]


@attrs.frozen(kw_only=True)
class ApplyResult:
    """What ``apply``/``destroy`` did: the changes performed, the final record, and drift.

    ``drift`` lists changes still needed when AWS was read back after applying (empty when
    AWS matches the spec; for ``destroy``, what could not be removed).
    """

    changes: list[Change]
    record: GatewayRecord
    drift: list[Change] = attrs.field(factory=list)

    @property
    def changed(self) -> bool:
        """Whether anything was created, updated or deleted."""
        return any(c.action != "noop" for c in self.changes)


def _resource_key(change: Change, spec: GatewaySpec) -> str | None:
    """The key under which the gateway record keeps this change's resource id."""
    resource = change.resource
    if resource == "api":
        return "api"
    if resource == "authorizer":
        return "authorizer" if change.action != "delete" else None
    if resource in ("integration", "route", "route_response"):
        return f"{resource}:{change.name}"
    if resource == "stage":
        return "stage" if change.name == spec.stage else None
    simple = {
        "deployment": "deployment",
        "certificate": "certificate",
        "validation_record": "dns:validation",
        "domain": "domain",
        "api_mapping": "api_mapping",
        "alias_record": "dns:alias",
    }
    return simple.get(resource)


def _seed_resources(
    spec: GatewaySpec, observed: Observed, record: GatewayRecord, changes: Sequence[Change]
) -> dict[str, str]:
    """Record resources for what exists now: the existing side of every planned change."""
    resources: dict[str, str] = {}
    for change in changes:
        if change.action not in ("noop", "update") or not change.resource_id:
            continue
        key = _resource_key(change, spec)
        if key is None:
            continue
        resources[key] = (
            change.name if change.resource == "validation_record" else (change.resource_id)
        )
    for change in changes:
        # Resources the plan deletes still exist until deleted.
        if change.action == "delete":
            if change.resource == "certificate" and "certificate" not in resources:
                resources["certificate:old"] = change.resource_id
            if change.resource == "domain":
                resources.setdefault("domain:old", change.resource_id)
    if observed.deployed_config and observed.api is not None:
        resources["deployment:config"] = observed.deployed_config
        stage = observed.stages.get(spec.stage) or {}
        if stage.get("DeploymentId"):
            resources["deployment"] = str(stage["DeploymentId"])
        elif record.resources.get("deployment") and record.api_id == observed.api_id:
            resources["deployment"] = record.resources["deployment"]
    for state in observed.domains:
        if state.hosted_zone_id and spec.domain is not None and state.name == spec.domain.name:
            resources["dns:zone"] = state.hosted_zone_id
    if observed.api is not None:
        # Tag keys we manage; without a record, those of ours the API has.
        present = set((observed.api.get("Tags") or {}).keys()) & set(spec.all_tags)
        resources["tags"] = record.resources.get("tags") or ",".join(sorted(present))
    return resources


class _Executor:
    """Performs changes one at a time, keeping the gateway record current."""

    def __init__(
        self,
        spec: GatewaySpec,
        aws: AwsClients,
        store: GatewayStore,
        record: GatewayRecord,
        observed: Observed,
        resources: dict[str, str],
    ) -> None:
        self.spec = spec
        self.aws = aws
        self.api = aws.apigatewayv2
        self.store = store
        self.observed = observed
        self.resources = resources
        self.record = record
        self.routes: dict[str, ResolvedRoute] = {r.key: r for r in spec.resolved_routes()}
        self.domain_target: dict[str, str] = {}
        self.note: Callable[[str], None] = lambda message: None

    # --- the record ------------------------------------------------------------------

    def save(self, status: str) -> GatewayRecord:
        """Save the record with the current resources and ``status``."""
        res = self.resources
        api_id = res.get("api", "")
        stage = res.get("stage", "")
        region = self.aws.region
        host = f"{api_id}.execute-api.{region}.amazonaws.com"
        domain = res.get("domain", "")
        self.record = attrs.evolve(
            self.record,
            api_id=api_id,
            region=region,
            stage=stage,
            api_endpoint=f"wss://{host}/{stage}" if api_id and stage else "",
            management_endpoint=f"https://{host}/{stage}" if api_id and stage else "",
            custom_domain=domain,
            resources=dict(sorted(res.items())),
            status=status,
            updated_at=datetime.now(UTC),
        )
        self.store.save_gateway(self.record)
        return self.record

    def forget(self, key: str, value: str | None = None) -> None:
        """Drop ``key`` from the resources (only if it still holds ``value``, when given)."""
        if key in self.resources and (value is None or self.resources[key] == value):
            del self.resources[key]

    def need(self, key: str, what: str) -> str:
        """A resource id an earlier step must have produced."""
        value = self.resources.get(key)
        if not value:
            raise ProvisionError(f"{what} is missing (no {key!r} in the gateway record)")
        return value

    # --- dispatch --------------------------------------------------------------------

    def run(self, change: Change) -> str:
        """Perform one change; returns a short description of what was done."""
        handler = getattr(self, f"_{change.action}_{change.resource}", None)
        if handler is None:  # pragma: no cover - every planned change has a handler
            raise ProvisionError(f"don't know how to {change.action} a {change.resource}")
        result: str = handler(change)
        return result

    # --- api -------------------------------------------------------------------------

    def _create_api(self, change: Change) -> str:
        spec = self.spec
        created = self.api.create_api(
            Name=spec.effective_api_name,
            ProtocolType="WEBSOCKET",
            RouteSelectionExpression=spec.route_selection_expression,
            Description=spec.description,
            Tags=spec.all_tags,
        )
        self.resources["api"] = created["ApiId"]
        self.resources["tags"] = ",".join(sorted(spec.all_tags))
        return f"created {created['ApiId']}"

    def _update_api(self, change: Change) -> str:
        spec = self.spec
        api_id = change.resource_id
        fields = {k for k in change.details if k != "Tags"}
        if fields:
            self.api.update_api(
                ApiId=api_id,
                Name=spec.effective_api_name,
                RouteSelectionExpression=spec.route_selection_expression,
                Description=spec.description,
            )
        if "Tags" in change.details:
            arn = api_arn(self.aws.region, api_id)
            self.api.tag_resource(ResourceArn=arn, Tags=spec.all_tags)
            previous = set(filter(None, self.resources.get("tags", "").split(",")))
            stale = sorted(previous - set(spec.all_tags))
            if stale:
                self.api.untag_resource(ResourceArn=arn, TagKeys=stale)
            self.resources["tags"] = ",".join(sorted(spec.all_tags))
        return "updated " + ", ".join(sorted(change.details))

    def _delete_api(self, change: Change) -> str:
        self.api.delete_api(ApiId=change.resource_id)
        for key in list(self.resources):
            if key.split(":")[0] in (
                "api",
                "authorizer",
                "integration",
                "route",
                "route_response",
                "stage",
                "deployment",
                "tags",
            ):
                del self.resources[key]
        return "deleted, with its integrations, routes and stages"

    # --- authorizer ------------------------------------------------------------------

    def _create_authorizer(self, change: Change) -> str:
        api_id = self.need("api", "the API")
        wanted = desired_authorizer(self.spec)
        assert wanted is not None
        created = self.api.create_authorizer(ApiId=api_id, **wanted)
        self.resources["authorizer"] = created["AuthorizerId"]
        return f"created {created['AuthorizerId']}"

    def _update_authorizer(self, change: Change) -> str:
        api_id = self.need("api", "the API")
        wanted = desired_authorizer(self.spec)
        assert wanted is not None
        if "AuthorizerCredentialsArn" not in wanted:
            wanted["AuthorizerCredentialsArn"] = ""
        self.api.update_authorizer(ApiId=api_id, AuthorizerId=change.resource_id, **wanted)
        self.resources["authorizer"] = change.resource_id
        return "updated " + ", ".join(sorted(change.details))

    def _delete_authorizer(self, change: Change) -> str:
        api_id = self.need("api", "the API")
        self.api.delete_authorizer(ApiId=api_id, AuthorizerId=change.resource_id)
        self.forget("authorizer", change.resource_id)
        return "deleted"

    # --- integrations ----------------------------------------------------------------

    def _create_integration(self, change: Change) -> str:
        api_id = self.need("api", "the API")
        params = desired_integration(self.spec, self.routes[change.name])
        created = self.api.create_integration(ApiId=api_id, **params)
        self.resources[f"integration:{change.name}"] = created["IntegrationId"]
        return f"created {created['IntegrationId']}"

    def _update_integration(self, change: Change) -> str:
        api_id = self.need("api", "the API")
        params = desired_integration(self.spec, self.routes[change.name])
        old = self.observed.integrations.get(change.resource_id, {})
        # Mappings we no longer want are removed by sending them with an empty value.
        removed = {
            k: ""
            for k in (old.get("RequestParameters") or {})
            if k not in params["RequestParameters"]
        }
        params["RequestParameters"] = {**params["RequestParameters"], **removed}
        self.api.update_integration(ApiId=api_id, IntegrationId=change.resource_id, **params)
        self.resources[f"integration:{change.name}"] = change.resource_id
        return "updated " + ", ".join(sorted(change.details))

    def _delete_integration(self, change: Change) -> str:
        api_id = self.need("api", "the API")
        self.api.delete_integration(ApiId=api_id, IntegrationId=change.resource_id)
        for key, value in list(self.resources.items()):
            if key.startswith("integration:") and value == change.resource_id:
                del self.resources[key]
        return "deleted"

    # --- routes ----------------------------------------------------------------------

    def _route_params(self, key: str) -> dict[str, Any]:
        integration = self.need(f"integration:{key}", f"the integration of route {key}")
        two_way = self.routes[key].two_way
        params: dict[str, Any] = {
            "Target": f"integrations/{integration}",
            "RouteResponseSelectionExpression": "$default" if two_way else "",
        }
        if key == "$connect":
            if self.spec.authorizer is not None:
                params["AuthorizationType"] = "CUSTOM"
                params["AuthorizerId"] = self.need("authorizer", "the authorizer")
            else:
                params["AuthorizationType"] = "NONE"
        return params

    def _create_route(self, change: Change) -> str:
        api_id = self.need("api", "the API")
        params = self._route_params(change.name)
        if not params["RouteResponseSelectionExpression"]:
            del params["RouteResponseSelectionExpression"]
        created = self.api.create_route(ApiId=api_id, RouteKey=change.name, **params)
        self.resources[f"route:{change.name}"] = created["RouteId"]
        return f"created {created['RouteId']}"

    def _update_route(self, change: Change) -> str:
        api_id = self.need("api", "the API")
        params = self._route_params(change.name)
        self.api.update_route(ApiId=api_id, RouteId=change.resource_id, **params)
        self.resources[f"route:{change.name}"] = change.resource_id
        return "updated " + ", ".join(sorted(change.details))

    def _delete_route(self, change: Change) -> str:
        api_id = self.need("api", "the API")
        self.api.delete_route(ApiId=api_id, RouteId=change.resource_id)
        self.forget(f"route:{change.name}")
        self.forget(f"route_response:{change.name}")
        return "deleted"

    def _create_route_response(self, change: Change) -> str:
        api_id = self.need("api", "the API")
        route_id = self.need(f"route:{change.name}", f"route {change.name}")
        created = self.api.create_route_response(
            ApiId=api_id, RouteId=route_id, RouteResponseKey="$default"
        )
        self.resources[f"route_response:{change.name}"] = created["RouteResponseId"]
        return f"created {created['RouteResponseId']}"

    def _delete_route_response(self, change: Change) -> str:
        api_id = self.need("api", "the API")
        route_id = self.need(f"route:{change.name}", f"route {change.name}")
        self.api.delete_route_response(
            ApiId=api_id, RouteId=route_id, RouteResponseId=change.resource_id
        )
        self.forget(f"route_response:{change.name}", change.resource_id)
        return "deleted"

    # --- stage and deployment -------------------------------------------------------

    def _create_stage(self, change: Change) -> str:
        api_id = self.need("api", "the API")
        wanted = desired_stage(self.spec)
        kwargs: dict[str, Any] = {"StageVariables": wanted["StageVariables"]}
        if wanted["DefaultRouteSettings"]:
            kwargs["DefaultRouteSettings"] = wanted["DefaultRouteSettings"]
        self.api.create_stage(
            ApiId=api_id, StageName=self.spec.stage, Tags=self.spec.all_tags, **kwargs
        )
        self.resources["stage"] = self.spec.stage
        return "created"

    def _update_stage(self, change: Change) -> str:
        api_id = self.need("api", "the API")
        wanted = desired_stage(self.spec)
        old = self.observed.stages.get(self.spec.stage, {})
        removed = {
            k: "" for k in (old.get("StageVariables") or {}) if k not in wanted["StageVariables"]
        }
        settings = {**(old.get("DefaultRouteSettings") or {}), **wanted["DefaultRouteSettings"]}
        self.api.update_stage(
            ApiId=api_id,
            StageName=self.spec.stage,
            StageVariables={**wanted["StageVariables"], **removed},
            DefaultRouteSettings=settings,
        )
        self.resources["stage"] = self.spec.stage
        return "updated " + ", ".join(sorted(change.details))

    def _delete_stage(self, change: Change) -> str:
        api_id = self.need("api", "the API")
        self.api.delete_stage(ApiId=api_id, StageName=change.name)
        self.forget("stage", change.name)
        return "deleted"

    def _create_deployment(self, change: Change) -> str:
        api_id = self.need("api", "the API")
        config = deploy_hash(self.spec)
        created = self.api.create_deployment(
            ApiId=api_id,
            StageName=self.spec.stage,
            Description=f"apigw-ws config {config}",
        )
        self.resources["deployment"] = str(created.get("DeploymentId", ""))
        self.resources["deployment:config"] = config
        return f"deployed {created.get('DeploymentId', '')} to stage {self.spec.stage}"

    # --- certificate and DNS ---------------------------------------------------------

    def _zone(self, domain: str) -> str:
        zone = self.resources.get("dns:zone")
        if self.spec.domain is not None and self.spec.domain.name == domain:
            zone = self.spec.domain.hosted_zone_id or zone
        zone = zone or find_hosted_zone(self.aws, domain)
        if not zone:
            raise ProvisionError(
                f"no public Route 53 hosted zone holds {domain}; set hosted_zone_id"
            )
        if self.spec.domain is not None and self.spec.domain.name == domain:
            self.resources["dns:zone"] = zone
        return zone

    def _create_certificate(self, change: Change) -> str:
        created = self.aws.acm.request_certificate(
            DomainName=change.name,
            ValidationMethod="DNS",
            # Protects against duplicates from retries of this one call only: a new
            # certificate is requested only when none tagged as ours exists.
            IdempotencyToken=secrets.token_hex(16),
            Tags=[{"Key": k, "Value": v} for k, v in sorted(self.spec.all_tags.items())],
        )
        self.resources["certificate"] = created["CertificateArn"]
        return f"requested {created['CertificateArn']}"

    def _delete_certificate(self, change: Change) -> str:
        deadline = time.monotonic() + 120
        while True:
            try:
                self.aws.acm.delete_certificate(CertificateArn=change.resource_id)
                break
            except client_error() as exc:
                if is_not_found(exc):
                    break
                # API Gateway releases a certificate a little after its domain is deleted.
                if error_code(exc) != "ResourceInUseException" or time.monotonic() > deadline:
                    raise
                self.note("certificate still in use; retrying in 10s")
                time.sleep(10)
        self.forget("certificate", change.resource_id)
        self.forget("certificate:old", change.resource_id)
        return "deleted"

    def _upsert_validation(self, change: Change) -> str:
        domain = self.spec.domain
        assert domain is not None
        arn = change.resource_id or self.need("certificate", "the certificate")
        record = wait_for_validation_record(self.aws, arn)
        zone = self._zone(domain.name)
        self._change_rrsets(
            zone,
            "UPSERT",
            {
                "Name": record["Name"],
                "Type": record["Type"],
                "TTL": 300,
                "ResourceRecords": [{"Value": record["Value"]}],
            },
        )
        self.resources["dns:validation"] = record["Name"]
        return f"{record['Name']} CNAME {record['Value']}"

    _create_validation_record = _upsert_validation
    _update_validation_record = _upsert_validation

    def _delete_validation_record(self, change: Change) -> str:
        zones = [z for z in (self.resources.get("dns:zone"),) if z]
        for state in self.observed.domains:
            if state.hosted_zone_id:
                zones.append(state.hosted_zone_id)
        for zone in dict.fromkeys(zones):
            rrset = get_rrset(self.aws, zone, change.name, "CNAME")
            if rrset is not None:
                self._change_rrsets(zone, "DELETE", rrset)
        self.forget("dns:validation", change.name)
        return "deleted"

    def _change_rrsets(self, zone: str, action: str, rrset: dict[str, Any]) -> None:
        self.aws.route53.change_resource_record_sets(
            HostedZoneId=zone,
            ChangeBatch={
                "Comment": f"apigw-ws {self.spec.name}",
                "Changes": [{"Action": action, "ResourceRecordSet": rrset}],
            },
        )

    # --- custom domain ---------------------------------------------------------------

    def _certificate_arn(self) -> str:
        domain = self.spec.domain
        assert domain is not None
        if domain.certificate_arn:
            return domain.certificate_arn
        arn = self.need("certificate", "the certificate")
        status = self.aws.acm.describe_certificate(CertificateArn=arn)["Certificate"]["Status"]
        if status != "ISSUED":
            timeout = domain.certificate_timeout
            delay = 15 if timeout >= 60 else 1
            self.note(f"waiting up to {timeout}s for ACM to issue {arn}")
            waiter = self.aws.acm.get_waiter("certificate_validated")
            try:
                waiter.wait(
                    CertificateArn=arn,
                    WaiterConfig={"Delay": delay, "MaxAttempts": max(1, timeout // delay)},
                )
            except Exception as exc:
                raise ProvisionError(
                    f"certificate {arn} is not issued yet ({exc}); DNS validation can take "
                    "up to 30 minutes: run apply again later"
                ) from exc
        return arn

    def _remember_target(self, domain: dict[str, Any]) -> None:
        config = (domain.get("DomainNameConfigurations") or [{}])[0]
        self.domain_target = {
            "DNSName": str(config.get("ApiGatewayDomainName") or ""),
            "HostedZoneId": str(config.get("HostedZoneId") or ""),
        }

    def _domain_config(self) -> list[dict[str, str]]:
        return [
            {
                "CertificateArn": self._certificate_arn(),
                "EndpointType": "REGIONAL",
                "SecurityPolicy": "TLS_1_2",
            }
        ]

    def _create_domain(self, change: Change) -> str:
        created = self.api.create_domain_name(
            DomainName=change.name,
            DomainNameConfigurations=self._domain_config(),
            Tags=self.spec.all_tags,
        )
        self.resources["domain"] = change.name
        self._remember_target(created)
        return f"created, target {self.domain_target['DNSName'] or '(unknown)'}"

    def _update_domain(self, change: Change) -> str:
        updated = self.api.update_domain_name(
            DomainName=change.name, DomainNameConfigurations=self._domain_config()
        )
        self.resources["domain"] = change.name
        self._remember_target(updated)
        return "updated " + ", ".join(sorted(change.details))

    def _delete_domain(self, change: Change) -> str:
        self.api.delete_domain_name(DomainName=change.name)
        self.forget("domain", change.name)
        self.forget("domain:old", change.name)
        return "deleted"

    def _create_api_mapping(self, change: Change) -> str:
        domain = self.spec.domain
        assert domain is not None
        created = self.api.create_api_mapping(
            DomainName=domain.name,
            ApiId=self.need("api", "the API"),
            Stage=self.spec.stage,
            ApiMappingKey=domain.base_path,
        )
        self.resources["api_mapping"] = created["ApiMappingId"]
        return f"created {created['ApiMappingId']}"

    def _update_api_mapping(self, change: Change) -> str:
        domain = self.spec.domain
        assert domain is not None
        self.api.update_api_mapping(
            DomainName=domain.name,
            ApiMappingId=change.resource_id,
            ApiId=self.need("api", "the API"),
            Stage=self.spec.stage,
            ApiMappingKey=domain.base_path,
        )
        self.resources["api_mapping"] = change.resource_id
        return "updated " + ", ".join(sorted(change.details))

    def _delete_api_mapping(self, change: Change) -> str:
        domain_name = change.name.split("/", 1)[0]
        try:
            self.api.delete_api_mapping(ApiMappingId=change.resource_id, DomainName=domain_name)
        except client_error() as exc:
            if not is_not_found(exc):
                raise
        self.forget("api_mapping", change.resource_id)
        return "deleted"

    def _upsert_alias(self, change: Change) -> str:
        if not self.domain_target.get("DNSName"):
            domain = self.api.get_domain_name(DomainName=change.name)
            self._remember_target(domain)
        target = self.domain_target
        if not target.get("DNSName") or not target.get("HostedZoneId"):
            raise ProvisionError(
                f"API Gateway did not report the target host name of {change.name}"
            )
        zone = self._zone(change.name)
        self._change_rrsets(
            zone,
            "UPSERT",
            {
                "Name": change.name,
                "Type": "A",
                "AliasTarget": {
                    "DNSName": target["DNSName"],
                    "HostedZoneId": target["HostedZoneId"],
                    "EvaluateTargetHealth": False,
                },
            },
        )
        self.resources["dns:alias"] = change.name
        return f"{change.name} A ALIAS {target['DNSName']}"

    _create_alias_record = _upsert_alias
    _update_alias_record = _upsert_alias

    def _delete_alias_record(self, change: Change) -> str:
        state = next((d for d in self.observed.domains if d.name == change.name), None)
        zone = state.hosted_zone_id if state else None
        if zone:
            rrset = get_rrset(self.aws, zone, change.name, "A")
            if rrset is not None:
                self._change_rrsets(zone, "DELETE", rrset)
        self.forget("dns:alias", change.name)
        return "deleted"


def _resolve(
    spec: GatewaySpec,
    storage: GatewayStore | None,
    aws: AwsClients | None,
    session: Any,
) -> tuple[GatewayStore, AwsClients, GatewayRecord]:
    store: GatewayStore = storage if storage is not None else MemoryGatewayStore()
    clients = aws or AwsClients.create(session=session, region=spec.region)
    if spec.region and clients.region != spec.region:
        raise ProvisionError(
            f"the spec's region is {spec.region} but the AWS clients use {clients.region}"
        )
    record = store.get_gateway(spec.name) or GatewayRecord(name=spec.name, region=clients.region)
    if record.region and record.region != clients.region and record.status != "destroyed":
        raise ProvisionError(
            f"gateway {spec.name!r} was provisioned in {record.region}, not {clients.region}; "
            "destroy it there first"
        )
    return store, clients, record


def _check_dns(spec: GatewaySpec, observed: Observed) -> None:
    if spec.domain is None or not spec.domain.manage_dns:
        return
    for state in observed.domains:
        if state.name == spec.domain.name and not state.hosted_zone_id:
            raise ProvisionError(
                f"no public Route 53 hosted zone holds {spec.domain.name}: create one, set "
                "hosted_zone_id, or set manage_dns = false and give certificate_arn"
            )


def plan(
    spec: GatewaySpec,
    *,
    storage: GatewayStore | None = None,
    aws: AwsClients | None = None,
    session: Any = None,
) -> list[Change]:
    """Read what exists and return the changes ``apply`` would make (noops included).

    Nothing is changed in AWS or in ``storage``. Render the result with
    :func:`~apigw_ws_core.provision.plan.render_changes`.
    """
    _, clients, record = _resolve(spec, storage, aws, session)
    observed = observe(spec, record, clients)
    _check_dns(spec, observed)
    return compute_changes(spec, observed, record)


def _execute(
    executor: _Executor,
    changes: Sequence[Change],
    progress: Progress | None,
) -> list[Change]:
    todo = [c for c in changes if c.action != "noop"]
    done: list[Change] = []
    for index, change in enumerate(todo, start=1):

        def note(message: str, change: Change = change, index: int = index) -> None:
            if progress is not None:
                progress(
                    ProgressEvent(
                        index=index, total=len(todo), change=change, phase="info", message=message
                    )
                )

        executor.note = note
        if progress is not None:
            progress(ProgressEvent(index=index, total=len(todo), change=change, phase="start"))
        try:
            message = executor.run(change)
        except Exception as exc:
            executor.save("partial")
            reason = error_message(exc) if isinstance(exc, client_error()) else str(exc)
            if progress is not None:
                progress(
                    ProgressEvent(
                        index=index, total=len(todo), change=change, phase="failed", message=reason
                    )
                )
            raise ProvisionError(
                f"{change.action} {change.label} failed: {reason}. The gateway record lists "
                "what exists; run apply again to resume.",
                step=change.label,
            ) from exc
        executor.save("partial")
        done.append(change)
        if progress is not None:
            progress(
                ProgressEvent(
                    index=index, total=len(todo), change=change, phase="done", message=message
                )
            )
    return done


def apply(
    spec: GatewaySpec,
    *,
    storage: GatewayStore | None = None,
    aws: AwsClients | None = None,
    session: Any = None,
    progress: Progress | None = None,
    verify: bool = True,
) -> ApplyResult:
    """Create, update and delete resources until AWS matches ``spec``.

    Idempotent: when nothing differs nothing is changed (and the stage is not redeployed).
    ``storage`` keeps the gateway record (any :class:`~apigw_ws_core.storage.Storage`, a
    :class:`~apigw_ws_core.provision.store.FileGatewayStore`, or ``None`` for none);
    ``aws`` are the clients (built from ``session``, a ``boto3.Session``, when ``None``).
    Raises :class:`~apigw_ws_core.provision.errors.ProvisionError` when a step fails, after
    saving a ``"partial"`` record of what exists.
    """
    store, clients, record = _resolve(spec, storage, aws, session)
    observed = observe(spec, record, clients)
    _check_dns(spec, observed)
    changes = compute_changes(spec, observed, record)
    resources = _seed_resources(spec, observed, record, changes)
    executor = _Executor(spec, clients, store, record, observed, resources)
    _execute(executor, changes, progress)
    for key in ("certificate:old", "domain:old"):
        executor.forget(key)
    executor.record = attrs.evolve(executor.record, spec_hash=spec.spec_hash())
    final = executor.save("ready")
    drift: list[Change] = []
    if verify:
        again = observe(spec, final, clients)
        drift = [c for c in compute_changes(spec, again, final) if c.action != "noop"]
    return ApplyResult(changes=list(changes), record=final, drift=drift)


def destroy(
    spec: GatewaySpec,
    *,
    storage: GatewayStore | None = None,
    aws: AwsClients | None = None,
    session: Any = None,
    progress: Progress | None = None,
    dry_run: bool = False,
) -> ApplyResult:
    """Remove everything provisioning made for ``spec``'s gateway.

    Deletes the alias record, API mappings and custom domain, the API (which takes its
    integrations, routes, route responses, stages and deployments along), and the
    certificate and its validation record when provisioning requested them. A certificate
    given by ARN and resources not tagged as ours are left alone. With ``dry_run`` nothing
    is deleted and the result lists what would be.
    """
    store, clients, record = _resolve(spec, storage, aws, session)
    observed = observe(spec, record, clients)
    changes = destroy_changes(spec, observed)
    if dry_run:
        return ApplyResult(changes=changes, record=record)
    resources = dict(record.resources)
    for state in observed.domains:
        if state.hosted_zone_id:
            resources.setdefault("dns:zone", state.hosted_zone_id)
    executor = _Executor(spec, clients, store, record, observed, resources)
    _execute(executor, changes, progress)
    executor.resources.clear()
    executor.record = attrs.evolve(executor.record, spec_hash="")
    final = executor.save("destroyed")
    again = observe(spec, final, clients)
    leftover = destroy_changes(spec, again)
    return ApplyResult(changes=changes, record=final, drift=leftover)
