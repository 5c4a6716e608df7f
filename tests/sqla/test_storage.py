"""SqlaStorage beyond the contract: races, statement counts, indexes, session sources,
table naming, and no Flask import."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import MetaData, create_engine, func, insert, inspect, select
from sqlalchemy.orm import DeclarativeBase, scoped_session, sessionmaker
from sqlalchemy.pool import StaticPool

from apigw_ws_core.errors import ConfigurationError
from apigw_ws_core.storage import Session, Token
from apigw_ws_core.testing import run_race
from apigw_ws_storage.sqla import SqlaStorage, make_models
from tests.sqla.dbs import Database


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _session(cid: str, channel: str = "room", user: str | None = None) -> Session:
    return Session(connection_id=cid, channel_name=channel, user_id=user, connected_at=_now())


def test_token_spent_once_by_50_concurrent_spenders(db: Database):
    now = _now()
    for n in range(3):
        token = Token(
            token_hash=f"{n}" * 64, user_id="1", created_at=now, expires_at=now + timedelta(60)
        )
        results = run_race(
            lambda s, t=token: True if s.spend_token(t) else None,
            db.storage,
            db.new_storage,
            threads=50,
            expect_winners=1,
        )
        assert len(results) == 50  # every spender answered (none failed)
        assert db.storage.spend_token(token) is False  # and it stays spent


def test_microseconds_and_utc_round_trip(db: Database):
    at = datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    db.storage.create_session(
        Session(connection_id="micro-000000001=", channel_name="a", connected_at=at)
    )
    got = db.storage.get_session("micro-000000001=")
    assert got is not None and got.connected_at == at and got.connected_at.tzinfo is not None
    with pytest.raises(Exception, match="timezone-aware"):
        db.storage.create_session(
            Session(
                connection_id="naive-000000001=",
                channel_name="a",
                connected_at=at.replace(tzinfo=None),
            )
        )


def _data(statements: list[str]) -> list[str]:
    """Statements that read or write rows (MariaDB's savepoints left out)."""
    control = ("SAVEPOINT", "RELEASE", "ROLLBACK")
    return [q for q in statements if not q.upper().lstrip().startswith(control)]


def test_statements_per_call(db: Database):
    storage = db.storage
    with db.count_statements() as create:
        storage.create_session(_session("stmt-00000000001=", user="1"), ["b", "c"])
    assert len(_data(create)) == 2  # session + one multi-row subscription insert
    with db.count_statements() as replace:
        storage.create_session(_session("stmt-00000000001=", user="1"))
    # insert that finds the id, then select (for update) + delete + update + insert
    assert len(_data(replace)) <= 5, replace
    assert storage.channels_of("stmt-00000000001=") == ["room"]
    with db.count_statements() as get:
        storage.get_session("stmt-00000000001=")
    assert len(get) == 1
    start = _now()
    with db.count_statements() as incr:
        assert storage.incr_counter("k", start, start + timedelta(seconds=60)) == 1
        assert storage.incr_counter("k", start, start + timedelta(seconds=60)) == 2
    assert len(incr) == 2  # one upsert each
    token = Token(
        token_hash="t" * 64, user_id="1", created_at=start, expires_at=start + timedelta(60)
    )
    with db.count_statements() as spend:
        assert storage.spend_token(token) is True
    assert len(spend) == 1  # INSERT ... ON CONFLICT DO NOTHING / INSERT IGNORE
    with db.count_statements() as replay:
        assert storage.spend_token(token) is False
    assert len(replay) == 1  # the same insert, which inserts nothing
    with db.count_statements() as sub:
        assert storage.subscribe("stmt-00000000001=", "x") is True
        assert storage.subscribe("stmt-00000000001=", "x") is False
    assert len(sub) == 2


def test_mark_disconnected_one_update_and_one_delete_per_batch(db: Database):
    ids = [f"bulk-{i:011d}=" for i in range(120)]
    for cid in ids:
        db.storage.create_session(_session(cid))
    storage = SqlaStorage(db.sessionmaker, models=db.models, batch_size=50)
    with db.count_statements() as stmts:
        assert storage.mark_disconnected(ids, _now()) == 120
    kinds = [s.split()[0].upper() for s in stmts]
    assert kinds == ["UPDATE", "DELETE"] * 3


def test_iter_connection_ids_uses_keyset_pagination(db: Database):
    ids = [f"keys-{i:011d}=" for i in range(25)]
    for cid in ids:
        db.storage.create_session(_session(cid, user="u"))
    for target in ({}, {"channel": "room"}, {"user_id": "u"}, {"channel": "room", "user_id": "u"}):
        with db.count_statements() as stmts:
            batches = list(db.storage.iter_connection_ids(batch_size=10, **target))
        assert [len(b) for b in batches] == [10, 10, 5]
        assert [cid for b in batches for cid in b] == sorted(ids)
        assert len(stmts) == 3
        # keyset, not OFFSET (SQLite always renders "LIMIT ? OFFSET 0")
        assert db.name == "sqlite" or all("OFFSET" not in s.upper() for s in stmts)
        assert all(">" in s for s in stmts[1:])


def test_generator_holds_no_connection_between_batches(db: Database):
    for i in range(6):
        db.storage.create_session(_session(f"hold-{i:011d}="))
    gen = db.storage.iter_connection_ids(batch_size=2)
    first = next(gen)
    assert len(first) == 2
    assert db.engine.pool.checkedout() == 0
    assert sum(len(b) for b in gen) == 4


def test_hot_queries_have_indexes(db: Database):
    insp = inspect(db.engine)
    p = db.prefix
    names = {
        table: {ix["name"] for ix in insp.get_indexes(f"{p}{table}")}
        for table in ("session", "subscription", "token", "counter")
    }
    assert {
        f"ix_{p}session_connected_id",
        f"ix_{p}session_user",
        f"ix_{p}session_connected_at",
        f"ix_{p}session_disconnected_at",
    } <= names["session"]
    assert f"ix_{p}subscription_channel" in names["subscription"]
    assert f"ix_{p}token_expires_at" in names["token"]
    assert f"ix_{p}counter_expires_at" in names["counter"]
    pk = insp.get_pk_constraint(f"{p}subscription")["constrained_columns"]
    assert pk == ["connection_id", "channel_name"]


def test_models_on_a_users_metadata():
    class Base(DeclarativeBase):
        pass

    models = make_models(Base.metadata, prefix="myapp_ws_")
    assert set(Base.metadata.tables) == {
        "myapp_ws_session",
        "myapp_ws_subscription",
        "myapp_ws_token",
        "myapp_ws_counter",
        "myapp_ws_gateway",
        "myapp_ws_channel_history",
        "myapp_ws_history_message",
        "myapp_ws_job",
    }
    assert models.session.__tablename__ == "myapp_ws_session"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="already declared"):
        make_models(Base.metadata, prefix="myapp_ws_")
    with pytest.raises(ValueError, match="prefix"):
        make_models(MetaData(), prefix="Bad-Prefix")
    other = make_models(Base.metadata, prefix="second_")
    assert other.session is not models.session


