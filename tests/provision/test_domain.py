"""Custom domains: ACM certificate, Route 53 validation and alias records, API mappings."""

from __future__ import annotations

import moto.settings
import pytest

from apigw_ws_core.provision import GATEWAY_TAG, ProvisionError, apply, destroy, plan
from tests.provision.conftest import AwsEnv, domain_spec, make_spec
from tests.provision.moto_gaps import REGIONAL_ZONE


def _pending(changes):
    return [c for c in changes if c.action != "noop"]


def _zone(aws: AwsEnv, name: str = "example.com") -> str:
    zone = aws.client("route53").create_hosted_zone(Name=name, CallerReference=name)
    return zone["HostedZone"]["Id"].split("/")[-1]


def _records(aws: AwsEnv, zone: str) -> dict[tuple[str, str], dict]:
    items = aws.client("route53").list_resource_record_sets(HostedZoneId=zone)
    return {(r["Name"], r["Type"]): r for r in items["ResourceRecordSets"]}


def test_requested_certificate_validation_and_alias_records(aws: AwsEnv) -> None:
    zone = _zone(aws)
    spec = make_spec(domain=domain_spec())
    changes = _pending(plan(spec, storage=aws.store, aws=aws.clients))
    kinds = [c.resource for c in changes]
    assert kinds[:3] == ["certificate", "validation_record", "api"]
    assert kinds[-3:] == ["domain", "api_mapping", "alias_record"]

    result = apply(spec, storage=aws.store, aws=aws.clients)
    assert result.drift == []
    record = result.record
    assert record.custom_domain == "ws.example.com"
    assert record.resources["dns:zone"] == zone

    acm = aws.client("acm")
    cert_arn = record.resources["certificate"]
    cert = acm.describe_certificate(CertificateArn=cert_arn)["Certificate"]
    assert cert["DomainName"] == "ws.example.com" and cert["Status"] == "ISSUED"
    tags = {
        t["Key"]: t["Value"] for t in acm.list_tags_for_certificate(CertificateArn=cert_arn)["Tags"]
    }
    assert tags[GATEWAY_TAG] == "chat"
    wanted = cert["DomainValidationOptions"][0]["ResourceRecord"]

    records = _records(aws, zone)
    cname = records[(wanted["Name"], "CNAME")]
    assert cname["ResourceRecords"] == [{"Value": wanted["Value"]}]
    alias = records[("ws.example.com.", "A")]["AliasTarget"]
    domain = aws.client("apigatewayv2").get_domain_name(DomainName="ws.example.com")
    config = domain["DomainNameConfigurations"][0]
    assert config["CertificateArn"] == cert_arn
    assert config["EndpointType"] == "REGIONAL"
    assert alias["DNSName"].rstrip(".") == config["ApiGatewayDomainName"]
    assert alias["HostedZoneId"] == REGIONAL_ZONE
    mappings = aws.client("apigatewayv2").get_api_mappings(DomainName="ws.example.com")["Items"]
    assert [(m["ApiId"], m["Stage"], m.get("ApiMappingKey", "")) for m in mappings] == [
        (record.api_id, "prod", "")
    ]

    aws.gaps.reset()
    assert _pending(plan(spec, storage=aws.store, aws=aws.clients)) == []
    apply(spec, storage=aws.store, aws=aws.clients)
    assert aws.gaps.mutating_calls() == []
    assert len(acm.list_certificates()["CertificateSummaryList"]) == 1


def test_given_certificate_is_used_and_never_deleted(aws: AwsEnv) -> None:
    zone = _zone(aws)
    acm = aws.client("acm")
    arn = acm.request_certificate(DomainName="ws.example.com", ValidationMethod="DNS")[
        "CertificateArn"
    ]
    spec = make_spec(domain=domain_spec(certificate_arn=arn, hosted_zone_id=zone))
    changes = _pending(plan(spec, storage=aws.store, aws=aws.clients))
    assert "certificate" not in {c.resource for c in changes}
    assert "validation_record" not in {c.resource for c in changes}
    apply(spec, storage=aws.store, aws=aws.clients)
    assert aws.gaps.count("RequestCertificate") == 1  # only ours, above
    domain = aws.client("apigatewayv2").get_domain_name(DomainName="ws.example.com")
    assert domain["DomainNameConfigurations"][0]["CertificateArn"] == arn

    destroy(spec, storage=aws.store, aws=aws.clients)
    assert acm.describe_certificate(CertificateArn=arn)["Certificate"]["DomainName"]
    assert ("ws.example.com.", "A") not in _records(aws, zone)
    with pytest.raises(aws.client("apigatewayv2").exceptions.NotFoundException):
        aws.client("apigatewayv2").get_domain_name(DomainName="ws.example.com")


