"""Fixtures for the transport and fan-out tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from botocore.credentials import Credentials

from apigw_ws_core.http1 import ManagementApiTransport

from .server import ScriptedServer

CREDS = Credentials("AKIDTEST", "test-secret")


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    srv = ScriptedServer()
    yield srv
    srv.stop()


@pytest.fixture
def transport(server: ScriptedServer) -> Iterator[ManagementApiTransport]:
    t = ManagementApiTransport(server.url, credentials=CREDS, timeout=2.0)
    yield t
    t.close()
