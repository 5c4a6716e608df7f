"""The documented example, examples/apigw-ws.toml, plans and applies under moto."""

from __future__ import annotations

from pathlib import Path

import boto3
import moto.settings
import pytest
from moto import mock_aws

from apigw_ws_core.provision import (
    AwsClients,
    MemoryGatewayStore,
    apply,
    load_config,
    plan,
    render_changes,
)
from tests.provision.conftest import SECRET
from tests.provision.moto_gaps import MotoGaps

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "apigw-ws.toml"


def test_example_config_plans_and_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setattr(moto.settings, "ACM_VALIDATION_WAIT", 0)
    spec = load_config(EXAMPLE, environ={"APIGW_WS_SECRET": SECRET}).spec
    assert spec.region is not None
    with mock_aws():
        session = boto3.Session(region_name=spec.region)
        gaps = MotoGaps(session, spec.region)
        session.client("route53").create_hosted_zone(Name="example.com", CallerReference="x")
        aws = AwsClients.create(session=session, region=spec.region)
        store = MemoryGatewayStore()

        changes = plan(spec, storage=store, aws=aws)
        text = render_changes(changes)
        assert SECRET not in text
        counts = {}
        for change in changes:
            counts[change.resource] = counts.get(change.resource, 0) + 1
        assert counts == {
            "certificate": 1,
            "validation_record": 1,
            "api": 1,
            "integration": 6,
            "route": 6,
            "route_response": 2,  # $default and chat_message are two-way
            "stage": 1,
            "deployment": 1,
            "domain": 1,
            "api_mapping": 1,
            "alias_record": 1,
        }
        assert all(c.action == "create" for c in changes)
        assert '+ IntegrationUri: "https://files.example.com/ws/upload"' in text

        result = apply(spec, storage=store, aws=aws)
        assert result.drift == [] and result.record.status == "ready"
        assert result.record.custom_domain == "ws.example.com"
        gaps.reset()
        assert [c for c in plan(spec, storage=store, aws=aws) if c.action != "noop"] == []
        assert gaps.mutating_calls() == []
