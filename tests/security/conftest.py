"""Fixtures of the security tests that need real servers: the SQLAlchemy storage on
PostgreSQL and MariaDB (uniquely prefixed tables, dropped at the end) and the Django ORM
storage on the ``postgres`` and ``mariadb`` aliases of ``tests.django_settings``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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
