"""A complete custom storage backend on the standard library's :mod:`sqlite3`.

It exists to show how to write one: every method of :class:`apigw_ws_core.storage.Storage`,
in plain SQL, and it passes the contract suite (``tests/docs/test_sqlite_storage_example.py``).
Use the bundled Django ORM or SQLAlchemy backends for real applications.

Design choices worth copying into any backend:

* each call is its own transaction (``BEGIN IMMEDIATE`` takes the write lock up front, so two
  writers never deadlock halfway);
* a ``$connect`` (rate counters, the token, the session and its channels) is ONE
  transaction: :meth:`ConnectPlan.run <apigw_ws_core.storage.ConnectPlan.run>` runs its
  steps with primitives bound to that transaction;
* a spent token is recorded with one ``INSERT ... ON CONFLICT DO NOTHING`` under the
  token hash's primary key: its row count says whether this caller spent it first, so a
  token opens one connection however many race with it;
* counters are one upsert (``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``);
* connection ids are streamed with keyset pagination, never loaded all at once;
* a channel's history position is one upsert ``... RETURNING`` in the same transaction as
  the message insert, so offsets are handed out and committed in order;
* a durable send job's checkpoint is one compare-and-set ``UPDATE`` (the part must still be
  at the cursor the worker read), so of two workers on the same part only one moves on;
* times are stored as integer microseconds since the epoch, which round-trip exactly.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from apigw_ws_core.errors import ConnectionExists
from apigw_ws_core.storage import (
    JOB_FINISHED,
    JOB_RUNNING,
    Admission,
    CleanupReport,
    ConnectPlan,
    HistoryMessage,
    HistoryPage,
    JobCounts,
    JobPart,
    Presence,
    Session,
    Storage,
    Token,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    connection_id TEXT PRIMARY KEY,
    channel_name TEXT NOT NULL,
    user_id TEXT,
    connected INTEGER NOT NULL,
    source_ip TEXT NOT NULL, user_agent TEXT NOT NULL, stage TEXT NOT NULL, api_id TEXT NOT NULL,
    connected_at INTEGER NOT NULL,
    disconnected_at INTEGER,
    attributes TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS subscriptions (
    connection_id TEXT NOT NULL REFERENCES sessions (connection_id) ON DELETE CASCADE,
    channel_name TEXT NOT NULL,
    user_id TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (channel_name, connection_id)
);
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    channel TEXT,
    origin TEXT
);
CREATE TABLE IF NOT EXISTS counters (
    key TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    value INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (key, window_start)
);
CREATE TABLE IF NOT EXISTS channel_history (
    channel TEXT PRIMARY KEY,
    epoch TEXT NOT NULL,
    last_offset INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS history_messages (
    channel TEXT NOT NULL,
    "offset" INTEGER NOT NULL,
    epoch TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (channel, "offset")
);
CREATE INDEX IF NOT EXISTS history_messages_expires_at ON history_messages (expires_at);
CREATE TABLE IF NOT EXISTS job_parts (
    job_id TEXT NOT NULL,
    part INTEGER NOT NULL,
    record TEXT NOT NULL,
    status TEXT NOT NULL,
    "cursor" TEXT,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (job_id, part)
);
"""


def _us(moment: datetime) -> int:
    """A timezone-aware datetime as integer microseconds since the epoch."""
    return (moment - EPOCH) // timedelta(microseconds=1)


def _dt(value: int | None) -> datetime | None:
    return None if value is None else EPOCH + timedelta(microseconds=value)


def _session(row: sqlite3.Row) -> Session:
    return Session(
        connection_id=row["connection_id"],
        channel_name=row["channel_name"],
        user_id=row["user_id"],
        connected=bool(row["connected"]),
        source_ip=row["source_ip"],
        user_agent=row["user_agent"],
        stage=row["stage"],
        api_id=row["api_id"],
        connected_at=EPOCH + timedelta(microseconds=row["connected_at"]),
        disconnected_at=_dt(row["disconnected_at"]),
        attributes=json.loads(row["attributes"]),
    )


def _spend(db: sqlite3.Connection, token: Token) -> bool:
    cursor = db.execute(
        "INSERT INTO tokens VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (token_hash) DO NOTHING",
        (
            token.token_hash,
            token.user_id,
            _us(token.created_at),
            _us(token.expires_at),
            token.channel,
            token.origin,
        ),
    )
    return cursor.rowcount == 1


