"""Test databases for the SQLAlchemy storage and the Flask adapter.

Each test session declares the apigw-ws tables under a unique prefix (the ``test``
databases are shared with other engineers' tests), empties them before each test and drops
them at the end.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, MetaData, create_engine, delete, event
from sqlalchemy.orm import sessionmaker

from apigw_ws_storage.sqla import Models, SqlaStorage, make_models

DIALECTS = ["sqlite", "postgresql", "mariadb"]


def driver_url(url: str) -> str:
    """``postgresql://`` → ``postgresql+psycopg://``; ``mysql://`` → ``mysql+pymysql://``."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith(("mysql://", "mariadb://")):
        rest = url.split("://", 1)[1]
        return "mysql+pymysql://" + rest + ("&" if "?" in rest else "?") + "charset=utf8mb4"
    return url


class Database:
    """One engine with freshly declared, uniquely prefixed apigw-ws tables."""

    def __init__(self, name: str, url: str):
        self.name = name
        kwargs: dict[str, Any] = {}
        if name == "sqlite":
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        else:
            kwargs.update(pool_size=10, max_overflow=60)
        self.engine: Engine = create_engine(url, **kwargs)
        if name == "sqlite":

            @event.listens_for(self.engine, "connect")
            def _fk_on(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA synchronous=OFF")  # test speed only
                cur.close()

        self.prefix = f"awt_{secrets.token_hex(4)}_"
        self.models: Models = make_models(MetaData(), prefix=self.prefix)
        self.sessionmaker = sessionmaker(self.engine)
        self.storage = SqlaStorage(self.sessionmaker, models=self.models)
        self.storage.create_tables()

    def empty(self) -> None:
        """Delete every row of the apigw-ws tables."""
        with self.engine.begin() as conn:
            for table in reversed(self.models.tables):
                conn.execute(delete(table))

    def new_storage(self) -> SqlaStorage:
        """A new storage object on the same tables (for racing threads)."""
        return SqlaStorage(self.sessionmaker, models=self.models)

    def close(self) -> None:
        """Drop the tables and the engine."""
        self.storage.drop_tables()
        self.engine.dispose()

    @contextmanager
    def count_statements(self) -> Iterator[list[str]]:
        """Collect every SQL statement sent to the server inside the block."""
        seen: list[str] = []

        def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            seen.append(statement)

        event.listen(self.engine, "before_cursor_execute", before)
        try:
            yield seen
        finally:
            event.remove(self.engine, "before_cursor_execute", before)


def open_database(request: pytest.FixtureRequest, name: str, tmp: Path) -> Database:
    """The :class:`Database` for ``name`` (skips when the server is not configured)."""
    if name == "sqlite":
        url = f"sqlite:///{tmp / 'apigw_ws.sqlite3'}"
    elif name == "postgresql":
        url = driver_url(request.getfixturevalue("postgres_url"))
    else:
        url = driver_url(request.getfixturevalue("mariadb_url"))
    return Database(name, url)
