"""Empty databases of their own, for tests that need fixed table names or an empty schema.

The ``test`` databases on the servers are shared, so each call makes a uniquely named
place and removes it afterwards: a new SQLite file, a PostgreSQL schema inside ``test``
(first on the connection's ``search_path``), or a MariaDB database.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from tests.sqla.dbs import driver_url

EMPTY_DB_PARAMS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    pytest.param("mariadb", id="mariadb", marks=pytest.mark.mariadb),
]


@contextmanager
def empty_database(request: pytest.FixtureRequest, dialect: str, tmp: Path) -> Iterator[str]:
    """Yield the URL (with driver) of a new, empty database for ``dialect``; drop it after.

    Skips like the other server tests when the server is not configured.
    """
    name = f"awt_{secrets.token_hex(4)}"
    if dialect == "sqlite":
        yield f"sqlite:///{tmp / name}.sqlite3"
        return
    fixture = "postgres_url" if dialect == "postgresql" else "mariadb_url"
    server = make_url(driver_url(request.getfixturevalue(fixture)))
    admin = create_engine(server, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    if dialect == "postgresql":
        create, drop = f'CREATE SCHEMA "{name}"', f'DROP SCHEMA IF EXISTS "{name}" CASCADE'
        url = server.update_query_dict({"options": f"-csearch_path={name}"})
    else:
        create = f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci"
        drop = f"DROP DATABASE IF EXISTS `{name}`"
        url = server.set(database=name)
    with admin.connect() as conn:
        conn.execute(text(create))
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(drop))
        admin.dispose()