def _incr(db: sqlite3.Connection, key: str, window_start: datetime, expires_at: datetime) -> int:
    row = db.execute(
        "INSERT INTO counters VALUES (?, ?, 1, ?) "
        "ON CONFLICT (key, window_start) DO UPDATE SET value = value + 1 "
        "RETURNING value",
        (key, _us(window_start), _us(expires_at)),
    ).fetchone()
    return int(row[0])


class SqliteStorage(Storage):
    """apigw-ws storage in one SQLite file. Safe across threads and processes."""

    def __init__(self, path: str) -> None:
        self.path = path
        db = sqlite3.connect(path, timeout=30)
        try:
            db.executescript(SCHEMA)  # commits by itself
        finally:
            db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    # --- sessions ------------------------------------------------------------------

    def create_session(self, session: Session, channels: Sequence[str] = ()) -> None:
        """Store (or replace) a connected session and its subscriptions, atomically."""
        with self._transaction() as db:
            db.execute("DELETE FROM sessions WHERE connection_id = ?", (session.connection_id,))
            self._insert_session(db, session, channels)

    def connect(self, plan: ConnectPlan) -> Admission:
        """A whole ``$connect`` in one transaction; a live session with the id is refused
        and the transaction rolled back (nothing changes)."""

        def store(admission: Admission) -> None:
            session = admission.session
            row = db.execute(
                "SELECT connected FROM sessions WHERE connection_id = ?",
                (session.connection_id,),
            ).fetchone()
            if row is not None and row["connected"]:
                raise ConnectionExists()
            db.execute("DELETE FROM sessions WHERE connection_id = ?", (session.connection_id,))
            self._insert_session(db, session, admission.channels)

        with self._transaction() as db:
            admission, refusal = plan.run(
                incr=lambda hit: _incr(db, hit.key, hit.window_start, hit.expires_at),
                spend=lambda token: _spend(db, token),
                store=store,
            )
        if refusal is not None:
            raise refusal  # after the commit: what was counted and consumed stays so
        assert admission is not None
        return admission

    @staticmethod
    def _insert_session(db: sqlite3.Connection, session: Session, channels: Sequence[str]) -> None:
        db.execute(
            "INSERT INTO sessions VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?, NULL, ?)",
            (
                session.connection_id,
                session.channel_name,
                session.user_id,
                session.source_ip,
                session.user_agent,
                session.stage,
                session.api_id,
                _us(session.connected_at),
                json.dumps(dict(session.attributes)),
            ),
        )
        db.executemany(
            "INSERT INTO subscriptions VALUES (?, ?, ?, ?)",
            [
                (session.connection_id, name, session.user_id, _us(session.connected_at))
                for name in dict.fromkeys([session.channel_name, *channels])
            ],
        )

    def get_session(self, connection_id: str) -> Session | None:
        """The session, connected or not, or ``None``."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT * FROM sessions WHERE connection_id = ?", (connection_id,)
            ).fetchone()
        return None if row is None else _session(row)

    def mark_disconnected(
        self,
        connection_ids: Iterable[str],
        at: datetime,
        *,
        connected_before: datetime | None = None,
    ) -> int:
        """Bulk-mark sessions gone (500 ids per statement) and drop their subscriptions;
        with ``connected_before``, only sessions that connected earlier."""
        ids = list(dict.fromkeys(connection_ids))
        changed = 0
        with self._transaction() as db:
            if connected_before is not None:
                old = []
                for start in range(0, len(ids), 500):
                    chunk = ids[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    old += [
                        row[0]
                        for row in db.execute(
                            f"SELECT connection_id FROM sessions WHERE connected = 1 "  # noqa: S608
                            f"AND connected_at < ? AND connection_id IN ({marks})",
                            [_us(connected_before), *chunk],
                        )
                    ]
                ids = old
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                changed += db.execute(
                    f"UPDATE sessions SET connected = 0, disconnected_at = ? "  # noqa: S608
                    f"WHERE connected = 1 AND connection_id IN ({marks})",
                    [_us(at), *chunk],
                ).rowcount
                db.execute(
                    f"DELETE FROM subscriptions WHERE connection_id IN ({marks})",  # noqa: S608
                    chunk,
                )
        return changed

    # --- channels ------------------------------------------------------------------

    def subscribe(self, connection_id: str, channel_name: str) -> bool:
        """Add a connected session to a channel; ``False`` if already in or not connected."""
        with self._transaction() as db:
            inserted = db.execute(
                "INSERT OR IGNORE INTO subscriptions "
                "SELECT connection_id, ?, user_id, ? FROM sessions "
                "WHERE connection_id = ? AND connected = 1",
                (channel_name, _us(datetime.now(UTC)), connection_id),
            ).rowcount
        return inserted == 1

    def unsubscribe(self, connection_id: str, channel_name: str) -> bool:
        """Remove a membership; ``True`` if there was one."""
        with self._transaction() as db:
            deleted = db.execute(
                "DELETE FROM subscriptions WHERE connection_id = ? AND channel_name = ?",
                (connection_id, channel_name),
            ).rowcount
        return deleted == 1

    def channels_of(self, connection_id: str) -> list[str]:
        """Channel names of a connection, sorted."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT channel_name FROM subscriptions WHERE connection_id = ? "
                "ORDER BY channel_name",
                (connection_id,),
            ).fetchall()
        return [row[0] for row in rows]

    @staticmethod
    def _target(
        channel: str | None, user_id: str | None, attributes: Mapping[str, str] | None
    ) -> tuple[list[str], list[Any]]:
        """WHERE clauses and parameters selecting the connected sessions of a target."""
        where = ["s.connected = 1"]
        params: list[Any] = []
        if channel is not None:
            where.append(
                "EXISTS (SELECT 1 FROM subscriptions m "
                "WHERE m.connection_id = s.connection_id AND m.channel_name = ?)"
            )
            params.append(channel)
        if user_id is not None:
            where.append("s.user_id = ?")
            params.append(user_id)
        for name, value in (attributes or {}).items():
            where.append("json_extract(s.attributes, ?) = ?")
            params.extend([f'$."{name}"', value])
        return where, params

    def iter_connection_ids(
        self,
        *,
        channel: str | None = None,
        user_id: str | None = None,
        attributes: Mapping[str, str] | None = None,
        batch_size: int = 500,
    ) -> Iterator[list[str]]:
        """Connected ids in batches, by keyset pagination on the primary key."""
        after: str | None = None
        while True:
            batch, after = self.recipient_page(
                channel=channel,
                user_id=user_id,
                attributes=attributes,
                after=after,
                limit=batch_size,
            )
            if not batch:
                return
            yield batch
            if len(batch) < batch_size:
                return

    def iter_connected_before(
        self,
        cutoff: datetime,
        *,
        batch_size: int = 500,
        after: str | None = None,
        upto: str | None = None,
    ) -> Iterator[list[str]]:
        """Ids of sessions connected before ``cutoff`` (healing asks API Gateway about
        them), ``> after`` and ``<= upto`` when given, by keyset pagination on the
        primary key."""
        last = after or ""
        while True:
            with self._transaction() as db:
                batch = [
                    row[0]
                    for row in db.execute(
                        "SELECT connection_id FROM sessions WHERE connected = 1 "
                        "AND connected_at < ? AND connection_id > ? AND (? IS NULL OR "
                        "connection_id <= ?) ORDER BY connection_id LIMIT ?",
                        (_us(cutoff), last, upto, upto, batch_size),
                    )
                ]
            if not batch:
                return
            yield batch
            if len(batch) < batch_size:
                return
            last = batch[-1]

    def count_recipients(
        self,
        *,
        channel: str | None = None,
        user_id: str | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> int:
        """How many connected sessions the target has."""
        where, params = self._target(channel, user_id, attributes)
        sql = f"SELECT count(*) FROM sessions s WHERE {' AND '.join(where)}"  # noqa: S608
        with self._transaction() as db:
            return int(db.execute(sql, params).fetchone()[0])

    def recipient_page(
        self,
        *,
        channel: str | None = None,
        user_id: str | None = None,
        attributes: Mapping[str, str] | None = None,
        after: str | None = None,
        upto: str | None = None,
        limit: int = 500,
    ) -> tuple[list[str], str | None]:
        """One keyset page; the cursor is the connection id."""
        where, params = self._target(channel, user_id, attributes)
        if after is not None:
            where.append("s.connection_id > ?")
            params.append(after)
        if upto is not None:
            where.append("s.connection_id <= ?")
            params.append(upto)
        sql = (
            f"SELECT s.connection_id FROM sessions s WHERE {' AND '.join(where)} "  # noqa: S608
            "ORDER BY s.connection_id LIMIT ?"
        )
        with self._transaction() as db:
            ids = [row[0] for row in db.execute(sql, [*params, limit])]
        return ids, (ids[-1] if ids else None)

    def recipient_splits(
        self,
        *,
        channel: str | None = None,
        user_id: str | None = None,
        attributes: Mapping[str, str] | None = None,
        every: int = 50_000,
    ) -> list[str]:
        """The cursor of every ``every``-th recipient (one OFFSET query per cut)."""
        cuts: list[str] = []
        while True:
            where, params = self._target(channel, user_id, attributes)
            if cuts:
                where.append("s.connection_id > ?")
                params.append(cuts[-1])
            sql = (
                f"SELECT s.connection_id FROM sessions s WHERE {' AND '.join(where)} "  # noqa: S608
                "ORDER BY s.connection_id LIMIT 2 OFFSET ?"
            )
            with self._transaction() as db:
                rows = [row[0] for row in db.execute(sql, [*params, every - 1])]
            if len(rows) < 2:
                return cuts
            cuts.append(rows[0])

    # --- durable send jobs ------------------------------------------------------------
    # Each part is stored as JSON (``record``) beside the columns the updates test.

    @staticmethod
    def _part_json(part: JobPart) -> str:
        return json.dumps(
            {
                "target": part.target,
                "lower": part.lower,
                "upper": part.upper,
                "expected": part.expected,
                "counts": part.counts.as_dict(),
                "runs": part.runs,
                "first_error": part.first_error,
                "created_at": _us(part.created_at),
                "finished_at": None if part.finished_at is None else _us(part.finished_at),
            }
        )

    @staticmethod
    def _part(row: sqlite3.Row) -> JobPart:
        data = json.loads(row["record"])
        return JobPart(
            job_id=row["job_id"],
            index=row["part"],
            target=data["target"],
            lower=data["lower"],
            upper=data["upper"],
            cursor=row["cursor"],
            status=row["status"],
            expected=data["expected"],
            counts=JobCounts(**data["counts"]),
            runs=data["runs"],
            first_error=data["first_error"],
            created_at=EPOCH + timedelta(microseconds=data["created_at"]),
            updated_at=EPOCH + timedelta(microseconds=row["updated_at"]),
            finished_at=_dt(data["finished_at"]),
        )

    def create_job_parts(self, parts: Sequence[JobPart]) -> int:
        """Insert the parts that do not exist yet."""
        with self._transaction() as db:
            added = 0
            for p in parts:
                cur = db.execute(
                    "INSERT OR IGNORE INTO job_parts VALUES (?, ?, ?, ?, ?, ?)",
                    (p.job_id, p.index, self._part_json(p), p.status, p.cursor, _us(p.updated_at)),
                )
                added += cur.rowcount
        return added

    def get_job_parts(self, job_id: str) -> list[JobPart]:
        """Every part of a job, by index."""
        with self._transaction() as db:
            rows = db.execute("SELECT * FROM job_parts WHERE job_id = ? ORDER BY part", (job_id,))
            return [self._part(row) for row in rows]

    def _update_part(
        self, db: sqlite3.Connection, part: JobPart, *, where_cursor: bool = False, old: Any = None
    ) -> bool:
        sql = (
            'UPDATE job_parts SET record = ?, status = ?, "cursor" = ?, updated_at = ? '
            "WHERE job_id = ? AND part = ?"
        )
        params: list[Any] = [self._part_json(part), part.status, part.cursor]
        params += [_us(part.updated_at), part.job_id, part.index]
        if where_cursor:
            sql += ' AND status = ? AND "cursor" IS ?'
            params += [JOB_RUNNING, old]
        return db.execute(sql, params).rowcount == 1

    def start_job_part(self, job_id: str, index: int, now: datetime) -> JobPart | None:
        """Take a part (running, one more run) unless it is finished."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT * FROM job_parts WHERE job_id = ? AND part = ?", (job_id, index)
            ).fetchone()
            if row is None:
                return None
            part = self._part(row)
            if part.status in JOB_FINISHED:
                return part
            part = attrs.evolve(part, status=JOB_RUNNING, runs=part.runs + 1, updated_at=now)
            self._update_part(db, part)
            return part

    def checkpoint_job_part(
        self,
        job_id: str,
        index: int,
        *,
        expected_cursor: str | None,
        cursor: str | None,
        add: JobCounts,
        now: datetime,
        status: str | None = None,
        first_error: str | None = None,
        expected: int | None = None,
    ) -> bool:
        """Compare-and-set: only a running part still at ``expected_cursor`` moves on."""
        with self._transaction() as db:  # BEGIN IMMEDIATE: read and write under one lock
            row = db.execute(
                "SELECT * FROM job_parts WHERE job_id = ? AND part = ?", (job_id, index)
            ).fetchone()
            if row is None:
                return False
            part = self._part(row)
            if part.status != JOB_RUNNING or part.cursor != expected_cursor:
                return False
            changed = {
                "cursor": cursor,
                "counts": part.counts + add,
                "first_error": part.first_error or first_error,
                "expected": part.expected if expected is None else expected,
                "updated_at": now,
                "status": status or part.status,
                "finished_at": now if status in JOB_FINISHED else part.finished_at,
            }
            new = attrs.evolve(part, **changed)
            return self._update_part(db, new, where_cursor=True, old=expected_cursor)

    def delete_jobs(self, before: datetime, *, dry_run: bool = False) -> int:
        """Delete jobs none of whose parts was updated since ``before``."""
        with self._transaction() as db:
            ids = [
                row[0]
                for row in db.execute(
                    "SELECT job_id FROM job_parts GROUP BY job_id HAVING max(updated_at) < ?",
                    (_us(before),),
                )
            ]
            if not dry_run:
                db.executemany("DELETE FROM job_parts WHERE job_id = ?", [(i,) for i in ids])
        return len(ids)

    def presence(self, channel_name: str) -> Presence:
        """Distinct signed-in users and the number of live connections in a channel."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT m.user_id FROM subscriptions m JOIN sessions s "
                "ON s.connection_id = m.connection_id "
                "WHERE m.channel_name = ? AND s.connected = 1",
                (channel_name,),
            ).fetchall()
        users = frozenset(row[0] for row in rows if row[0] is not None)
        return Presence(channel_name=channel_name, user_ids=users, connection_count=len(rows))

    def user_sessions(
        self, user_id: str, *, channel: str | None = None, limit: int = 100
    ) -> list[Session]:
        """The user's connected sessions (in ``channel``), oldest first."""
        sql = "SELECT s.* FROM sessions s WHERE s.user_id = ? AND s.connected = 1"
        params: list[Any] = [user_id]
        if channel is not None:
            sql += (
                " AND EXISTS (SELECT 1 FROM subscriptions m "
                "WHERE m.connection_id = s.connection_id AND m.channel_name = ?)"
            )
            params.append(channel)
        sql += " ORDER BY s.connected_at, s.connection_id LIMIT ?"
        with self._transaction() as db:
            return [_session(row) for row in db.execute(sql, [*params, limit])]

    # --- channel history -------------------------------------------------------------

    def append_history(
        self,
        channel: str,
        payload: bytes,
        now: datetime,
        *,
        size: int | None = None,
        ttl_seconds: int | None = None,
    ) -> tuple[int, str]:
        """Next offset (one upsert) and the message, in one transaction; trims exactly."""
        with self._transaction() as db:
            offset, epoch = db.execute(
                "INSERT INTO channel_history VALUES (?, ?, 1) ON CONFLICT (channel) "
                "DO UPDATE SET last_offset = last_offset + 1 RETURNING last_offset, epoch",
                (channel, secrets.token_urlsafe(6)),
            ).fetchone()
            expires = None if ttl_seconds is None else _us(now) + ttl_seconds * 1_000_000
            db.execute(
                "INSERT INTO history_messages VALUES (?, ?, ?, ?, ?, ?)",
                (channel, offset, epoch, payload, _us(now), expires),
            )
            if size is not None:
                db.execute(
                    'DELETE FROM history_messages WHERE channel = ? AND "offset" <= ?',
                    (channel, offset - size),
                )
        return int(offset), str(epoch)

    def read_history(
        self, channel: str, now: datetime, *, since: int | None = None, limit: int = 100
    ) -> HistoryPage:
        """The position and the unexpired messages after ``since`` (or the newest)."""
        live = 'channel = ? AND (expires_at IS NULL OR expires_at > ?) AND "offset" > ?'
        with self._transaction() as db:
            position = db.execute(
                "SELECT epoch, last_offset FROM channel_history WHERE channel = ?", (channel,)
            ).fetchone()
            if position is None:
                return HistoryPage(channel=channel, epoch="", offset=0)
            if since is None:
                rows = db.execute(
                    f'SELECT * FROM history_messages WHERE {live} ORDER BY "offset" DESC LIMIT ?',  # noqa: S608
                    (channel, _us(now), -1, limit),
                ).fetchall()[::-1]
            else:
                rows = db.execute(
                    f'SELECT * FROM history_messages WHERE {live} ORDER BY "offset" LIMIT ?',  # noqa: S608
                    (channel, _us(now), since, limit),
                ).fetchall()
        return HistoryPage(
            channel=channel,
            epoch=position["epoch"],
            offset=position["last_offset"],
            messages=tuple(
                HistoryMessage(
                    channel=channel,
                    offset=row["offset"],
                    epoch=row["epoch"],
                    payload=bytes(row["payload"]),
                    created_at=EPOCH + timedelta(microseconds=row["created_at"]),
                )
                for row in rows
            ),
        )

    def reset_history(self, channel: str) -> None:
        """Forget the channel's history: the next append starts a new epoch."""
        with self._transaction() as db:
            db.execute("DELETE FROM history_messages WHERE channel = ?", (channel,))
            db.execute("DELETE FROM channel_history WHERE channel = ?", (channel,))

    # --- tokens --------------------------------------------------------------------

    def spend_token(self, token: Token) -> bool:
        """Record a spent token; ``False`` if it was recorded before (one statement)."""
        with self._transaction() as db:
            return _spend(db, token)

    # --- rate-limit counters ---------------------------------------------------------

    def incr_counter(self, key: str, window_start: datetime, expires_at: datetime) -> int:
        """One atomic upsert."""
        with self._transaction() as db:
            return _incr(db, key, window_start, expires_at)

    # --- housekeeping --------------------------------------------------------------

    def cleanup(
        self,
        now: datetime,
        *,
        session_max_age_seconds: int = 7200,
        keep_disconnected_seconds: int = 86400,
        dry_run: bool = False,
    ) -> CleanupReport:
        """Expire tokens and counters, close sessions past API Gateway's 2-hour limit and
        forget long-disconnected ones; with ``dry_run``, only count."""
        t_now = _us(now)
        stale_before = _us(now - timedelta(seconds=session_max_age_seconds))
        forget_before = _us(now - timedelta(seconds=keep_disconnected_seconds))
        steps = [
            ("tokens", "expires_at <= ?", (t_now,)),
            ("sessions", "connected = 1 AND connected_at < ?", (stale_before,)),
            ("sessions", "connected = 0 AND disconnected_at < ?", (forget_before,)),
            ("counters", "expires_at <= ?", (t_now,)),
            ("history_messages", "expires_at <= ?", (t_now,)),
        ]
        counts = []
        with self._transaction() as db:
            for table, condition, params in steps:
                counts.append(
                    db.execute(
                        f"SELECT COUNT(*) FROM {table} WHERE {condition}",  # noqa: S608
                        params,
                    ).fetchone()[0]
                )
            if not dry_run:
                db.execute("DELETE FROM tokens WHERE expires_at <= ?", (t_now,))
                stale = [
                    row[0]
                    for row in db.execute(
                        "SELECT connection_id FROM sessions "
                        "WHERE connected = 1 AND connected_at < ?",
                        (stale_before,),
                    )
                ]
                db.execute(
                    "UPDATE sessions SET connected = 0, disconnected_at = ? "
                    "WHERE connected = 1 AND connected_at < ?",
                    (t_now, stale_before),
                )
                db.executemany(
                    "DELETE FROM subscriptions WHERE connection_id = ?", [(c,) for c in stale]
                )
                db.execute(
                    "DELETE FROM sessions WHERE connected = 0 AND disconnected_at < ?",
                    (forget_before,),
                )
                db.execute("DELETE FROM counters WHERE expires_at <= ?", (t_now,))
                db.execute("DELETE FROM history_messages WHERE expires_at <= ?", (t_now,))
        return CleanupReport(
            expired_tokens=counts[0],
            stale_sessions=counts[1],
            old_disconnected=counts[2],
            counters=counts[3],
            history_messages=counts[4],
        )
