"""Fixtures for provisioning tests: moto with its API Gateway v2 gaps filled."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs
import boto3
import moto.settings
import pytest
from moto import mock_aws

from apigw_ws_core.provision import (
    AwsClients,
    DomainSpec,
    GatewaySpec,
    MemoryGatewayStore,
    RouteSpec,
    Throttling,
)
from tests.provision.moto_gaps import MotoGaps

REGION = "us-east-1"
SECRET = "s3cr3t-value-for-tests-0123456789"


@attrs.define
class AwsEnv:
    """A moto-backed AWS: the session, provisioning clients, the gap hooks, a store."""

    session: Any
    clients: AwsClients
    gaps: MotoGaps
    store: MemoryGatewayStore

    def client(self, name: str) -> Any:
        return self.session.client(name, region_name=REGION)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsEnv]:
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setattr(moto.settings, "ACM_VALIDATION_WAIT", 0)
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        gaps = MotoGaps(session, REGION)
        clients = AwsClients.create(session=session)
        yield AwsEnv(session=session, clients=clients, gaps=gaps, store=MemoryGatewayStore())


def make_spec(**overrides: Any) -> GatewaySpec:
    """A spec with two custom routes, stage variables and throttling."""
    values: dict[str, Any] = {
        "name": "chat",
        "target_base_url": "https://app.example.com/ws/",
        "secret": SECRET,
        "region": REGION,
        "routes": [
            RouteSpec(key="chat_message"),
            RouteSpec(
                key="upload", target_url="https://files.example.com/ws/upload", two_way=False
            ),
        ],
        "stage_variables": {"env": "test"},
        "throttling": Throttling(burst_limit=100, rate_limit=50.0),
    }
    values.update(overrides)
    return GatewaySpec(**values)


def domain_spec(**overrides: Any) -> DomainSpec:
    values: dict[str, Any] = {"name": "ws.example.com"}
    values.update(overrides)
    return DomainSpec(**values)
