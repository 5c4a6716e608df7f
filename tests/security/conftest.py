"""Fixtures of the security tests: the SQLAlchemy storage on PostgreSQL and MariaDB
(uniquely prefixed tables, dropped at the end), the Django ORM storage on the ``postgres``
and ``mariadb`` aliases of ``tests.django_settings``, and the Django and Flask adapters'
test apps on SQLite and (``*_server_env``) on PostgreSQL and MariaDB."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from apigw_ws_core.testing import RecordingTransport

SQLA_DIALECTS = [
    pytest.param("postgresql", marks=pytest.mark.postgres, id="postgresql"),
    pytest.param("mariadb", marks=pytest.mark.mariadb, id="mariadb"),
]


@pytest.fixture(scope="module", params=SQLA_DIALECTS)
def sqla_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    from tests.sqla.dbs import open_database

    db = open_database(request, request.param, Path(tmp_path_factory.mktemp("sec")))
    yield db
    db.close()


@pytest.fixture
def sqla(sqla_db: Any) -> Any:
    sqla_db.empty()
    return sqla_db


def _django_params() -> list[Any]:
    """One param per server alias, with its ``django_db`` mark. ``default`` (SQLite) is
    listed too: Django sets up the other test databases only after it."""
    from django.conf import settings

    from tests.conftest import service_url

    params = []
    for alias, env in (
        ("postgres", "APIGW_WS_TEST_POSTGRES_URL"),
        ("mariadb", "APIGW_WS_TEST_MARIADB_URL"),
    ):
        marks: list[Any] = [getattr(pytest.mark, alias)]
        if alias not in settings.DATABASES or service_url(env) is None:
            marks.append(pytest.mark.skip(reason=f"{alias} not available: set {env}"))
        else:
            marks.append(pytest.mark.django_db(databases=[alias, "default"], transaction=True))
        params.append(pytest.param(alias, marks=marks, id=f"django-{alias}"))
    return params


@pytest.fixture(params=_django_params())
def django_alias(request: pytest.FixtureRequest) -> str:
    from django.contrib.auth import get_user_model

    alias: str = request.param
    get_user_model().objects.using(alias).create(pk=7, username="user7")
    return alias


# --- the framework adapters (SQLite) ---------------------------------------------------


@contextlib.contextmanager
def _django_adapter_env(user: Any) -> Iterator[dict[str, Any]]:
    from django.conf import settings as dj_settings
    from django.test import Client

    from apigw_ws_django.runtime import get_app, reset_runtime, set_transport
    from tests.django_adapter.views import ChatView

    reset_runtime()
    transport = RecordingTransport()
    set_transport(transport)
    try:
        yield {
            "app": get_app(ChatView),
            "client": Client(),
            "secret": dj_settings.APIGW_WS["SECRET"],
            "origin": dj_settings.APIGW_WS["ALLOWED_ORIGINS"][0],
            "user": user,
            "transport": transport,
        }
    finally:
        reset_runtime()


@pytest.fixture
def django_env(django_user_model: Any) -> Iterator[dict[str, Any]]:
    """The Django adapter's app for the test ``ChatView``, a user, a recording transport."""
    with _django_adapter_env(django_user_model.objects.create_user("sec-user-7", pk=7)) as env:
        yield env


@pytest.fixture(params=_django_params())
def django_server_env(request: pytest.FixtureRequest, settings: Any) -> Iterator[dict[str, Any]]:
    """``django_env`` with the storage and every model on the PostgreSQL or MariaDB alias
    (as ``tests/django_adapter`` routes them)."""
    from django.contrib.auth import get_user_model

    from tests.django_orm.helpers import AliasRouter

    alias: str = request.param
    settings.APIGW_WS = {**settings.APIGW_WS, "STORAGE_OPTIONS": {"using": alias}}
    AliasRouter.alias = alias
    try:
        manager = get_user_model()._default_manager.db_manager(alias)
        with _django_adapter_env(manager.create_user("sec-user-7", pk=7)) as env:
            storage = env["app"].storage
            assert storage.using == alias and storage.connection.vendor != "sqlite"
            yield {**env, "alias": alias}
    finally:
        AliasRouter.alias = None


@pytest.fixture(scope="module")
def flask_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.sqla.dbs import Database

    db = Database(
        "sqlite", f"sqlite:///{Path(tmp_path_factory.mktemp('sec-flask')) / 'db.sqlite3'}"
    )
    yield db
    db.close()


@contextlib.contextmanager
def _flask_adapter_env(db: Any) -> Iterator[dict[str, Any]]:
    from flask import Flask

    from apigw_ws_flask import ApigwWebSocket

    from .adapters_support import FLASK_ORIGIN as origin
    from .adapters_support import FLASK_SECRET as secret

    app = Flask("apigw_ws_security_props")
    app.config.update(
        TESTING=True,
        SECRET_KEY="k",
        APIGW_WS_SECRET=secret,
        APIGW_WS_ALLOWED_ORIGINS=[origin],
        APIGW_WS_ENABLE_SUBSCRIBE=True,
        APIGW_WS_TOKEN_CSRF=False,
    )
    transport = RecordingTransport()
    ws = ApigwWebSocket(storage=db.storage, transport=transport)

    @ws.handler("echo")
    def echo(ctx: Any, message: dict[str, Any]) -> Any:
        return message

    @ws.handler("chat_message")
    def chat(ctx: Any, message: dict[str, Any]) -> Any:
        ctx.send({"type": "chat", "text": message.get("text")}, channel=ctx.session.channel_name)

    @ws.current_user_loader
    def current_user() -> Any:
        from flask import request

        return request.headers.get("X-Test-User")

    ws.init_app(app)
    with app.test_client() as client:
        yield {
            "db": db,
            "core": app.extensions["apigw_ws"].core,
            "client": client,
            "secret": secret,
            "origin": origin,
        }


@pytest.fixture
def flask_env(flask_db: Any) -> Iterator[dict[str, Any]]:
    """The Flask adapter's test app on SQLite (SQLAlchemy storage)."""
    with _flask_adapter_env(flask_db) as env:
        yield env


@pytest.fixture
def flask_server_env(sqla_db: Any) -> Iterator[dict[str, Any]]:
    """The same app on PostgreSQL or MariaDB (``sqla_db``'s uniquely prefixed tables)."""
    with _flask_adapter_env(sqla_db) as env:
        yield env
