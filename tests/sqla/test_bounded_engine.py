"""``create_bounded_engine``: the options it sets per driver, that yours win, and that the
engines work (the faults they bound: ``tests/faults/test_dependency_faults.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from apigw_ws_storage.sqla import create_bounded_engine
from tests.sqla.dbs import driver_url


def _connect_args(engine: Any) -> dict[str, Any]:
    return dict(engine.dialect.create_connect_args(engine.url)[1])


def test_sqlite(tmp_path: Path) -> None:
    engine = create_bounded_engine(f"sqlite:///{tmp_path / 'x.sqlite3'}", timeout=3)
    assert engine.pool._pre_ping is True
    with engine.connect() as conn:
        assert conn.execute(text("select 1")).scalar() == 1
    engine.dispose()


@pytest.mark.mariadb
def test_mariadb_driver_timeouts(mariadb_url: str) -> None:
    engine = create_bounded_engine(driver_url(mariadb_url), timeout=1.5)
    assert engine.pool._pre_ping is True and engine.pool._timeout == 1.5
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert (raw.connect_timeout, raw._read_timeout, raw._write_timeout) == (2, 2, 2)
        assert conn.execute(text("select 1")).scalar() == 1
    engine.dispose()


@pytest.mark.postgres
def test_postgres_round_trips_have_a_deadline(postgres_url: str) -> None:
    engine = create_bounded_engine(
        driver_url(postgres_url), timeout=1, connect_args={"connect_timeout": 5}
    )
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw.deadline == 1
        assert raw.info.get_parameters()["connect_timeout"] == "5"  # yours wins
        assert conn.execute(text("select 1")).scalar() == 1
        # a statement slower than the deadline fails and its connection is dropped
        with pytest.raises(Exception, match="no answer from the server within 1 s"):
            conn.execute(text("select pg_sleep(3)"))
    with engine.connect() as conn:  # the pool replaced it
        assert conn.execute(text("select 1")).scalar() == 1
    engine.dispose()


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError):
        create_bounded_engine("sqlite://", timeout=0)
