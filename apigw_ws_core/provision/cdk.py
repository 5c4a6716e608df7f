"""The gateway as an AWS CDK (v2, Python) construct: :class:`ApigwWsGateway`.

Needs ``apigw-ws[cdk]`` (``aws-cdk-lib``). The construct holds exactly the CloudFormation
that ``apigw-ws provision export`` writes for the same :class:`GatewaySpec` (it includes that
template with ``aws_cdk.cloudformation_include``), so CDK, CloudFormation, SAM and Terraform
users deploy the same gateway, and the construct is checked by the same tests.

Example::

    from aws_cdk import App, SecretValue, Stack
    from apigw_ws_core.provision import load_config
    from apigw_ws_core.provision.cdk import ApigwWsGateway

    app = App()
    stack = Stack(app, "chat-ws")
    spec = load_config("apigw-ws.toml", need_secret=False).spec
    gateway = ApigwWsGateway(
        stack, "Gateway", spec=spec, shared_secret=SecretValue.secrets_manager("prod/chat-ws")
    )
    app.synth()

Without ``shared_secret`` the template keeps its ``NoEcho`` ``SharedSecret`` parameter
(``cdk deploy --parameters SharedSecret=...``). A plain string is refused: it would be written
into the synthesized template.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from apigw_ws_core.provision.errors import SpecError
from apigw_ws_core.provision.export import (
    SECRET_PARAMETER,
    SECRET_TARGET,
    TARGET_PARAMETER,
    ZONE_PARAMETER,
    export_template,
    render_template,
)
from apigw_ws_core.provision.spec import GatewaySpec

try:
    import aws_cdk
    from aws_cdk import cloudformation_include
    from constructs import Construct
except ImportError as exc:  # pragma: no cover - the [cdk] extra is not installed
    raise ImportError(
        "apigw_ws_core.provision.cdk needs the AWS CDK: pip install 'apigw-ws[cdk]'"
    ) from exc

__all__ = ["ApigwWsGateway"]


def _inline_parameter(template: dict[str, Any], name: str, value: str) -> None:
    """Replace a template parameter by a literal value everywhere, then drop it."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if node == {"Ref": name}:
                return value
            sub = node.get("Fn::Sub") if len(node) == 1 else None
            if isinstance(sub, str) and f"${{{name}}}" in sub:
                text = sub.replace(f"${{{name}}}", value)
                return {"Fn::Sub": text} if "${" in text else text
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    template["Resources"] = walk(template["Resources"])
    template["Outputs"] = walk(template.get("Outputs", {}))
    del template["Parameters"][name]


class ApigwWsGateway(Construct):
    """The WebSocket API of ``spec``: API, integrations, routes, route responses,
    deployment, stage, custom domain with certificate and DNS, authorizer.

    :param spec: the gateway (its ``secret`` is not used).
    :param shared_secret: an ``aws_cdk.SecretValue`` (e.g. ``SecretValue.secrets_manager``)
        for the ``X-Apigw-Ws-Secret`` header; default: the ``SharedSecret`` stack parameter.
    :param target_base_url: the app's base URL, if not the spec's ``target_base_url``.
    :param hosted_zone_id: the custom domain's Route 53 zone, when the spec names none
        (default: a ``HostedZoneId`` stack parameter).

    ``api_id``, ``websocket_url`` and ``management_endpoint`` are tokens for other
    constructs; ``template`` is the ``CfnInclude`` (``template.get_resource("Api")``, ...).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        spec: GatewaySpec,
        shared_secret: Any = None,
        target_base_url: str | None = None,
        hosted_zone_id: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        if shared_secret is not None and not isinstance(shared_secret, aws_cdk.SecretValue):
            raise SpecError(
                "shared_secret must be an aws_cdk.SecretValue (a plain string would be "
                "written into the template)"
            )
        template = export_template(spec, "cloudformation")
        if target_base_url is not None:
            _inline_parameter(template, TARGET_PARAMETER, target_base_url)
        if hosted_zone_id is not None:
            if ZONE_PARAMETER not in template["Parameters"]:
                raise SpecError("hosted_zone_id is only used for a spec domain without one")
            _inline_parameter(template, ZONE_PARAMETER, hosted_zone_id)
        integrations = [
            name
            for name, body in template["Resources"].items()
            if body["Type"] == "AWS::ApiGatewayV2::Integration"
        ]
        if shared_secret is not None:
            # Set below from the SecretValue's token (CfnInclude cannot put a token there).
            del template["Parameters"][SECRET_PARAMETER]
            for name in integrations:
                props = template["Resources"][name]["Properties"]
                props["RequestParameters"][SECRET_TARGET] = "'set-by-the-construct'"
        handle, path = tempfile.mkstemp(prefix="apigw-ws-", suffix=".json")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(render_template(template))
            self.template = cloudformation_include.CfnInclude(self, "Template", template_file=path)
        finally:
            os.unlink(path)
        if shared_secret is not None:
            # The secret's token (a dynamic reference) replaces the parameter in each mapping.
            target = SECRET_TARGET.replace(".", "\\.")
            value = f"'{shared_secret.unsafe_unwrap()}'"
            for name in integrations:
                self.template.get_resource(name).add_property_override(
                    f"RequestParameters.{target}", value
                )
        stage = spec.stage
        self.api_id: str = self.template.get_resource("Api").ref
        host = f"{self.api_id}.execute-api.{aws_cdk.Aws.REGION}.{aws_cdk.Aws.URL_SUFFIX}"
        self.websocket_url: str = f"wss://{host}/{stage}"
        self.management_endpoint: str = f"https://{host}/{stage}"
