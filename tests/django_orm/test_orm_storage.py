"""Django ORM storage beyond the contract: races with 50 threads, statements per call,
collations, indexes, fallbacks for databases without RETURNING, migrations in sync."""

from __future__ import annotations

import io
import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connections, transaction
from django.test.utils import CaptureQueriesContext

from apigw_ws_core.storage import Session, Token
from apigw_ws_core.transport import RecordingTransport
from apigw_ws_storage.django_orm import models as m
from apigw_ws_storage.django_orm.storage import DjangoStorage
from tests.django_orm.helpers import ThreadStorage, alias_params, run_threads


@pytest.fixture(params=alias_params())
def alias(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def storage(alias: str) -> DjangoStorage:
    User = get_user_model()
    User.objects.using(alias).bulk_create([User(pk=i, username=f"u{i}") for i in range(1, 4)])
    return DjangoStorage(alias)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _session(cid: str, channel: str = "room", user: str | None = None) -> Session:
    return Session(connection_id=cid, channel_name=channel, user_id=user, connected_at=_now())


def _token(h: str, user: str = "1", ttl: int = 60) -> Token:
    now = _now()
    return Token(
        token_hash=h, user_id=user, created_at=now, expires_at=now + timedelta(seconds=ttl)
    )


def _count(alias: str, fn: Any) -> tuple[Any, list[str]]:
    with CaptureQueriesContext(connections[alias]) as ctx:
        result = fn()
    return result, [q["sql"] for q in ctx.captured_queries]


# --- races ------------------------------------------------------------------------------


def test_50_parallel_token_spenders_one_winner(storage: DjangoStorage, alias: str):
    for round_ in range(2):
        token = _token(f"{round_}" * 64)
        racer = ThreadStorage(alias)
        results = run_threads(lambda t=token: racer.spend_token(t), 50, alias)
        assert len(results) == 50 and results.count(True) == 1, f"{results.count(True)} winners"
        assert results.count(False) == 49
        assert storage.spend_token(token) is False  # stays spent
    rows = m.WebSocketToken.objects.using(alias)
    assert sorted(rows.values_list("token_hash", flat=True)) == ["0" * 64, "1" * 64]
    assert {str(u) for u in rows.values_list("user_id", flat=True)} == {"1"}


def test_50_parallel_connects_with_one_token_one_winner(storage: DjangoStorage, alias: str):
    """The race as $connect runs it: 50 connect transactions (each counting, spending the
    token and storing a session) with one token; exactly one spends it and connects, the
    other 49 are refused (what the core does with a replay) and store nothing."""
    from apigw_ws_core.errors import InvalidToken
    from apigw_ws_core.storage import Admission, ConnectPlan, CounterHit

    now = _now()
    token = _token("d" * 64, user="2")
    hit = CounterHit(
        key="connect:ip:race", window_start=now, expires_at=now + timedelta(seconds=60), limit=99
    )

    def admit(spent: Token | None, count: Any, cid: str) -> Admission:
        if spent is None:
            raise InvalidToken()
        return Admission(session=_session(cid, user=spent.user_id))

    racer = ThreadStorage(alias)
    numbers = iter(range(50))
    lock = threading.Lock()

    def attempt() -> Any:
        with lock:
            cid = f"conn-race-{next(numbers):05d}="
        plan = ConnectPlan(
            connection_id=cid,
            now=now,
            token=token,
            counters=(hit,),
            admit=lambda spent, count: admit(spent, count, cid),
        )
        try:
            return racer.connect(plan).session.connection_id
        except InvalidToken:
            return None

    results = run_threads(attempt, 50, alias)
    winners = [r for r in results if r is not None]
    assert len(results) == 50 and len(winners) == 1, f"{len(winners)} winners"
    sessions = m.WebSocketSession.objects.using(alias)
    assert list(sessions.values_list("connection_id", flat=True)) == winners
    assert m.WebSocketToken.objects.using(alias).filter(token_hash="d" * 64).count() == 1
    assert storage.incr_counter(hit.key, hit.window_start, hit.expires_at) == 51  # all counted


def test_50_parallel_counter_increments(storage: DjangoStorage, alias: str):
    start = _now()
    racer = ThreadStorage(alias)
    results = run_threads(
        lambda: racer.incr_counter("race", start, start + timedelta(seconds=60)), 50, alias
    )
    assert sorted(results) == list(range(1, 51))


def test_counter_fallbacks(storage: DjangoStorage, alias: str, monkeypatch: pytest.MonkeyPatch):
    """Without RETURNING: MySQL's LAST_INSERT_ID upsert, or the row-locking fallback."""
    monkeypatch.setattr(DjangoStorage, "_supports_returning", lambda self: False)
    start = _now()
    end = start + timedelta(seconds=60)
    assert [storage.incr_counter("k", start, end) for _ in range(3)] == [1, 2, 3]
    racer = ThreadStorage(alias)
    results = run_threads(lambda: racer.incr_counter("r", start, end), 20, alias)
    assert sorted(results) == list(range(1, 21))


# --- statements per call ----------------------------------------------------------------


def test_statements_per_call(storage: DjangoStorage, alias: str):
    now = _now()
    spent, sql = _count(alias, lambda: storage.spend_token(_token("a" * 64)))
    assert spent is True and len(sql) == 1 and sql[0].upper().startswith("INSERT")
    spent, sql = _count(alias, lambda: storage.spend_token(_token("a" * 64)))
    assert spent is False and len(sql) == 1  # a replay: the same INSERT, nothing inserted
    _, sql = _count(alias, lambda: storage.incr_counter("k", now, now + timedelta(seconds=9)))
    assert len(sql) == 1
    _, sql = _count(alias, lambda: storage.create_session(_session("conn-stmt-00001=", user="1")))
    assert len(_data(sql)) == 2 and _commits(sql) == 1  # session + subscription, one commit
    _, sql = _count(alias, lambda: storage.get_session("conn-stmt-00001="))
    assert len(sql) == 1
    added, sql = _count(alias, lambda: storage.subscribe("conn-stmt-00001=", "extra"))
    assert added is True and len(sql) == 1
    added, sql = _count(alias, lambda: storage.subscribe("conn-stmt-00001=", "extra"))
    assert added is False and len(sql) == 1
    _, sql = _count(alias, lambda: storage.unsubscribe("conn-stmt-00001=", "extra"))
    assert len(sql) == 1
    _, sql = _count(alias, lambda: storage.presence("room"))
    assert len(sql) == 1
    _, sql = _count(alias, lambda: storage.mark_disconnected(["conn-stmt-00001="], now))
    assert len(sql) == 2
    _, sql = _count(alias, lambda: storage.mark_disconnected(["conn-stmt-00001="], now))
    assert len(sql) == 1  # nothing changed: no DELETE


def _data(sql: list[str]) -> list[str]:
    """The statements that read or write rows (not transaction control)."""
    control = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")
    return [q for q in sql if not q.upper().lstrip().startswith(control)]


def _commits(sql: list[str]) -> int:
    """COMMITs Django logged, or 1 for an outermost atomic block on a backend that commits
    through the driver (PostgreSQL and MySQL log no COMMIT statement)."""
    logged = sum(1 for q in sql if q.upper().strip() == "COMMIT")
    return logged or 1


def test_connect_with_a_token_is_one_commit(storage: DjangoStorage, alias: str):
    from apigw_ws_core.storage import Admission, ConnectPlan, CounterHit

    now = _now()
    hit = CounterHit(
        key="connect:ip:x", window_start=now, expires_at=now + timedelta(seconds=60), limit=9
    )
    token_hit = CounterHit(
        key="token:user:2", window_start=now, expires_at=now + timedelta(seconds=60), limit=9
    )

    def admit(token: Token | None, count: Any) -> Admission:
        assert token is not None
        count(token_hit)  # what the core counts for a redeemed token (token_rate_per_user)
        return Admission(session=_session("conn-stmt-00002=", user=token.user_id))

    plan = ConnectPlan(
        connection_id="conn-stmt-00002=",
        now=now,
        token=_token("b" * 64, user="2"),
        counters=(hit,),
        admit=admit,
    )
    with CaptureQueriesContext(connections[alias]) as ctx:
        storage.connect(plan)
        assert connections[alias].in_atomic_block is False
    sql = [q["sql"] for q in ctx.captured_queries]
    # counter upsert, ledger INSERT (spend), counter upsert, session INSERT, subscription
    assert len(_data(sql)) == 5, sql
    assert _commits(sql) == 1
    assert storage.spend_token(_token("b" * 64, user="2")) is False  # spent by the connect


def test_app_token_connect_is_one_transaction(storage: DjangoStorage, alias: str):
    """Through the app: issuing a token runs no SQL at all; the $connect that redeems it is
    one transaction (IP count, spend, redemption count, session, subscription); a replay
    is refused, counted, and stores nothing."""
    from apigw_ws_core.app import WebSocketApp
    from apigw_ws_core.config import Config
    from apigw_ws_core.events import from_http
    from apigw_ws_core.testing import gateway_headers

    secret = "orm-statements-secret-0123456789"
    app = WebSocketApp(
        storage=storage, transport=RecordingTransport(), config=Config(secret=secret)
    )
    (token, _), sql = _count(alias, lambda: app.issue_token("2"))
    assert sql == []  # signed, not stored

    def connect(cid: str) -> Any:
        headers = gateway_headers("connect", cid, secret=secret)
        return app.handle(from_http("connect", headers, f"ws_token={token}"))

    reply, sql = _count(alias, lambda: connect("conn-app-00001=="))
    assert reply.status == 200, reply.body
    # connect:ip upsert, ledger INSERT, token:user upsert, session INSERT, subscription
    assert len(_data(sql)) == 5, sql
    assert _commits(sql) == 1
    got = storage.get_session("conn-app-00001==")
    assert got is not None and got.user_id == "2"
    reply, sql = _count(alias, lambda: connect("conn-app-00002=="))
    assert reply.status == 401 and reply.json_body()["error"] == "invalid_token"
    assert len(_data(sql)) == 2 and _commits(sql) == 1  # connect:ip upsert, ledger INSERT
    assert storage.get_session("conn-app-00002==") is None
    assert m.WebSocketToken.objects.using(alias).count() == 1


def test_mark_disconnected_batches(storage: DjangoStorage, alias: str):
    ids = [f"conn-batch-{i:05d}=" for i in range(1100)]
    m.WebSocketSession.objects.using(alias).bulk_create(
        [m.WebSocketSession(connection_id=c, channel_name="b", connected_at=_now()) for c in ids]
    )
    changed, sql = _count(alias, lambda: storage.mark_disconnected(ids, _now()))
    assert changed == 1100
    assert len(sql) == 6  # 3 batches of at most 500: one UPDATE and one DELETE each


def test_iteration_uses_keyset_pagination(storage: DjangoStorage, alias: str):
    ids = [f"conn-keys-{i:05d}=" for i in range(12)]
    for cid in ids:
        storage.create_session(_session(cid, channel="k", user="2"))
    for kwargs in ({"channel": "k"}, {"user_id": "2"}, {}, {"channel": "k", "user_id": "2"}):
        batches, sql = _count(
            alias, lambda kw=kwargs: list(storage.iter_connection_ids(batch_size=5, **kw))
        )
        assert [len(b) for b in batches] == [5, 5, 2]
        assert sorted(c for b in batches for c in b) == ids
        assert len(sql) == 3
        assert all("OFFSET" not in q.upper() for q in sql)
        assert all(">" in q for q in sql[1:])
    assert list(storage.iter_connection_ids(user_id="not-an-int")) == []


def test_queryset_send_message_streams(storage: DjangoStorage, alias: str):
    from apigw_ws_core.app import WebSocketApp

    for i in range(7):
        storage.create_session(_session(f"conn-qs-{i:07d}=", channel="qs"))
    storage.create_session(_session("conn-qs-other00=", channel="other"))
    storage.mark_disconnected(["conn-qs-0000000="], _now())
    transport = RecordingTransport()
    app = WebSocketApp(storage=storage, transport=transport)
    qs = m.WebSocketSession.objects.using(alias).filter(channel_name="qs")
    report, sql = _count(alias, lambda: qs.send_message({"x": 1}, app=app, batch_size=2))
    assert report.delivered == 6
    assert sorted(s.connection_id for s in transport.sent) == [
        f"conn-qs-{i:07d}=" for i in range(1, 7)
    ]
    assert len(sql) == 4  # 2 + 2 + 2 rows, the last batch is full: one more empty page
    assert list(qs.iter_connection_ids(batch_size=10)) == [
        [f"conn-qs-{i:07d}=" for i in range(1, 7)]
    ]


# --- data and schema ---------------------------------------------------------------------


def test_case_sensitive_columns(storage: DjangoStorage, alias: str):
    storage.create_session(_session("caseABCdef12345=", channel="Room"))
    storage.create_session(_session("caseabcdef12345=", channel="room"))
    assert storage.get_session("caseABCdef12345=").channel_name == "Room"  # type: ignore[union-attr]
    assert [c for b in storage.iter_connection_ids(channel="room") for c in b] == [
        "caseabcdef12345="
    ]
    start = _now()
    assert storage.incr_counter("msg:AAAA", start, start) == 1
    assert storage.incr_counter("msg:aaaa", start, start) == 1
    if connections[alias].vendor == "mysql":
        with connections[alias].cursor() as cursor:
            cursor.execute(
                "SELECT column_name, collation_name FROM information_schema.columns "
                "WHERE table_schema = DATABASE() AND table_name = %s",
                [m.WebSocketSession._meta.db_table],
            )
            collations = dict(cursor.fetchall())
        assert collations["connection_id"] == "utf8mb4_bin"
        assert collations["channel_name"] == "utf8mb4_bin"


def test_indexes_exist(alias: str):
    with connections[alias].cursor() as cursor:
        introspection = connections[alias].introspection
        sessions = introspection.get_constraints(cursor, m.WebSocketSession._meta.db_table)
        subs = introspection.get_constraints(cursor, m.WebSocketSubscription._meta.db_table)
        counters = introspection.get_constraints(cursor, m.RateLimitCounter._meta.db_table)
    for name in (
        "apigw_ws_sess_conn_id",
        "apigw_ws_sess_user",
        "apigw_ws_sess_channel",
        "apigw_ws_sess_stale",
        "apigw_ws_sess_gone",
    ):
        assert name in sessions
    assert any(c["unique"] and c["columns"] == ["connection_id"] for c in sessions.values())
    assert subs["apigw_ws_sub_channel"]["columns"] == ["channel_name", "session_id"]
    assert subs["apigw_ws_sub_unique"]["unique"]
    assert counters["apigw_ws_counter_key"]["unique"]


def test_replace_inside_outer_transaction(storage: DjangoStorage, alias: str):
    """A retried $connect inside the caller's transaction replaces the row and leaves the
    transaction usable (the duplicate insert runs in a savepoint)."""
    storage.create_session(_session("conn-retry-0001=", channel="a", user="1"))
    with transaction.atomic(using=alias):
        storage.create_session(_session("conn-retry-0001=", channel="b", user="2"), ["c"])
        assert m.WebSocketSession.objects.using(alias).count() == 1
    got = storage.get_session("conn-retry-0001=")
    assert got is not None and got.channel_name == "b" and got.user_id == "2"
    assert storage.channels_of("conn-retry-0001=") == ["b", "c"]
    with transaction.atomic(using=alias):  # a replay leaves the transaction usable too
        assert storage.spend_token(_token("e" * 64)) is True
        assert storage.spend_token(_token("e" * 64)) is False
        assert m.WebSocketToken.objects.using(alias).filter(token_hash="e" * 64).count() == 1
    assert storage.spend_token(_token("e" * 64)) is False


def test_unknown_user_is_an_error_not_a_replace(storage: DjangoStorage, alias: str):
    from django.db import IntegrityError

    with pytest.raises(IntegrityError):
        storage.create_session(_session("conn-nouser-001=", user="999"))
    assert storage.get_session("conn-nouser-001=") is None


def test_cleanup_deletes_in_batches(storage: DjangoStorage, alias: str):
    long_ago = _now() - timedelta(days=5)
    m.WebSocketSession.objects.using(alias).bulk_create(
        [
            m.WebSocketSession(
                connection_id=f"conn-old-{i:06d}=",
                channel_name="x",
                connected=False,
                connected_at=long_ago,
                disconnected_at=long_ago,
            )
            for i in range(520)
        ]
    )
    report = storage.cleanup(_now())
    assert report.old_disconnected == 520
    assert not m.WebSocketSession.objects.using(alias).exists()


def test_user_deletion_cascades(storage: DjangoStorage, alias: str):
    storage.create_session(_session("conn-cascade-01=", user="3"))
    assert storage.spend_token(_token("f" * 64, user="3")) is True
    get_user_model().objects.using(alias).filter(pk=3).delete()
    assert storage.get_session("conn-cascade-01=") is None
    assert not m.WebSocketToken.objects.using(alias).filter(token_hash="f" * 64).exists()


def test_a_token_of_a_deleted_user_counts_as_spent(storage: DjangoStorage, alias: str):
    """A token outlives its user by up to its ttl: spending it then is ``False`` (it is
    nobody's any more) on every database, never an ``IntegrityError``, and a ``$connect``
    with it is the usual ``401 invalid_token`` with nothing stored."""
    from apigw_ws_core import Config, WebSocketApp
    from apigw_ws_core.errors import InvalidToken
    from apigw_ws_core.events import from_lambda
    from apigw_ws_core.testing import lambda_event, new_connection_id, redeem_token

    assert storage.spend_token(_token("9" * 64, user="99")) is False  # no such user
    assert not m.WebSocketToken.objects.using(alias).exists()
    app = WebSocketApp(storage=storage, config=Config(allow_insecure_no_secret=True))
    users = get_user_model().objects.using(alias)
    helper_token, _ = app.issue_token("2")
    connect_token, _ = app.issue_token("2")
    users.filter(pk=2).delete()
    with pytest.raises(InvalidToken):
        redeem_token(app, helper_token)
    cid = new_connection_id()
    event = lambda_event("CONNECT", cid, query={"ws_token": connect_token})
    reply = app.handle(from_lambda(event))
    assert (reply.status, json.loads(reply.body)["error"]) == (401, "invalid_token")
    assert storage.get_session(cid) is None
    assert not m.WebSocketToken.objects.using(alias).exists()


def test_describe(storage: DjangoStorage, alias: str):
    assert storage.describe()["database"] == alias


@pytest.mark.django_db(databases="__all__")
def test_models_and_migrations_agree():
    """Fails when a model changes without a migration (makemigrations --check)."""
    out = io.StringIO()
    call_command(
        "makemigrations", "apigw_ws_storage", "--check", "--dry-run", stdout=out, stderr=out
    )
    assert "No changes detected" in out.getvalue()
