"""Provisioning AWS API Gateway WebSocket APIs: plan, apply, destroy.

Describe the API with a :class:`GatewaySpec` (or a TOML file, see :func:`load_config`), look
at what would change with :func:`plan` and :func:`render_changes`, make it so with
:func:`apply`, and remove it all with :func:`destroy`. Or write it as infrastructure code
(CloudFormation, SAM, Terraform) with :func:`export_template` and :func:`render_template`.
Every run reads what exists first, so ``apply`` is idempotent and resumes after a failure.
Needs boto3 (``apigw-ws[aws]``).
"""

from __future__ import annotations

from apigw_ws_core.provision.apply import ApplyResult, ProgressEvent, apply, destroy, plan
from apigw_ws_core.provision.aws import AwsClients
from apigw_ws_core.provision.config import ProvisionConfig, load_config, spec_from_dict
from apigw_ws_core.provision.errors import ProvisionError, SpecError
from apigw_ws_core.provision.export import SecretSource, export_template, render_template
from apigw_ws_core.provision.iam import deploy_policy, runtime_policy
from apigw_ws_core.provision.plan import Change, render_changes, summarize
from apigw_ws_core.provision.spec import (
    GATEWAY_TAG,
    AuthorizerSpec,
    DomainSpec,
    GatewaySpec,
    RouteSpec,
    Throttling,
    request_parameters,
)
from apigw_ws_core.provision.store import FileGatewayStore, GatewayStore, MemoryGatewayStore

__all__ = [
    "GATEWAY_TAG",
    "ApplyResult",
    "AuthorizerSpec",
    "AwsClients",
    "Change",
    "DomainSpec",
    "FileGatewayStore",
    "GatewaySpec",
    "GatewayStore",
    "MemoryGatewayStore",
    "ProgressEvent",
    "ProvisionConfig",
    "ProvisionError",
    "RouteSpec",
    "SecretSource",
    "SpecError",
    "Throttling",
    "apply",
    "deploy_policy",
    "destroy",
    "export_template",
    "load_config",
    "plan",
    "render_changes",
    "render_template",
    "request_parameters",
    "runtime_policy",
    "spec_from_dict",
    "summarize",
]
