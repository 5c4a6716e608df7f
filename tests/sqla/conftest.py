"""Fixtures: one :class:`~tests.sqla.dbs.Database` per dialect, emptied before each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.sqla.dbs import Database, open_database

DIALECT_PARAMS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    pytest.param("mariadb", id="mariadb", marks=pytest.mark.mariadb),
]


@pytest.fixture(scope="session", params=DIALECT_PARAMS)
def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Database]:
    """A database with uniquely prefixed apigw-ws tables, dropped at the end."""
    db = open_database(request, request.param, tmp_path_factory.mktemp(request.param))
    yield db
    db.close()


@pytest.fixture
def db(database: Database) -> Database:
    """The database, emptied."""
    database.empty()
    return database
