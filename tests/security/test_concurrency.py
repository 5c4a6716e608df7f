"""Races on the real databases: a token is single-use under concurrency.

For the SQLAlchemy storage and the Django ORM storage, each on PostgreSQL and MariaDB (and
the SQLAlchemy storage on SQLite too):

* 50 threads released by a barrier spend the same token in the spent-token ledger: exactly
  one wins;
* 50 parallel ``$connect`` calls through the full pipeline carry the same (signed) token:
  exactly one 200, 49 x 401, one session row, one subscription, one ledger row (the token's
  digest), and a later replay is refused;
* 50 parallel ``$connect`` calls from one address against a limit of 10: exactly 10 pass,
  40 get 429 (the storage-backed limiter counts exactly).

These need the servers (``APIGW_WS_TEST_POSTGRES_URL`` / ``APIGW_WS_TEST_MARIADB_URL``);
``.ci/run`` sets them, so CI never skips them.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apigw_ws_core import Config, WebSocketApp
from apigw_ws_core.events import from_http
from apigw_ws_core.storage import Storage, Token
from apigw_ws_core.testing import RecordingTransport, gateway_headers, new_connection_id
from apigw_ws_core.tokens import token_keys, verify_token

from .support import SECRET, thread_storage

THREADS = 50


def race(fn: Callable[[int], Any], threads: int = THREADS) -> list[Any]:
    """Run ``fn(i)`` in ``threads`` threads released together by a barrier; return the
    results in completion order. Any exception fails the test."""
    barrier = threading.Barrier(threads)
    results: list[Any] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            value = fn(i)
            with lock:
                results.append(value)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(120)
    if errors:
        raise errors[0]
    assert len(results) == threads
    return results


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def spend_race(storage_for_thread: Callable[[], Storage], storage: Storage) -> None:
    """50 threads spend one token: exactly one ``True`` (two rounds); the ledger keeps it."""
    now = _now()
    for round_no in range(2):
        token = Token(
            token_hash=f"{round_no}5ec" * 16,
            user_id="7",
            created_at=now,
            expires_at=now + timedelta(seconds=60),
        )
        results = race(lambda i, t=token: storage_for_thread().spend_token(t))
        assert sorted(results) == [False] * (THREADS - 1) + [True]
        assert storage.spend_token(token) is False  # and it stays spent


def app_on(storage: Storage, **config: Any) -> WebSocketApp:
    """A pipeline on ``storage`` (a RecordingTransport; nothing reaches AWS)."""
    config.setdefault("connect_rate_per_ip", None)
    return WebSocketApp(
        storage=storage, transport=RecordingTransport(), config=Config(secret=SECRET, **config)
    )


def connect_call(app: WebSocketApp, query: str) -> tuple[int, str, str]:
    """One ``$connect`` from a new connection; ``(status, error code, connection id)``."""
    cid = new_connection_id()
    reply = app.handle(from_http("connect", gateway_headers("connect", cid, secret=SECRET), query))
    body = reply.json_body() if reply.body else None
    return reply.status, (body or {}).get("error", ""), cid


def pipeline_token_race(app: WebSocketApp) -> tuple[list[str], str]:
    """50 parallel connects with one token: one 200, 49 x 401; a replay afterwards is 401
    too. Returns the winner's id and the token's ledger key."""
    token, _ = app.issue_token("7", channel="room")
    digest = verify_token(token_keys(app.config), token, now=app.clock()).digest
    results = race(lambda i: connect_call(app, f"channel=room&ws_token={token}"))
    statuses = Counter((status, code) for status, code, _ in results)
    assert statuses == {(200, ""): 1, (401, "invalid_token"): THREADS - 1}, statuses
    assert connect_call(app, f"channel=room&ws_token={token}")[:2] == (401, "invalid_token")
    return [cid for status, _, cid in results if status == 200], digest


def pipeline_rate_race(app: WebSocketApp) -> None:
    """50 parallel connects from one address with a limit of 10: exactly 10 pass."""
    results = race(lambda i: connect_call(app, "channel=room"))
    statuses = Counter((status, code) for status, code, _ in results)
    assert statuses == {(200, ""): 10, (429, "rate_limited"): THREADS - 10}, statuses


# --- SQLAlchemy storage -------------------------------------------------------------------


def sqla_connect_race(db: Any) -> None:
    """The pipeline race on a SQLAlchemy database; then one session, one subscription and
    one ledger row (the token's digest)."""
    from sqlalchemy import func, select

    [winner], digest = pipeline_token_race(app_on(db.storage))
    with db.engine.connect() as conn:
        sessions = conn.execute(select(db.models.session_table.c.connection_id)).scalars().all()
        subs = conn.execute(select(func.count()).select_from(db.models.subscription_table))
        tokens = conn.execute(select(db.models.token_table.c.token_hash)).scalars().all()
        assert sessions == [winner]
        assert subs.scalar_one() == 1
        assert tokens == [digest]  # the spent-token ledger: one row, the token's digest


def test_sqla_50_spenders_one_winner(sqla):
    spend_race(sqla.new_storage, sqla.storage)


def test_sqla_50_parallel_connects_with_one_token(sqla):
    sqla_connect_race(sqla)


def test_sqlite_50_spenders_one_winner(flask_db):
    flask_db.empty()
    spend_race(flask_db.new_storage, flask_db.storage)


def test_sqlite_50_parallel_connects_with_one_token(flask_db):
    flask_db.empty()
    sqla_connect_race(flask_db)


def test_sqla_50_parallel_connects_count_exactly(sqla):
    pipeline_rate_race(app_on(sqla.storage, require_token=False, connect_rate_per_ip="10/3600"))


# --- Django ORM storage -------------------------------------------------------------------


def test_django_50_spenders_one_winner(django_alias):
    spend_race(lambda: thread_storage(django_alias), thread_storage(django_alias))


def test_django_50_parallel_connects_with_one_token(django_alias):
    from apigw_ws_storage.django_orm.models import (
        WebSocketSession,
        WebSocketSubscription,
        WebSocketToken,
    )

    app = app_on(thread_storage(django_alias))
    [winner], digest = pipeline_token_race(app)
    sessions = list(
        WebSocketSession.objects.using(django_alias).values_list("connection_id", flat=True)
    )
    assert sessions == [winner]
    assert WebSocketSubscription.objects.using(django_alias).count() == 1
    ledger = WebSocketToken.objects.using(django_alias).values_list("token_hash", flat=True)
    assert list(ledger) == [digest]


def test_django_50_parallel_connects_count_exactly(django_alias):
    pipeline_rate_race(
        app_on(thread_storage(django_alias), require_token=False, connect_rate_per_ip="10/3600")
    )