def test_orm_classes_are_usable(db: Database):
    db.storage.create_session(_session("orm-0000000001=", user="5"))
    with db.sessionmaker() as s:
        row = s.get(db.models.session, "orm-0000000001=")
        assert row is not None and row.user_id == "5" and row.connected
        assert row.connected_at.tzinfo is not None


def test_session_sources(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'src.sqlite3'}")
    models = make_models(MetaData(), prefix="src_")
    SqlaStorage(engine, models=models).create_tables()
    factory = sessionmaker(engine)
    scoped = scoped_session(factory)
    request_session = scoped()
    request_session.begin()
    for source in (engine, factory, scoped, lambda: factory()):
        storage = SqlaStorage(source, models=models)
        storage.create_session(_session(f"src-{id(source):012d}="[-16:]))
    # The thread's scoped session was never used (nor committed) by the storage.
    assert request_session.in_transaction() and not request_session.new
    scoped.remove()
    with pytest.raises(TypeError, match="sessionmaker"):
        SqlaStorage(42)  # type: ignore[arg-type]
    engine.dispose()


@pytest.mark.parametrize("pool", ["SingletonThreadPool", "StaticPool"])
def test_in_memory_sqlite_is_refused_and_the_apps_work_left_alone(pool: str):
    """One shared connection: a storage commit would commit the app's pending rows (and
    closing its session roll them back), so the storage refuses before checking it out."""
    kwargs = {"poolclass": StaticPool} if pool == "StaticPool" else {}
    engine = create_engine("sqlite://", **kwargs)
    assert type(engine.pool).__name__ == pool
    models = make_models(MetaData(), prefix="mem_")
    with engine.begin() as conn:
        models.metadata.create_all(conn)
    factory = sessionmaker(engine)
    gateways = models.gateway_table
    count = select(func.count()).select_from(gateways)
    with factory() as app_session:
        app_session.execute(insert(gateways).values(name="pending", resources={}))
        with pytest.raises(ConfigurationError, match=f"{pool}.*database file"):
            SqlaStorage(factory, models=models).get_session("x")
        assert app_session.scalar(count) == 1  # still pending in the app's transaction
        app_session.rollback()
        assert app_session.scalar(count) == 0  # ...and the app's to roll back
    engine.dispose()


def test_no_flask_import():
    code = (
        "import sys, apigw_ws_storage.sqla, apigw_ws_core.wsgi;"
        "assert 'flask' not in sys.modules, 'flask imported';"
        "assert 'django' not in sys.modules"
    )
    root = Path(__file__).resolve().parents[2]
    path = os.pathsep.join(str(root / d) for d in (".", "storage", "adapters/flask"))
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": path})
