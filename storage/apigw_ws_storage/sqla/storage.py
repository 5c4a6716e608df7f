""":class:`SqlaStorage`: the :class:`~apigw_ws_core.storage.Storage` contract on SQLAlchemy 2.x.

Each storage call is its own short unit of work: a new :class:`~sqlalchemy.orm.Session`
from your factory, Core statements on its connection, one commit. Nothing is shared with
your request's session, so a storage call never commits (or rolls back) your own pending
changes. No Flask import: it works the same in a Flask app, a plain WSGI app or a script.

That needs a database connection of the storage's own: an engine whose pool hands the same
connection to every session (``StaticPool`` or ``SingletonThreadPool``, i.e. an in-memory
SQLite database such as Flask-SQLAlchemy's ``sqlite://``) is refused with
:class:`~apigw_ws_core.errors.ConfigurationError`, because a storage commit there would
commit the app's pending changes and closing its session would roll them back.

Round trips per pipeline step (the pipeline's storage calls, one statement each unless
noted): message = ``get_session`` (1; the message rate limit counts in process by default);
``$connect`` with a token = ONE transaction: connect-rate and token-rate upserts + the
spent-token insert (``ON CONFLICT DO NOTHING``; MariaDB ``INSERT IGNORE``) + session insert
+ one multi-row subscription insert, one commit; the token endpoint = no storage call
(tokens are signed); ``$disconnect`` = one ``UPDATE`` + one ``DELETE`` (2).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Select,
    Table,
    delete,
    false,
    func,
    insert,
    literal,
    select,
    true,
    update,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import scoped_session, sessionmaker
from sqlalchemy.pool import SingletonThreadPool, StaticPool

from apigw_ws_core.errors import ConfigurationError, ConnectionExists
from apigw_ws_core.gateways import GatewayRecord
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
from apigw_ws_storage.sqla.models import DEFAULT_MODELS, Models

__all__ = ["SessionSource", "SqlaStorage"]

#: What :class:`SqlaStorage` accepts: a ``sessionmaker``, a ``scoped_session`` (e.g.
#: Flask-SQLAlchemy's ``db.session``), an ``Engine``, or any callable returning a Session.
SessionSource = (
    sessionmaker[OrmSession] | scoped_session[OrmSession] | Engine | Callable[[], OrmSession]
)

_MYSQL = ("mysql", "mariadb")


def _factory_from(source: SessionSource) -> Callable[[], OrmSession]:
    if isinstance(source, scoped_session):
        # A fresh session from the same factory: never the thread's request session.
        factory: Callable[[], OrmSession] = source.session_factory
        return factory
    if isinstance(source, Engine):
        return sessionmaker(bind=source)
    if callable(source):
        return source
    raise TypeError(
        "SqlaStorage needs a sessionmaker, a scoped_session, an Engine or a callable "
        f"returning a Session, not {type(source).__name__}"
    )


#: Pools that give every checkout the same DB-API connection (in-memory SQLite).
_SHARED_POOLS = (StaticPool, SingletonThreadPool)


def _check_own_connection(bind: Engine | Connection) -> None:
    """Refuse an engine whose pool shares one connection between all sessions."""
    if isinstance(bind, Engine) and isinstance(bind.pool, _SHARED_POOLS):
        raise ConfigurationError(
            f"SqlaStorage needs connections of its own, but {bind.url!r} uses "
            f"{type(bind.pool).__name__}, which shares one connection with every session "
            "(an in-memory SQLite database): a storage commit would commit your session's "
            "pending changes. Use a database file (sqlite:///path/to/db.sqlite3) or a server."
        )


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class SqlaStorage(Storage):
    """:class:`~apigw_ws_core.storage.Storage` on SQLite, PostgreSQL and MariaDB/MySQL.

    :param session_source: a ``sessionmaker``, ``scoped_session`` (Flask-SQLAlchemy's
        ``db.session`` works: a new session is made from its factory for every call, inside
        the current app context), an ``Engine``, or a callable returning a Session. Its
        engine must give the storage connections of its own: in-memory SQLite is refused
        (``ConfigurationError`` on first use; use a database file).
    :param models: the tables to use (:func:`~apigw_ws_storage.sqla.make_models`); default
        :data:`~apigw_ws_storage.sqla.DEFAULT_MODELS` (prefix ``apigw_ws_``).
    :param batch_size: ids per bulk ``UPDATE``/``DELETE`` in :meth:`mark_disconnected`.
    """

    def __init__(
        self,
        session_source: SessionSource,
        *,
        models: Models | None = None,
        batch_size: int = 500,
    ) -> None:
        self.models = models or DEFAULT_MODELS
        self._factory = _factory_from(session_source)
        self.batch_size = batch_size
        self._sessions = self.models.session_table
        self._subs = self.models.subscription_table
        self._tokens = self.models.token_table
        self._counters = self.models.counter_table
        self._gateways = self.models.gateway_table
        self._history = self.models.history_table
        self._messages = self.models.history_message_table
        self._jobs = self.models.job_table

    # --- plumbing ------------------------------------------------------------------

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """One unit of work: a new Session, its connection, commit on success.

        Raises :class:`~apigw_ws_core.errors.ConfigurationError` (before any connection is
        checked out) if the engine's pool would share its connection with other sessions.
        """
        with self._factory() as orm_session:
            bind = orm_session.get_bind(mapper=self.models.session)
            _check_own_connection(bind)
            conn = orm_session.connection(bind_arguments={"bind": bind})
            try:
                yield conn
            except BaseException:
                orm_session.rollback()
                raise
            orm_session.commit()

    def create_tables(self) -> None:
        """Create the seven tables if missing (for tests and demos; use Alembic in
        production)."""
        with self.begin() as conn:
            self.models.metadata.create_all(conn, tables=self.models.tables)

    def drop_tables(self) -> None:
        """Drop the seven tables if present."""
        with self.begin() as conn:
            self.models.metadata.drop_all(conn, tables=self.models.tables)

    def describe(self) -> dict[str, Any]:
        """Backend name and table prefix."""
        return {"backend": type(self).__name__, "prefix": self.models.prefix}

    def is_unavailable(self, error: BaseException) -> bool:
        """Connection refused or lost, server gone away, read timeout (the driver's
        ``OperationalError`` / ``InterfaceError``), pool exhausted or an invalidated
        connection: the database is unavailable (see :meth:`Storage.is_unavailable`)."""
        if isinstance(error, OperationalError | InterfaceError | DisconnectionError | PoolTimeout):
            return True
        if isinstance(error, DBAPIError) and error.connection_invalidated:
            return True
        return super().is_unavailable(error)

    # --- sessions ------------------------------------------------------------------

    def _subscription_rows(self, session: Session, channels: Sequence[str]) -> list[dict[str, Any]]:
        return [
            {
                "connection_id": session.connection_id,
                "channel_name": name,
                "user_id": session.user_id,
                "created_at": session.connected_at,
            }
            for name in dict.fromkeys([session.channel_name, *channels])
        ]

    def create_session(self, session: Session, channels: Sequence[str] = ()) -> None:
        """See :meth:`Storage.create_session`: one transaction (the session and one
        multi-row subscription insert); an existing id is replaced."""
        with self.begin() as conn:
            self._store_session(conn, session, channels, replace_live=True)

    def connect(self, plan: ConnectPlan) -> Admission:
        """See :meth:`Storage.connect`: every step on one connection, one commit."""
        with self.begin() as conn:
            admission, refusal = plan.run(
                incr=lambda hit: self._incr(conn, hit.key, hit.window_start, hit.expires_at),
                spend=lambda token: self._spend(conn, token),
                store=lambda a: self._store_session(
                    conn, a.session, a.channels, replace_live=False
                ),
            )
        if refusal is not None:
            raise refusal
        assert admission is not None
        return admission

    def _insert_session(self, conn: Connection, row: dict[str, Any]) -> bool:
        """INSERT the session row; ``False`` if the id exists. Never breaks the
        transaction: ``ON CONFLICT DO NOTHING`` on PostgreSQL and SQLite (no savepoint,
        which pysqlite mishandles), a savepoint elsewhere."""
        s = self._sessions
        name = conn.dialect.name
        if name in ("postgresql", "sqlite"):
            ins = (postgresql if name == "postgresql" else sqlite).insert(s).values(row)
            result = conn.execute(
                ins.on_conflict_do_nothing(index_elements=[s.c.connection_id]),
                execution_options={"preserve_rowcount": True},
            )
            return bool(result.rowcount)
        try:
            with conn.begin_nested():
                conn.execute(insert(s).values(row))
        except IntegrityError as exc:
            code = getattr(exc.orig, "args", (None,))[0]
            if name in _MYSQL and code == 1062:  # ER_DUP_ENTRY: the id exists
                return False
            if name in _MYSQL:
                raise
            exists = conn.execute(
                select(s.c.connection_id).where(s.c.connection_id == row["connection_id"])
            ).first()
            if exists is None:
                raise
            return False
        return True

    def _store_session(
        self, conn: Connection, session: Session, channels: Sequence[str], *, replace_live: bool
    ) -> None:
        """Insert the session and its subscriptions on ``conn`` (in its transaction). An
        existing id is replaced if disconnected (or ``replace_live``), else
        ``ConnectionExists``."""
        s, sub = self._sessions, self._subs
        row = _session_row(session)
        cid = session.connection_id
        if not self._insert_session(conn, row):
            query = select(s.c.connected).where(s.c.connection_id == cid)
            if conn.dialect.name != "sqlite":
                query = query.with_for_update()
            connected = conn.execute(query).scalar()
            if connected and not replace_live:
                raise ConnectionExists()
            conn.execute(delete(sub).where(sub.c.connection_id == cid))
            changes = {k: v for k, v in row.items() if k != "connection_id"}
            conn.execute(update(s).where(s.c.connection_id == cid).values(changes))
        if session.connected:
            conn.execute(insert(sub).values(self._subscription_rows(session, channels)))

    def get_session(self, connection_id: str) -> Session | None:
        """See :meth:`Storage.get_session` (one ``SELECT`` by primary key)."""
        with self.begin() as conn:
            row = (
                conn.execute(
                    select(self._sessions).where(self._sessions.c.connection_id == connection_id)
                )
                .mappings()
                .first()
            )
        return None if row is None else _to_session(row)

    def mark_disconnected(
        self,
        connection_ids: Iterable[str],
        at: datetime,
        *,
        connected_before: datetime | None = None,
    ) -> int:
        """See :meth:`Storage.mark_disconnected`: per batch one ``UPDATE`` and one
        ``DELETE`` of subscriptions (with ``connected_before``, a ``SELECT`` of the old
        enough ids first)."""
        ids = list(dict.fromkeys(connection_ids))
        changed = 0
        s, sub = self._sessions, self._subs
        if connected_before is not None and ids:
            old: list[str] = []
            for chunk in _chunks(ids, self.batch_size):
                with self.begin() as conn:
                    old += conn.execute(
                        select(s.c.connection_id).where(
                            s.c.connection_id.in_(chunk),
                            s.c.connected == true(),
                            s.c.connected_at < connected_before,
                        )
                    ).scalars()
            ids = old
        for chunk in _chunks(ids, self.batch_size):
            with self.begin() as conn:
                result = conn.execute(
                    update(s)
                    .where(s.c.connection_id.in_(chunk), s.c.connected == true())
                    .values(connected=False, disconnected_at=at)
                )
                changed += result.rowcount
                conn.execute(delete(sub).where(sub.c.connection_id.in_(chunk)))
        return changed

    # --- channels ------------------------------------------------------------------

    def subscribe(self, connection_id: str, channel_name: str) -> bool:
        """See :meth:`Storage.subscribe`: one ``INSERT ... SELECT`` that ignores duplicates."""
        s, sub = self._sessions, self._subs
        source = select(
            s.c.connection_id,
            literal(channel_name, sub.c.channel_name.type),
            s.c.user_id,
            literal(datetime.now(UTC), sub.c.created_at.type),
        ).where(s.c.connection_id == connection_id, s.c.connected == true())
        cols = ["connection_id", "channel_name", "user_id", "created_at"]
        with self.begin() as conn:
            name = conn.dialect.name
            if name == "postgresql":
                stmt: Any = (
                    postgresql.insert(sub).from_select(cols, source).on_conflict_do_nothing()
                )
            elif name == "sqlite":
                stmt = sqlite.insert(sub).from_select(cols, source).on_conflict_do_nothing()
            elif name in _MYSQL:
                stmt = insert(sub).from_select(cols, source).prefix_with("IGNORE")
            else:
                exists = conn.execute(
                    select(sub.c.connection_id).where(
                        sub.c.connection_id == connection_id, sub.c.channel_name == channel_name
                    )
                ).first()
                if exists is not None:
                    return False
                stmt = insert(sub).from_select(cols, source)
            # INSERT rowcounts are only kept on request (SQLAlchemy >= 2.0.28).
            return bool(conn.execute(stmt, execution_options={"preserve_rowcount": True}).rowcount)

    def unsubscribe(self, connection_id: str, channel_name: str) -> bool:
        """See :meth:`Storage.unsubscribe`."""
        sub = self._subs
        with self.begin() as conn:
            result = conn.execute(
                delete(sub).where(
                    sub.c.connection_id == connection_id, sub.c.channel_name == channel_name
                )
            )
        return bool(result.rowcount)

    def channels_of(self, connection_id: str) -> list[str]:
        """See :meth:`Storage.channels_of`."""
        sub = self._subs
        with self.begin() as conn:
            names = conn.execute(
                select(sub.c.channel_name).where(sub.c.connection_id == connection_id)
            ).scalars()
            return sorted(names)

    def _target_query(
        self, channel: str | None, user_id: str | None, attributes: Mapping[str, str]
    ) -> Select[Any]:
        s, sub = self._sessions, self._subs
        if channel is not None:
            query = (
                select(sub.c.connection_id)
                .join(s, s.c.connection_id == sub.c.connection_id)
                .where(sub.c.channel_name == channel, s.c.connected == true())
            )
        else:
            query = select(s.c.connection_id).where(s.c.connected == true())
        if user_id is not None:
            query = query.where(s.c.user_id == user_id)
        for name, value in attributes.items():
            query = query.where(s.c.attributes[name].as_string() == value)
        return query

    def iter_connection_ids(
        self,
        *,
        channel: str | None = None,
        user_id: str | None = None,
        attributes: Mapping[str, str] | None = None,
        batch_size: int = 500,
    ) -> Iterator[list[str]]:
        """See :meth:`Storage.iter_connection_ids`: keyset pagination on the connection id,
        one short transaction per batch (nothing is held open between batches); an
        attribute filter is a JSON path comparison per attribute."""
        query = self._target_query(channel, user_id, attributes or {})
        yield from self._keyset_pages(query, self._target_key(channel), batch_size)

    def _keyset_pages(self, query: Select[Any], key: Any, batch_size: int) -> Iterator[list[str]]:
        """Stream the ids ``query`` selects in batches of ``batch_size``: keyset pagination on
        the unique, indexed ``key`` (never ``OFFSET``), one short transaction per batch."""
        last: str | None = None
        while True:
            page = query if last is None else query.where(key > last)
            with self.begin() as conn:
                ids = list(conn.execute(page.order_by(key).limit(batch_size)).scalars())
            if not ids:
                return
            yield ids
            if len(ids) < batch_size:
                return
            last = ids[-1]

    def iter_connected_before(
        self,
        cutoff: datetime,
        *,
        batch_size: int = 500,
        after: str | None = None,
        upto: str | None = None,
    ) -> Iterator[list[str]]:
        """See :meth:`Storage.iter_connected_before`: keyset pagination on the connection
        id, one short transaction per batch."""
        s = self._sessions
        query = select(s.c.connection_id).where(s.c.connected == true(), s.c.connected_at < cutoff)
        if after is not None:
            query = query.where(s.c.connection_id > after)
        if upto is not None:
            query = query.where(s.c.connection_id <= upto)
        yield from self._keyset_pages(query, s.c.connection_id, batch_size)

    def user_sessions(
        self, user_id: str, *, channel: str | None = None, limit: int = 100
    ) -> list[Session]:
        """See :meth:`Storage.user_sessions` (one ``SELECT`` on the user index)."""
        s, sub = self._sessions, self._subs
        query = select(s).where(s.c.user_id == user_id, s.c.connected == true())
        if channel is not None:
            query = query.where(
                s.c.connection_id.in_(
                    select(sub.c.connection_id).where(sub.c.channel_name == channel)
                )
            )
        query = query.order_by(s.c.connected_at, s.c.connection_id).limit(limit)
        with self.begin() as conn:
            return [_to_session(row) for row in conn.execute(query).mappings()]

    def _target_key(self, channel: str | None) -> Any:
        return self._subs.c.connection_id if channel is not None else self._sessions.c.connection_id

    def count_recipients(
        self,
        *,
        channel: str | None = None,
        user_id: str | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> int:
        """See :meth:`Storage.count_recipients` (one ``SELECT count(*)``)."""
        query = select(func.count()).select_from(
            self._target_query(channel, user_id, attributes or {}).subquery()
        )
        with self.begin() as conn:
            return int(conn.execute(query).scalar_one())

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
        """See :meth:`Storage.recipient_page` (the cursor is the connection id)."""
        key = self._target_key(channel)
        query = self._target_query(channel, user_id, attributes or {})
        if after is not None:
            query = query.where(key > after)
        if upto is not None:
            query = query.where(key <= upto)
        with self.begin() as conn:
            ids = list(conn.execute(query.order_by(key).limit(limit)).scalars())
        return ids, (ids[-1] if ids else None)

    def recipient_splits(
        self,
        *,
        channel: str | None = None,
        user_id: str | None = None,
        attributes: Mapping[str, str] | None = None,
        every: int = 50_000,
    ) -> list[str]:
        """See :meth:`Storage.recipient_splits`: one ``OFFSET`` query per cut, each
        starting after the previous cut (an index range scan of ``every`` rows)."""
        key = self._target_key(channel)
        base = self._target_query(channel, user_id, attributes or {}).order_by(key)
        cuts: list[str] = []
        with self.begin() as conn:
            while True:
                query = base if not cuts else base.where(key > cuts[-1])
                rows = list(conn.execute(query.offset(every - 1).limit(2)).scalars())
                if len(rows) < 2:
                    return cuts
                cuts.append(rows[0])

    # --- durable send jobs -----------------------------------------------------------

    @staticmethod
    def _job_row(part: JobPart) -> dict[str, Any]:
        return {
            "job_id": part.job_id,
            "part": part.index,
            "target": part.target,
            "lower": part.lower,
            "upper": part.upper,
            "cursor": part.cursor,
            "status": part.status,
            "expected": part.expected,
            **part.counts.as_dict(),
            "runs": part.runs,
            "first_error": part.first_error,
            "created_at": part.created_at,
            "updated_at": part.updated_at,
            "finished_at": part.finished_at,
        }

    @staticmethod
    def _job_part(row: Any) -> JobPart:
        return JobPart(
            job_id=row["job_id"],
            index=row["part"],
            target=dict(row["target"] or {}),
            lower=row["lower"],
            upper=row["upper"],
            cursor=row["cursor"],
            status=row["status"],
            expected=row["expected"],
            counts=JobCounts(**{k: row[k] for k in JobCounts().as_dict()}),
            runs=row["runs"],
            first_error=row["first_error"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            finished_at=row["finished_at"],
        )

    def create_job_parts(self, parts: Sequence[JobPart]) -> int:
        """See :meth:`Storage.create_job_parts` (parts that exist are skipped; a
        concurrent insert of the same part is tolerated)."""
        j = self._jobs
        if not parts:
            return 0
        for _ in range(3):
            try:
                with self.begin() as conn:
                    existing = set(
                        conn.execute(
                            select(j.c.job_id, j.c.part).where(
                                j.c.job_id.in_({p.job_id for p in parts})
                            )
                        ).tuples()
                    )
                    rows = [self._job_row(p) for p in parts if (p.job_id, p.index) not in existing]
                    if rows:
                        conn.execute(insert(j), rows)
                    return len(rows)
            except IntegrityError:
                continue  # another worker inserted some of them: look again
        raise RuntimeError("could not insert job parts")  # pragma: no cover

    def get_job_parts(self, job_id: str) -> list[JobPart]:
        """See :meth:`Storage.get_job_parts`."""
        j = self._jobs
        with self.begin() as conn:
            rows = conn.execute(select(j).where(j.c.job_id == job_id).order_by(j.c.part))
            return [self._job_part(r) for r in rows.mappings()]

    def start_job_part(self, job_id: str, index: int, now: datetime) -> JobPart | None:
        """See :meth:`Storage.start_job_part`: one ``UPDATE`` and one ``SELECT``."""
        j = self._jobs
        where = (j.c.job_id == job_id) & (j.c.part == index)
        with self.begin() as conn:
            conn.execute(
                update(j)
                .where(where, j.c.status.not_in(sorted(JOB_FINISHED)))
                .values(status=JOB_RUNNING, runs=j.c.runs + 1, updated_at=now)
            )
            row = conn.execute(select(j).where(where)).mappings().first()
        return None if row is None else self._job_part(row)

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
        """See :meth:`Storage.checkpoint_job_part`: one conditional ``UPDATE``."""
        j = self._jobs
        values: dict[str, Any] = {
            name: j.c[name] + amount for name, amount in add.as_dict().items() if amount
        }
        values.update(cursor=cursor, updated_at=now)
        if first_error is not None:
            values["first_error"] = func.coalesce(j.c.first_error, first_error[:500])
        if expected is not None:
            values["expected"] = expected
        if status is not None:
            values["status"] = status
            if status in JOB_FINISHED:
                values["finished_at"] = now
        same = j.c.cursor.is_(None) if expected_cursor is None else j.c.cursor == expected_cursor
        with self.begin() as conn:
            result = conn.execute(
                update(j)
                .where(j.c.job_id == job_id, j.c.part == index, j.c.status == JOB_RUNNING, same)
                .values(values)
            )
            return bool(result.rowcount == 1)

    def delete_jobs(self, before: datetime, *, dry_run: bool = False) -> int:
        """See :meth:`Storage.delete_jobs`."""
        j = self._jobs
        old = select(j.c.job_id).group_by(j.c.job_id).having(func.max(j.c.updated_at) < before)
        with self.begin() as conn:
            ids = list(conn.execute(old).scalars())
            if ids and not dry_run:
                for chunk in _chunks(ids, 500):
                    conn.execute(delete(j).where(j.c.job_id.in_(chunk)))
        return len(ids)

    def presence(self, channel_name: str) -> Presence:
        """See :meth:`Storage.presence`: one grouped ``SELECT``."""
        s, sub = self._sessions, self._subs
        query = (
            select(s.c.user_id, func.count())
            .select_from(sub.join(s, s.c.connection_id == sub.c.connection_id))
            .where(sub.c.channel_name == channel_name, s.c.connected == true())
            .group_by(s.c.user_id)
        )
        with self.begin() as conn:
            rows = conn.execute(query).all()
        return Presence(
            channel_name=channel_name,
            user_ids=frozenset(uid for uid, _ in rows if uid is not None),
            connection_count=sum(int(n) for _, n in rows),
        )

    # --- channel history -------------------------------------------------------------

    #: Size trimming runs on every this many offsets (bounded work per append).
    TRIM_EVERY = 16

    def append_history(
        self,
        channel: str,
        payload: bytes,
        now: datetime,
        *,
        size: int | None = None,
        ttl_seconds: int | None = None,
    ) -> tuple[int, str]:
        """See :meth:`Storage.append_history`. One transaction: an upsert of the channel's
        position ``... RETURNING last_offset, epoch`` (PostgreSQL, SQLite, MariaDB; it
        holds the position's row lock until commit, so appends commit in offset order),
        one ``INSERT`` of the message, and on every 16th offset one ``DELETE`` of the
        messages beyond ``size``."""
        h, msg = self._history, self._messages
        values = {
            "channel": channel,
            "epoch": secrets.token_urlsafe(6),
            "last_offset": 1,
            "updated_at": now,
        }
        bump = {"last_offset": h.c.last_offset + 1, "updated_at": now}
        with self.begin() as conn:
            name = conn.dialect.name
            if name in ("postgresql", "sqlite") and conn.dialect.insert_returning:
                ins = (postgresql if name == "postgresql" else sqlite).insert(h).values(values)
                row = conn.execute(
                    ins.on_conflict_do_update(index_elements=[h.c.channel], set_=bump).returning(
                        h.c.last_offset, h.c.epoch
                    )
                ).one()
            elif name in _MYSQL and conn.dialect.insert_returning:  # MariaDB >= 10.5
                row = conn.execute(
                    mysql.insert(h)
                    .values(values)
                    .on_duplicate_key_update(last_offset=h.c.last_offset + 1, updated_at=now)
                    .returning(h.c.last_offset, h.c.epoch)
                ).one()
            else:  # lock the row (or insert it), then bump it
                where = h.c.channel == channel
                found = conn.execute(select(h.c.channel).where(where).with_for_update()).first()
                if found is None:
                    conn.execute(insert(h).values(values))
                else:
                    conn.execute(update(h).where(where).values(bump))
                row = conn.execute(select(h.c.last_offset, h.c.epoch).where(where)).one()
            offset, epoch = int(row[0]), str(row[1])
            conn.execute(
                insert(msg).values(
                    channel=channel,
                    offset=offset,
                    epoch=epoch,
                    payload=payload,
                    created_at=now,
                    expires_at=None
                    if ttl_seconds is None
                    else now + timedelta(seconds=ttl_seconds),
                )
            )
            if size is not None and offset % self.TRIM_EVERY == 0 and offset > size:
                conn.execute(
                    delete(msg).where(msg.c.channel == channel, msg.c.offset <= offset - size)
                )
        return offset, epoch

    def read_history(
        self, channel: str, now: datetime, *, since: int | None = None, limit: int = 100
    ) -> HistoryPage:
        """See :meth:`Storage.read_history`: two ``SELECT`` statements (the position, and
        a primary-key range of messages)."""
        h, msg = self._history, self._messages
        live = (msg.c.channel == channel) & (
            (msg.c.expires_at.is_(None)) | (msg.c.expires_at > now)
        )
        with self.begin() as conn:
            position = conn.execute(
                select(h.c.epoch, h.c.last_offset).where(h.c.channel == channel)
            ).first()
            if position is None:
                return HistoryPage(channel=channel, epoch="", offset=0)
            if since is None:
                query = select(msg).where(live).order_by(msg.c.offset.desc()).limit(limit)
                rows = list(conn.execute(query).mappings())[::-1]
            else:
                query = (
                    select(msg)
                    .where(live, msg.c.offset > since)
                    .order_by(msg.c.offset)
                    .limit(limit)
                )
                rows = list(conn.execute(query).mappings())
        return HistoryPage(
            channel=channel,
            epoch=str(position[0]),
            offset=int(position[1]),
            messages=tuple(
                HistoryMessage(
                    channel=channel,
                    offset=int(r["offset"]),
                    epoch=r["epoch"],
                    payload=bytes(r["payload"]),
                    created_at=r["created_at"],
                )
                for r in rows
            ),
        )

    def reset_history(self, channel: str) -> None:
        """See :meth:`Storage.reset_history` (two ``DELETE`` statements, one transaction)."""
        with self.begin() as conn:
            conn.execute(delete(self._messages).where(self._messages.c.channel == channel))
            conn.execute(delete(self._history).where(self._history.c.channel == channel))

    # --- tokens --------------------------------------------------------------------

    def spend_token(self, token: Token) -> bool:
        """See :meth:`Storage.spend_token`: one insert that ignores a duplicate hash."""
        with self.begin() as conn:
            return self._spend(conn, token)

    def _spend(self, conn: Connection, token: Token) -> bool:
        """INSERT the ledger row unless its hash is there; ``True`` if inserted. Never
        breaks the transaction: ``ON CONFLICT DO NOTHING`` on PostgreSQL and SQLite,
        ``INSERT IGNORE`` on MySQL/MariaDB, a savepoint elsewhere."""
        t = self._tokens
        row = {
            "token_hash": token.token_hash,
            "user_id": token.user_id,
            "created_at": token.created_at,
            "expires_at": token.expires_at,
            "channel": token.channel,
            "origin": token.origin,
        }
        name = conn.dialect.name
        if name in ("postgresql", "sqlite"):
            ins = (postgresql if name == "postgresql" else sqlite).insert(t).values(row)
            statement: Any = ins.on_conflict_do_nothing(index_elements=[t.c.token_hash])
        elif name in _MYSQL:
            statement = insert(t).values(row).prefix_with("IGNORE")
        else:
            try:
                with conn.begin_nested():
                    conn.execute(insert(t).values(row))
            except IntegrityError:
                if (
                    conn.execute(
                        select(t.c.token_hash).where(t.c.token_hash == token.token_hash)
                    ).first()
                    is None
                ):
                    raise
                return False
            return True
        result = conn.execute(statement, execution_options={"preserve_rowcount": True})
        return result.rowcount == 1

    # --- rate-limit counters ---------------------------------------------------------

    def incr_counter(self, key: str, window_start: datetime, expires_at: datetime) -> int:
        """See :meth:`Storage.incr_counter`: one upsert statement on SQLite, PostgreSQL
        and MySQL/MariaDB (``LAST_INSERT_ID(count + 1)`` returns the new value there)."""
        with self.begin() as conn:
            return self._incr(conn, key, window_start, expires_at)

    def _incr(
        self, conn: Connection, key: str, window_start: datetime, expires_at: datetime
    ) -> int:
        c = self._counters
        values = {"key": key, "window_start": window_start, "count": 1, "expires_at": expires_at}
        name = conn.dialect.name
        if name in ("postgresql", "sqlite") and conn.dialect.insert_returning:
            ins = (postgresql if name == "postgresql" else sqlite).insert(c).values(values)
            stmt = ins.on_conflict_do_update(
                index_elements=[c.c.key, c.c.window_start], set_={"count": c.c.count + 1}
            ).returning(c.c.count)
            return int(conn.execute(stmt).scalar_one())
        if name in _MYSQL:
            result = conn.execute(
                mysql.insert(c)
                .values(values)
                .on_duplicate_key_update(count=func.last_insert_id(c.c.count + 1)),
                execution_options={"preserve_rowcount": True},
            )
            # affected rows: 1 = inserted (count is 1), 2 = updated (LAST_INSERT_ID).
            return 1 if result.rowcount == 1 else int(result.lastrowid)
        return self._incr_generic(conn, c, values)

    @staticmethod
    def _incr_generic(conn: Connection, c: Table, values: dict[str, Any]) -> int:
        where = (c.c.key == values["key"]) & (c.c.window_start == values["window_start"])
        if conn.execute(update(c).where(where).values(count=c.c.count + 1)).rowcount == 0:
            conn.execute(insert(c).values(values))
        return int(conn.execute(select(c.c.count).where(where)).scalar_one())

    # --- gateway records -----------------------------------------------------------

    def get_gateway(self, name: str) -> GatewayRecord | None:
        """See :meth:`Storage.get_gateway`."""
        g = self._gateways
        with self.begin() as conn:
            row = conn.execute(select(g).where(g.c.name == name)).mappings().first()
        if row is None:
            return None
        return GatewayRecord(
            name=row["name"],
            api_id=row["api_id"],
            region=row["region"],
            stage=row["stage"],
            api_endpoint=row["api_endpoint"],
            management_endpoint=row["management_endpoint"],
            custom_domain=row["custom_domain"],
            resources=dict(row["resources"] or {}),
            spec_hash=row["spec_hash"],
            status=row["status"],
            updated_at=row["updated_at"],
        )

    def save_gateway(self, record: GatewayRecord) -> None:
        """See :meth:`Storage.save_gateway` (an upsert)."""
        g = self._gateways
        values = {
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
            "updated_at": record.updated_at,
        }
        changes = {k: v for k, v in values.items() if k != "name"}
        with self.begin() as conn:
            name = conn.dialect.name
            if name == "postgresql":
                conn.execute(
                    postgresql.insert(g)
                    .values(values)
                    .on_conflict_do_update(index_elements=[g.c.name], set_=changes)
                )
            elif name == "sqlite":
                conn.execute(
                    sqlite.insert(g)
                    .values(values)
                    .on_conflict_do_update(index_elements=[g.c.name], set_=changes)
                )
            elif name in _MYSQL:
                conn.execute(mysql.insert(g).values(values).on_duplicate_key_update(changes))
            elif conn.execute(update(g).where(g.c.name == record.name).values(changes)).rowcount:
                return
            else:
                conn.execute(insert(g).values(values))

    # --- housekeeping --------------------------------------------------------------

    def cleanup(
        self,
        now: datetime,
        *,
        session_max_age_seconds: int = 7200,
        keep_disconnected_seconds: int = 86400,
        dry_run: bool = False,
    ) -> CleanupReport:
        """See :meth:`Storage.cleanup`. Stale sessions are marked disconnected in batches
        through :meth:`mark_disconnected`."""
        s, sub, t, c = self._sessions, self._subs, self._tokens, self._counters
        msg = self._messages
        expired_messages = msg.c.expires_at <= now
        stale_cutoff = now - timedelta(seconds=session_max_age_seconds)
        old_cutoff = now - timedelta(seconds=keep_disconnected_seconds)
        expired_tokens = t.c.expires_at <= now
        expired_counters = c.c.expires_at <= now
        old = (s.c.connected == false()) & (s.c.disconnected_at <= old_cutoff)
        stale = (s.c.connected == true()) & (s.c.connected_at <= stale_cutoff)
        if dry_run:
            with self.begin() as conn:

                def count(table: Table, where: Any) -> int:
                    return int(
                        conn.execute(select(func.count()).select_from(table).where(where)).scalar()
                        or 0
                    )

                return CleanupReport(
                    expired_tokens=count(t, expired_tokens),
                    stale_sessions=count(s, stale),
                    old_disconnected=count(s, old),
                    counters=count(c, expired_counters),
                    history_messages=count(msg, expired_messages),
                )
        with self.begin() as conn:
            tokens = conn.execute(delete(t).where(expired_tokens)).rowcount
            counters = conn.execute(delete(c).where(expired_counters)).rowcount
            conn.execute(
                delete(sub).where(sub.c.connection_id.in_(select(s.c.connection_id).where(old)))
            )
            old_sessions = conn.execute(delete(s).where(old)).rowcount
            history_messages = conn.execute(delete(msg).where(expired_messages)).rowcount
        stale_sessions = 0
        while True:
            with self.begin() as conn:
                ids = list(
                    conn.execute(
                        select(s.c.connection_id).where(stale).limit(self.batch_size)
                    ).scalars()
                )
            changed = self.mark_disconnected(ids, now) if ids else 0
            if not changed:
                break
            stale_sessions += changed
        return CleanupReport(
            expired_tokens=tokens,
            stale_sessions=stale_sessions,
            old_disconnected=old_sessions,
            counters=counters,
            history_messages=history_messages,
        )


def _session_row(session: Session) -> dict[str, Any]:
    return {
        "connection_id": session.connection_id,
        "channel_name": session.channel_name,
        "user_id": session.user_id,
        "connected": session.connected,
        "source_ip": session.source_ip,
        "user_agent": session.user_agent,
        "stage": session.stage,
        "api_id": session.api_id,
        "connected_at": session.connected_at,
        "disconnected_at": session.disconnected_at,
        "attributes": dict(session.attributes) or None,
    }


def _to_session(row: Any) -> Session:
    return Session(
        connection_id=row["connection_id"],
        channel_name=row["channel_name"],
        user_id=row["user_id"],
        connected=bool(row["connected"]),
        source_ip=row["source_ip"] or "",
        user_agent=row["user_agent"] or "",
        stage=row["stage"] or "",
        api_id=row["api_id"] or "",
        connected_at=row["connected_at"],
        disconnected_at=row["disconnected_at"],
        attributes=dict(row["attributes"] or {}),
    )
