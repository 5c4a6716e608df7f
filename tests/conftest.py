"""Shared test configuration: where the real database and cache servers are.

Servers are found through environment variables. On a laptop without them the tests that
need them skip with a reason; in CI (``APIGW_WS_REQUIRE_SERVICES=1``, set by ``.ci/run``) a
missing server is a failure, so CI never silently skips them.

* ``APIGW_WS_TEST_POSTGRES_URL``  e.g. ``postgresql://postgres@127.0.0.1:5432/test``
* ``APIGW_WS_TEST_MARIADB_URL``   e.g. ``mysql://root@127.0.0.1:3306/test``
* ``APIGW_WS_TEST_REDIS_URL``     e.g. ``redis://127.0.0.1:6379/15``
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import pytest

REQUIRE = os.environ.get("APIGW_WS_REQUIRE_SERVICES") == "1"

# Local gateways started by tests (and their subprocesses) record themselves for discovery
# (apigw_ws_core.discovery) in a directory of this test run only: a developer's running demo
# is never found by a test, and tests never find each other's gateways across runs.
if not os.environ.get("APIGW_WS_RUNTIME_DIR"):
    import tempfile

    os.environ["APIGW_WS_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="apigw-ws-test-runtime-")


def service_url(env: str) -> str | None:
    """The URL in ``env`` if set and its server accepts TCP connections, else ``None``.

    Under ``APIGW_WS_REQUIRE_SERVICES=1`` an unset or unreachable server raises instead.
    """
    url = os.environ.get(env)
    if not url:
        if REQUIRE:
            raise RuntimeError(f"{env} is not set but APIGW_WS_REQUIRE_SERVICES=1")
        return None
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), 2):
            pass
    except OSError as exc:
        if REQUIRE:
            raise RuntimeError(f"{env}={url} is unreachable: {exc}") from exc
        return None
    return url


def require_service(env: str, what: str) -> str:
    """Return the server URL or skip the test with a reason."""
    url = service_url(env)
    if url is None:
        pytest.skip(f"{what} not available: set {env} to run this test")
    return url


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of the PostgreSQL test server (skips when absent)."""
    return require_service("APIGW_WS_TEST_POSTGRES_URL", "PostgreSQL")


@pytest.fixture(scope="session")
def mariadb_url() -> str:
    """URL of the MariaDB/MySQL test server (skips when absent)."""
    return require_service("APIGW_WS_TEST_MARIADB_URL", "MariaDB")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the Redis test server (skips when absent)."""
    return require_service("APIGW_WS_TEST_REDIS_URL", "Redis")
