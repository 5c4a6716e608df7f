"""A complete custom storage backend on the standard library's :mod:`sqlite3`.

It exists to show how to write one: every method of :class:`apigw_ws_core.storage.Storage`,
in plain SQL, and it passes the contract suite (``tests/docs/test_sqlite_storage_example.py``).
Use the bundled Django ORM or SQLAlchemy backends for real applications.

Design choices worth copying into any backend:

* each call is its own transaction (``BEGIN IMMEDIATE`` takes the write lock up front, so two
  writers never deadlock halfway);
* single-use tokens are *deleted* as they are consumed, in one ``DELETE ... RETURNING``
  statement, so exactly one caller can get a token;
* counters are one upsert (``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``);
* connection ids are streamed with keyset pagination, never loaded all at once;
* a channel's history position is one upsert ``... RETURNING`` in the same transaction as
  the message insert, so offsets are handed out and committed in order;
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

from apigw_ws_core.storage import (
    CleanupReport,
    GatewayRecord,
    HistoryMessage,
    HistoryPage,
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
CREATE TABLE IF NOT EXISTS gateways (name TEXT PRIMARY KEY, record TEXT NOT NULL);
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

    def mark_disconnected(self, connection_ids: Iterable[str], at: datetime) -> int:
        """Bulk-mark sessions gone (500 ids per statement) and drop their subscriptions."""
        ids = list(dict.fromkeys(connection_ids))
        changed = 0
        with self._transaction() as db:
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

    def iter_connection_ids(
        self,
        *,
        channel: str | None = None,
        user_id: str | None = None,
        attributes: Mapping[str, str] | None = None,
        batch_size: int = 500,
    ) -> Iterator[list[str]]:
        """Connected ids in batches, by keyset pagination on the primary key."""
        where = ["s.connected = 1", "s.connection_id > ?"]
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
        sql = (
            f"SELECT s.connection_id FROM sessions s WHERE {' AND '.join(where)} "  # noqa: S608
            "ORDER BY s.connection_id LIMIT ?"
        )
        after = ""
        while True:
            with self._transaction() as db:
                batch = [row[0] for row in db.execute(sql, [after, *params, batch_size])]
            if not batch:
                return
            yield batch
            if len(batch) < batch_size:
                return
            after = batch[-1]

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

    def store_token(self, token: Token) -> None:
        """Store a token's hash; a duplicate hash is a ``ValueError``."""
        try:
            with self._transaction() as db:
                db.execute(
                    "INSERT INTO tokens VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        token.token_hash,
                        token.user_id,
                        _us(token.created_at),
                        _us(token.expires_at),
                        token.channel,
                        token.origin,
                    ),
                )
        except sqlite3.IntegrityError as exc:
            raise ValueError("token hash already stored") from exc

    def consume_token(self, token_hash: str, now: datetime) -> Token | None:
        """Delete and return the token in one statement: only one caller can win."""
        with self._transaction() as db:
            row = db.execute(
                "DELETE FROM tokens WHERE token_hash = ? RETURNING *", (token_hash,)
            ).fetchone()
        if row is None or row["expires_at"] <= _us(now):
            return None
        return Token(
            token_hash=row["token_hash"],
            user_id=row["user_id"],
            created_at=EPOCH + timedelta(microseconds=row["created_at"]),
            expires_at=EPOCH + timedelta(microseconds=row["expires_at"]),
            channel=row["channel"],
            origin=row["origin"],
        )

    # --- rate-limit counters ---------------------------------------------------------

    def incr_counter(self, key: str, window_start: datetime, expires_at: datetime) -> int:
        """One atomic upsert."""
        with self._transaction() as db:
            row = db.execute(
                "INSERT INTO counters VALUES (?, ?, 1, ?) "
                "ON CONFLICT (key, window_start) DO UPDATE SET value = value + 1 "
                "RETURNING value",
                (key, _us(window_start), _us(expires_at)),
            ).fetchone()
        return int(row[0])

    # --- gateway records -----------------------------------------------------------

    def get_gateway(self, name: str) -> GatewayRecord | None:
        """The named gateway record, or ``None``."""
        with self._transaction() as db:
            row = db.execute("SELECT record FROM gateways WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        data = json.loads(row[0])
        updated = data.pop("updated_at")
        return GatewayRecord(
            **data, updated_at=None if updated is None else datetime.fromisoformat(updated)
        )

    def save_gateway(self, record: GatewayRecord) -> None:
        """Insert or replace the record (stored as JSON)."""
        data = {
            "name": record.name,
            "api_id": record.api_id,
            "region": record.region,
            "stage": record.stage,
            "api_endpoint": record.api_endpoint,
            "management_endpoint": record.management_endpoint,
            "custom_domain": record.custom_domain,
            "resources": dict(record.resources),
            "spec_hash": record.spec_hash,
            "status": record.status,
            "updated_at": None if record.updated_at is None else record.updated_at.isoformat(),
        }
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO gateways VALUES (?, ?)", (record.name, json.dumps(data))
            )

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
