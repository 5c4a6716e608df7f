"""The AWS CDK construct synthesizes offline (jsii runs the CDK in Node) into the same
CloudFormation the exporter writes, and cfn-lint accepts the synthesized stack."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from apigw_ws_core.provision import SpecError, export_template
from tests.provision.conftest import SECRET
from tests.provision.test_export import full_spec, lint

pytest.importorskip("cfnlint.api")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
aws_cdk = pytest.importorskip("aws_cdk")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_construct_synthesizes_the_exported_gateway(tmp_path: Path) -> None:
    from cfnlint.core import get_rules

    from apigw_ws_core.provision.cdk import ApigwWsGateway

    spec = full_spec()
    app = aws_cdk.App(outdir=str(tmp_path / "cdk.out"))
    stack = aws_cdk.Stack(app, "ChatWs", env=aws_cdk.Environment(region="eu-west-1"))
    gateway = ApigwWsGateway(
        stack,
        "Gateway",
        spec=spec,
        shared_secret=aws_cdk.SecretValue.secrets_manager("prod/chat-ws", json_field="secret"),
        target_base_url="https://staging.example.com/ws/",
        hosted_zone_id="Z0123456789ABC",
    )
    aws_cdk.CfnOutput(stack, "Management", value=gateway.management_endpoint)
    with pytest.raises(SpecError, match="SecretValue"):
        ApigwWsGateway(stack, "Plain", spec=spec, shared_secret=SECRET)
    template: dict[str, Any] = app.synth().get_stack_by_name("ChatWs").template
    text = json.dumps(template)
    assert SECRET not in text and "set-by-the-construct" not in text
    exported = export_template(spec, "cloudformation")
    # Every exported resource is there, with its logical id and type.
    assert {k: v["Type"] for k, v in exported["Resources"].items()} == {
        k: v["Type"] for k, v in template["Resources"].items() if k in exported["Resources"]
    }
    params = template["Resources"]["ConnectIntegration"]["Properties"]["RequestParameters"]
    secret = json.dumps(params["integration.request.header.X-Apigw-Ws-Secret"])
    assert "{{resolve:secretsmanager:prod/chat-ws:SecretString:secret::}}" in secret
    uri = json.dumps(template["Resources"]["ChatMessageIntegration"]["Properties"])
    assert "https://staging.example.com/ws/" in uri
    assert "SharedSecret" not in template.get("Parameters", {})
    assert "HostedZoneId" not in template.get("Parameters", {})
    # Errors and warnings; informational hints are about how the CDK renders tokens
    # (Fn::Join with an empty delimiter, a substituted Fn::Sub left without variables).
    assert lint(json.dumps(template), get_rules([], [], ["W", "E"])) == []
