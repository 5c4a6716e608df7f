"""Alembic autogenerate and the apigw-ws tables, on SQLite, PostgreSQL and MariaDB.

Each test gets an empty database of its own (see ``tests/sqla/empty_db.py``). The
autogenerate run must propose exactly our seven tables with their indexes; once they exist
it must propose nothing (types, nullability, server defaults, indexes, keys all stable).
The last test is the workflow ``docs/quickstart-flask.rst`` documents, with Alembic's own
commands: ``init``, ``revision --autogenerate``, ``upgrade``, ``check``, ``downgrade``.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata, produce_migrations
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.operations import Operations
from alembic.operations.ops import ModifyTableOps
from sqlalchemy import Connection, Engine, ForeignKey, String, create_engine, inspect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import NullPool

from apigw_ws_storage.sqla import DEFAULT_MODELS, metadata
from tests.sqla.empty_db import EMPTY_DB_PARAMS, empty_database

OUR_TABLES = {t.name for t in DEFAULT_MODELS.tables}
OUR_INDEXES = {ix.name for t in DEFAULT_MODELS.tables for ix in t.indexes}


@pytest.fixture(params=EMPTY_DB_PARAMS)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on an empty database of its own."""
    with empty_database(request, request.param, tmp_path) as url:
        eng = create_engine(url, poolclass=NullPool)
        yield eng
        eng.dispose()


def _context(conn: Connection) -> MigrationContext:
    return MigrationContext.configure(
        conn, opts={"compare_type": True, "compare_server_default": True}
    )


def _flatten(diffs: list[Any]) -> list[tuple[Any, ...]]:
    """compare_metadata() nests column changes in lists; flatten them."""
    out: list[tuple[Any, ...]] = []
    for diff in diffs:
        out.extend(diff if isinstance(diff, list) else [diff])
    return out


def test_autogenerate_proposes_our_tables_then_nothing(engine: Engine):
    with engine.connect() as conn:
        diffs = _flatten(compare_metadata(_context(conn), metadata))
        assert {d[0] for d in diffs} == {"add_table", "add_index"}, diffs
        assert sorted(d[1].name for d in diffs if d[0] == "add_table") == sorted(OUR_TABLES)
        assert sorted(d[1].name for d in diffs if d[0] == "add_index") == sorted(OUR_INDEXES)

        metadata.create_all(conn)
        conn.commit()
        assert compare_metadata(_context(conn), metadata) == []


def test_generated_upgrade_creates_tables_and_indexes(engine: Engine):
    """The ops autogenerate proposes, run through Alembic's ``Operations``, build the same
    schema as ``create_all`` (a second compare finds nothing)."""
    with engine.connect() as conn:
        script = produce_migrations(_context(conn), metadata)
        assert script.upgrade_ops is not None
        ops = Operations(_context(conn))
        for op in script.upgrade_ops.ops:
            # create_table ops, and the indexes grouped per table in ModifyTableOps.
            for step in op.ops if isinstance(op, ModifyTableOps) else [op]:
                ops.invoke(step)
        conn.commit()
        found = inspect(conn)
        assert OUR_TABLES <= set(found.get_table_names())
        session = DEFAULT_MODELS.session_table.name
        assert {ix["name"] for ix in found.get_indexes(session)} == {
            ix.name for ix in DEFAULT_MODELS.session_table.indexes
        }
        assert compare_metadata(_context(conn), metadata) == []


class AppBase(DeclarativeBase):
    """An application's own models, on their own metadata."""


class Author(AppBase):
    __tablename__ = "app_author"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))


class Post(AppBase):
    __tablename__ = "app_post"
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("app_author.id"), index=True)


def test_target_metadata_list_with_the_apps_own(engine: Engine):
    """``target_metadata = [Base.metadata, apigw_ws_storage.sqla.metadata]`` in env.py."""
    both = [AppBase.metadata, metadata]
    with engine.connect() as conn:
        diffs = _flatten(compare_metadata(_context(conn), both))  # type: ignore[arg-type]
        tables = {d[1].name for d in diffs if d[0] == "add_table"}
        assert tables == OUR_TABLES | {"app_author", "app_post"}
        for md in both:
            md.create_all(conn)
        conn.commit()
        assert compare_metadata(_context(conn), both) == []  # type: ignore[arg-type]


ENV_TARGET = """\
import apigw_ws_storage.sqla

target_metadata = apigw_ws_storage.sqla.metadata
"""
#: Alembic renders our column types with their module path; the migration must import it.
MAKO_IMPORT = "import sqlalchemy as sa\nimport apigw_ws_storage.sqla.types\n"


def test_alembic_commands_workflow(engine: Engine, tmp_path: Path):
    """``alembic init``; env.py's target_metadata and one import in script.py.mako (as the
    docs say); ``revision --autogenerate``; ``upgrade head``; ``check``; ``downgrade``."""
    out = io.StringIO()
    location = tmp_path / "migrations"
    command.init(Config(str(tmp_path / "alembic.ini"), stdout=out), str(location))
    env = location / "env.py"
    env.write_text(env.read_text().replace("target_metadata = None\n", ENV_TARGET))
    mako = location / "script.py.mako"
    mako.write_text(mako.read_text().replace("import sqlalchemy as sa\n", MAKO_IMPORT))

    # No ini file: env.py then leaves logging alone (fileConfig would disable loggers).
    cfg = Config(stdout=out)
    cfg.set_main_option("script_location", str(location))
    url = engine.url.render_as_string(hide_password=False)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))

    command.revision(cfg, message="apigw-ws tables", autogenerate=True)
    (migration,) = (location / "versions").glob("*.py")
    source = migration.read_text()
    assert "apigw_ws_storage.sqla.types.UTCDateTime()" in source
    for name in OUR_TABLES:
        assert f"op.create_table('{name}'" in source
    for name in OUR_INDEXES:
        assert f"op.create_index('{name}'" in source

    command.upgrade(cfg, "head")
    command.check(cfg)  # "No new upgrade operations detected"
    with engine.connect() as conn:
        assert OUR_TABLES <= set(inspect(conn).get_table_names())

    command.downgrade(cfg, "base")
    with engine.connect() as conn:
        assert not OUR_TABLES & set(inspect(conn).get_table_names())