def test_changed_certificate_updates_the_domain(aws: AwsEnv) -> None:
    zone = _zone(aws)
    acm = aws.client("acm")
    first, second = (
        acm.request_certificate(DomainName="ws.example.com", ValidationMethod="DNS")[
            "CertificateArn"
        ]
        for _ in range(2)
    )
    apply(
        make_spec(domain=domain_spec(certificate_arn=first, hosted_zone_id=zone)),
        storage=aws.store,
        aws=aws.clients,
    )
    spec = make_spec(domain=domain_spec(certificate_arn=second, hosted_zone_id=zone))
    changes = _pending(plan(spec, storage=aws.store, aws=aws.clients))
    assert [(c.action, c.resource) for c in changes] == [("update", "domain")]
    assert changes[0].details == {"CertificateArn": (first, second)}
    result = apply(spec, storage=aws.store, aws=aws.clients)
    assert result.drift == []


def test_base_path_change_moves_the_mapping(aws: AwsEnv) -> None:
    _zone(aws)
    apply(make_spec(domain=domain_spec()), storage=aws.store, aws=aws.clients)
    spec = make_spec(domain=domain_spec(base_path="chat"))
    result = apply(spec, storage=aws.store, aws=aws.clients)
    assert result.drift == []
    mappings = aws.client("apigatewayv2").get_api_mappings(DomainName="ws.example.com")["Items"]
    assert [m["ApiMappingKey"] for m in mappings] == ["chat"]
    assert result.record.resources["api_mapping"] == mappings[0]["ApiMappingId"]


def test_dropping_the_domain_removes_it_and_its_certificate(aws: AwsEnv) -> None:
    zone = _zone(aws)
    apply(make_spec(domain=domain_spec()), storage=aws.store, aws=aws.clients)
    changes = _pending(plan(make_spec(), storage=aws.store, aws=aws.clients))
    assert [(c.action, c.resource) for c in changes] == [
        ("delete", "alias_record"),
        ("delete", "api_mapping"),
        ("delete", "domain"),
        ("delete", "validation_record"),
        ("delete", "certificate"),
    ]
    result = apply(make_spec(), storage=aws.store, aws=aws.clients)
    assert result.drift == []
    assert result.record.custom_domain == ""
    assert not any(k.startswith(("dns:", "certificate", "domain")) for k in result.record.resources)
    assert set(_records(aws, zone)) == {("example.com.", "NS"), ("example.com.", "SOA")}
    assert aws.client("acm").list_certificates()["CertificateSummaryList"] == []


def test_destroy_removes_domain_dns_certificate_and_api(aws: AwsEnv) -> None:
    zone = _zone(aws)
    spec = make_spec(domain=domain_spec())
    apply(spec, storage=aws.store, aws=aws.clients)
    result = destroy(spec, storage=aws.store, aws=aws.clients)
    assert result.drift == []
    assert [c.resource for c in result.changes] == [
        "alias_record",
        "api_mapping",
        "domain",
        "api",
        "validation_record",
        "certificate",
    ]
    assert set(_records(aws, zone)) == {("example.com.", "NS"), ("example.com.", "SOA")}
    assert aws.client("acm").list_certificates()["CertificateSummaryList"] == []
    assert aws.client("apigatewayv2").get_domain_names()["Items"] == []


def test_certificate_not_issued_in_time_resumes_later(
    aws: AwsEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    _zone(aws)
    monkeypatch.setattr(moto.settings, "ACM_VALIDATION_WAIT", 3600)
    spec = make_spec(domain=domain_spec(certificate_timeout=0))
    with pytest.raises(ProvisionError, match="not issued yet") as info:
        apply(spec, storage=aws.store, aws=aws.clients)
    assert info.value.step == "domain ws.example.com"
    record = aws.store.get_gateway("chat")
    assert record.status == "partial"
    assert record.resources["certificate"] and record.resources["dns:validation"]
    assert record.resources["deployment"]  # the API itself is up already

    monkeypatch.setattr(moto.settings, "ACM_VALIDATION_WAIT", 0)
    remaining = [c.resource for c in _pending(plan(spec, storage=aws.store, aws=aws.clients))]
    assert remaining == ["domain", "api_mapping", "alias_record"]
    result = apply(spec, storage=aws.store, aws=aws.clients)
    assert result.drift == [] and result.record.status == "ready"
    assert len(aws.client("acm").list_certificates()["CertificateSummaryList"]) == 1


def test_lost_record_finds_certificate_and_domain_by_tag(aws: AwsEnv) -> None:
    from apigw_ws_core.provision import MemoryGatewayStore

    _zone(aws)
    spec = make_spec(domain=domain_spec())
    apply(spec, storage=aws.store, aws=aws.clients)
    fresh = MemoryGatewayStore()
    assert _pending(plan(spec, storage=fresh, aws=aws.clients)) == []


def test_missing_hosted_zone_is_a_clear_error(aws: AwsEnv) -> None:
    with pytest.raises(ProvisionError, match="no public Route 53 hosted zone"):
        plan(make_spec(domain=domain_spec()), storage=aws.store, aws=aws.clients)


def test_foreign_domain_is_not_taken_over(aws: AwsEnv) -> None:
    _zone(aws)
    aws.client("apigatewayv2").create_domain_name(
        DomainName="ws.example.com",
        DomainNameConfigurations=[{"CertificateArn": "arn:aws:acm:x", "EndpointType": "REGIONAL"}],
    )
    with pytest.raises(ProvisionError, match="not managed by apigw-ws"):
        plan(make_spec(domain=domain_spec()), storage=aws.store, aws=aws.clients)
