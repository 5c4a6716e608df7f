"""Issue 12 item 2 through Django end to end: a real ``websockets`` client → the local
gateway → Django (pytest-django's live server) → the Django ORM storage on a database alias
that reaches PostgreSQL or MariaDB through a :class:`~tests.faults.proxy.FaultProxy`,
configured as docs/security.rst recommends (``CONN_MAX_AGE`` with ``CONN_HEALTH_CHECKS``,
driver timeouts in ``OPTIONS``).

Killed: every event is a JSON ``503 storage_unavailable`` at once, ``$connect`` is refused
with 503, and once the server is back the next event succeeds with no restart (the health
check replaces the dead persistent connection). Black-holed (MariaDB: PyMySQL's read
timeout; PostgreSQL: the ``apigw_ws_storage.django_orm.postgresql`` backend's read
deadline): each event costs at most the health check's read timeout plus a connect timeout.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from apigw_ws_django.runtime import get_app
from tests.django_orm.helpers import AliasRouter, alias_params
from tests.faults.proxy import FaultProxy

pytest.importorskip("aiohttp")
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from apigw_ws_core.local.config import config_from_backend
from apigw_ws_core.local.testing import LocalGateway

pytestmark = pytest.mark.slow

ORIGIN = "https://chat.example.com"
TIMEOUT = 1
SLACK = 1.5


def _params() -> list[Any]:
    """PostgreSQL and MariaDB, each with ``default`` too (Django sets up the other test
    databases only after it)."""
    params = []
    for param in alias_params(aliases=("postgres", "mariadb")):
        marks = [
            pytest.mark.django_db(databases=[param.values[0], "default"], transaction=True)
            if mark.name == "django_db"
            else mark
            for mark in param.marks
        ]
        params.append(pytest.param(*param.values, marks=marks, id=param.id))
    return params


@pytest.fixture(params=_params())
def proxied(
    request: pytest.FixtureRequest, settings: Any, live_server: Any, monkeypatch: Any
) -> Iterator[tuple[str, FaultProxy, LocalGateway]]:
    from django.db import connections

    alias: str = request.param
    base = connections[alias].settings_dict
    target = urlsplit(f"//{base['HOST'] or '127.0.0.1'}:{base['PORT']}")
    name = f"{alias}_via_proxy"
    with FaultProxy(target.hostname or "127.0.0.1", target.port or 0) as proxy:
        engine = base["ENGINE"]
        if alias == "postgres":
            # Django's backend with a read deadline (libpq has none)
            engine = "apigw_ws_storage.django_orm.postgresql"
            options = {"connect_timeout": 2, "read_timeout": TIMEOUT}
        else:
            options = {
                "charset": "utf8mb4",
                "connect_timeout": TIMEOUT,
                "read_timeout": TIMEOUT,
                "write_timeout": TIMEOUT,
            }
        connections.settings[name] = {
            **base,
            "ENGINE": engine,
            "HOST": "127.0.0.1",
            "PORT": str(proxy.port),
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": options,
        }
        settings.APIGW_WS = {
            **{k: v for k, v in settings.APIGW_WS.items() if k != "TRANSPORT"},
            "STORAGE_OPTIONS": {"using": name},
            "CONNECT_RATE_PER_IP": None,
        }
        AliasRouter.alias = name
        _allow_alias(name, monkeypatch)
        secret = settings.APIGW_WS["SECRET"]
        api = config_from_backend(f"{live_server.url}/ws/", secret=secret)
        try:
            with LocalGateway(api) as gateway:
                monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
                monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
                settings.APIGW_WS = {
                    **settings.APIGW_WS,
                    "MANAGEMENT_ENDPOINT": gateway.management_endpoint,
                }
                yield alias, proxy, gateway
        finally:
            AliasRouter.alias = None
            proxy.kill()  # drop the live server's persistent connection before the DB goes
            connections[name].close()
            del connections.settings[name]


def _allow_alias(name: str, monkeypatch: Any) -> None:
    """Let this test (and the live server's thread) use the alias added at run time: Django's
    test case only allows the aliases it was set up with (its ``databases``)."""
    from django.db.backends.base.base import BaseDatabaseWrapper

    patched = BaseDatabaseWrapper.ensure_connection
    for cell in getattr(patched, "__closure__", None) or ():
        case = cell.cell_contents
        if isinstance(case, type) and hasattr(case, "databases"):
            monkeypatch.setattr(case, "databases", {*case.databases, name})


def _ask(conn: ClientConnection) -> tuple[Any, float]:
    start = time.monotonic()
    conn.send(json.dumps({"handler": "whoami"}))
    return json.loads(conn.recv(timeout=30)), time.monotonic() - start


def _open(gateway: LocalGateway, token: str) -> ClientConnection:
    return ws_connect(
        f"{gateway.ws_url}?channel=lobby",
        subprotocols=["apigw-ws", f"apigw-ws.token.{token}"],  # type: ignore[list-item]
        origin=ORIGIN,  # type: ignore[arg-type]
        open_timeout=30,
    )


def _is_503(reply: Any) -> bool:
    return isinstance(reply, dict) and reply.get("error") == "storage_unavailable"


def test_django_database_killed_black_holed_and_restored(
    proxied: tuple[str, FaultProxy, LocalGateway],
) -> None:
    from django.contrib.auth import get_user_model

    alias, proxy, gateway = proxied
    user = get_user_model()._default_manager.db_manager(alias).create_user("faulty", password="x")
    app = get_app()
    token, spare = app.issue_token(user.pk)[0], app.issue_token(user.pk)[0]
    with _open(gateway, token) as conn:
        assert _ask(conn)[0]["user"] == "faulty"

        proxy.kill()
        for _ in range(2):
            reply, took = _ask(conn)
            assert _is_503(reply), reply
            assert took < TIMEOUT + SLACK, took
        with pytest.raises(InvalidStatus) as refused:
            _open(gateway, spare)
        assert refused.value.response.status_code == 503

        proxy.restore()
        assert _ask(conn)[0]["user"] == "faulty"  # recovered: no restart

        # the health check's read times out, then the new connection's connect: PostgreSQL's
        # connect timeout cannot be under 2 s (libpq)
        bound = TIMEOUT + (2 if alias == "postgres" else TIMEOUT) + SLACK
        proxy.blackhole()
        for _ in range(2):
            reply, took = _ask(conn)
            print(f"[django {alias} blackhole] {took:.3f} s {reply}")
            assert _is_503(reply), reply
            assert took < bound, took
        proxy.restore()
        assert _ask(conn)[0]["user"] == "faulty"
