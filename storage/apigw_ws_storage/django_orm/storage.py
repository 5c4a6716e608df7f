"""``DjangoStorage``: the :class:`~apigw_ws_core.storage.Storage` contract on the Django ORM.

Each method is one SQL statement where the databases allow it, so the request path stays
cheap and needs no transaction (``BEGIN``/``COMMIT`` are round trips too):

=========================  =====================================================================
method                     statements
=========================  =====================================================================
``connect``                one transaction: the connect-rate and token-rate upserts, INSERT
                           of the spent token (``ON CONFLICT DO NOTHING``; MariaDB: ``INSERT
                           IGNORE``), INSERT session (``ON CONFLICT DO NOTHING``; MariaDB: in
                           a savepoint), INSERT subscription(s); one commit
``create_session``         the same session and subscription INSERTs in one transaction (an
                           existing id is replaced)
``get_session``            one SELECT by the unique connection id
``mark_disconnected``      per batch of 500 ids: one UPDATE, plus one DELETE of subscriptions
                           when something changed
``spend_token``            one INSERT that ignores a duplicate hash (its row count decides)
``incr_counter``           one upsert ``... RETURNING`` (PostgreSQL, SQLite, MariaDB); MySQL:
                           upsert + ``SELECT LAST_INSERT_ID()`` on the same connection
``subscribe``              one ``INSERT ... SELECT`` that ignores duplicates
``append_history``         one transaction: the position upsert ``... RETURNING`` (PostgreSQL,
                           SQLite, MariaDB; MySQL: ``SELECT ... FOR UPDATE`` + UPDATE/INSERT +
                           SELECT), one INSERT of the message, and on every 16th offset one
                           DELETE of the messages beyond the history size
``read_history``           two SELECTs (position; a range of the ``(channel, offset)`` index)
=========================  =====================================================================

Exactly-once token use holds under any concurrency because the spent-token INSERT both
tests and records the hash under its unique index: of several racing inserts only one adds
the row (the others wait on the index entry, then insert nothing).

User ids are strings in the core; here they are converted with the user model's primary
key field (``str(user.pk)`` on the way out). ``USE_TZ`` must be ``True``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import (
    DEFAULT_DB_ALIAS,
    IntegrityError,
    InterfaceError,
    OperationalError,
    connections,
    transaction,
)
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Count, F, Field, Max, Value
from django.db.models.functions import Coalesce
from django.utils.dateparse import parse_datetime

from apigw_ws_core.errors import ConnectionExists, InvalidToken
from apigw_ws_core.gateways import GatewayRecord
from apigw_ws_core.storage import (
    JOB_FINISHED,
    JOB_RUNNING,
    Admission,
    CleanupReport,
    ConnectPlan,
    CounterHit,
    HistoryMessage,
    HistoryPage,
    JobCounts,
    JobPart,
    Presence,
    Session,
    Storage,
    Token,
)
from apigw_ws_storage.django_orm import models as m

__all__ = ["DjangoStorage"]

T = TypeVar("T")

#: Ids per UPDATE/DELETE in bulk operations (well under every backend's parameter limit).
BULK_BATCH = 500


def _aware(value: Any) -> datetime:
    """A timezone-aware UTC datetime from what a raw cursor returned."""
    if isinstance(value, str):
        parsed = parse_datetime(value)
        if parsed is None:
            raise ValueError(f"not a datetime: {value!r}")
        value = parsed
    if not isinstance(value, datetime):
        raise TypeError(f"not a datetime: {value!r}")
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class DjangoStorage(Storage):
    """Sessions, subscriptions, tokens, counters and gateway records in Django models.

    :param using: the database alias (``DATABASES`` key) to use for every query.

    Thread-safe: it holds no connection itself; Django gives each thread its own.
    """

    def __init__(self, using: str = DEFAULT_DB_ALIAS):
        self.using = using

    # --- helpers -------------------------------------------------------------------

    @property
    def connection(self) -> BaseDatabaseWrapper:
        """The Django connection of the current thread for :attr:`using`."""
        return connections[self.using]

    def _guarded(self, fn: Callable[[], T]) -> T:
        """Run ``fn``; inside an outer transaction, in a savepoint, so that an expected
        ``IntegrityError`` does not break the caller's transaction."""
        if self.connection.in_atomic_block:
            with transaction.atomic(using=self.using):
                return fn()
        return fn()

    def _user_exists(self, user_id: str) -> bool:
        users = get_user_model()._default_manager.using(self.using)
        return bool(users.filter(pk=self._user_pk(user_id)).exists())

    @staticmethod
    def _user_pk(user_id: str | None) -> Any:
        """The user model primary key value for a core user id string."""
        if user_id is None:
            return None
        pk_field = get_user_model()._meta.pk
        assert pk_field is not None
        try:
            return pk_field.to_python(user_id)
        except ValidationError as exc:
            raise ValueError(f"{user_id!r} is not a valid user id") from exc

    def _q(self, name: str) -> str:
        return self.connection.ops.quote_name(name)

    def _dt(self, value: datetime) -> Any:
        """A datetime adapted for a raw SQL parameter on this backend."""
        return self.connection.ops.adapt_datetimefield_value(value)

    def _supports_returning(self) -> bool:
        """``DELETE/INSERT ... RETURNING``: PostgreSQL, SQLite >= 3.35, MariaDB >= 10.5."""
        return bool(self.connection.features.can_return_columns_from_insert)

    # --- sessions ------------------------------------------------------------------

    def _session_fields(self, session: Session) -> dict[str, Any]:
        return {
            "channel_name": session.channel_name,
            "user_id": self._user_pk(session.user_id),
            "connected": session.connected,
            "source_ip": session.source_ip,
            "user_agent": session.user_agent,
            "stage": session.stage,
            "api_id": session.api_id,
            "connected_at": session.connected_at,
            "disconnected_at": session.disconnected_at,
            "attributes": dict(session.attributes),
        }

    def create_session(self, session: Session, channels: Sequence[str] = ()) -> None:
        """See :meth:`Storage.create_session`: one transaction (an existing id is
        replaced, its subscriptions dropped)."""
        with transaction.atomic(using=self.using):
            self._store_session(session, channels, replace_live=True)

    def connect(self, plan: ConnectPlan) -> Admission:
        """See :meth:`Storage.connect`: every step in one ``transaction.atomic`` block
        (inside the caller's transaction, a savepoint), so one commit."""
        try:
            with transaction.atomic(using=self.using):
                admission, refusal = plan.run(
                    incr=self._incr_hit,
                    spend=self._spend,
                    store=lambda a: self._store_session(a.session, a.channels, replace_live=False),
                )
        except IntegrityError as exc:
            # the token's user was deleted since it was issued (a foreign key checked at
            # commit): the token is no longer any user's
            if plan.token is not None and not self._user_exists(plan.token.user_id):
                raise InvalidToken() from exc
            raise
        if refusal is not None:
            raise refusal
        assert admission is not None
        return admission

    def _store_session(
        self, session: Session, channels: Sequence[str], *, replace_live: bool
    ) -> None:
        """INSERT the session (in a savepoint: a duplicate id must not break the
        transaction) and its subscriptions. An existing row with this id is replaced if
        it is disconnected (or ``replace_live``), else ``ConnectionExists``. Must run in
        a transaction."""
        names = list(dict.fromkeys([session.channel_name, *channels]))
        fields = self._session_fields(session)
        sessions = m.WebSocketSession.objects.using(self.using)
        new_pk = self._insert_session(session.connection_id, fields)
        if new_pk is not None:
            pk = new_pk
        else:
            existing = (
                sessions.select_for_update()
                .filter(connection_id=session.connection_id)
                .values_list("pk", "connected")
                .first()
            )
            if existing is None:  # deleted meanwhile: a retry will insert it
                raise IntegrityError(f"session {session.connection_id!r} changed meanwhile")
            pk, connected = existing
            if connected and not replace_live:
                raise ConnectionExists() from None
            self._delete_subscriptions("id", [pk])
            sessions.filter(pk=pk).update(**fields)
        if session.connected:
            self._insert_subscriptions(pk, names, session.connected_at)

    def _insert_session(self, connection_id: str, fields: dict[str, Any]) -> int | None:
        """INSERT a session row; its primary key, or ``None`` if the id exists.

        PostgreSQL and SQLite: one ``INSERT ... ON CONFLICT (connection_id) DO NOTHING
        RETURNING id``, which never breaks the surrounding transaction. Elsewhere an ORM
        create in a savepoint, a duplicate id giving ``None``."""
        conn = self.connection
        model = m.WebSocketSession
        if conn.vendor not in ("postgresql", "sqlite") or not self._supports_returning():
            try:
                with transaction.atomic(using=self.using):
                    row = model.objects.using(self.using).create(
                        connection_id=connection_id, **fields
                    )
            except IntegrityError:
                if not model.objects.using(self.using).filter(connection_id=connection_id).exists():
                    raise
                return None
            return int(row.pk)
        q = self._q
        tail = f" ON CONFLICT ({q('connection_id')}) DO NOTHING RETURNING {q('id')}"
        rows = self._raw_insert(model, {"connection_id": connection_id, **fields}, tail)
        return int(rows[0][0]) if rows else None

    def _raw_insert(self, model: type[Any], values: dict[str, Any], tail: str = "") -> list[Any]:
        """One ``INSERT`` of ``values`` (field names, values converted by each field as the
        ORM would) plus ``tail``, without building a model instance; the rows it returned
        (``tail`` with ``RETURNING``)."""
        sql, params = self._insert_sql(model, values, tail)
        with self.connection.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall()) if tail else []

    def _insert_count(
        self, model: type[Any], values: dict[str, Any], tail: str = "", *, ignore: bool = False
    ) -> int:
        """Like :meth:`_raw_insert` (``INSERT IGNORE`` with ``ignore``), returning the
        number of rows inserted."""
        sql, params = self._insert_sql(model, values, tail, ignore=ignore)
        with self.connection.cursor() as cursor:
            cursor.execute(sql, params)
            return int(cursor.rowcount)

    def _insert_sql(
        self, model: type[Any], values: dict[str, Any], tail: str, *, ignore: bool = False
    ) -> tuple[str, list[Any]]:
        conn = self.connection
        q = self._q
        columns, params = [], []
        for name, value in values.items():
            field = model._meta.get_field(name)
            assert isinstance(field, Field)
            columns.append(q(field.column))
            params.append(field.get_db_prep_save(value, conn))
        verb = "INSERT IGNORE" if ignore else "INSERT"
        sql = (
            f"{verb} INTO {q(model._meta.db_table)} ({', '.join(columns)}) "
            f"VALUES ({', '.join(['%s'] * len(params))}){tail}"
        )
        return sql, params

    def _insert_subscriptions(self, session_pk: int, names: Sequence[str], at: datetime) -> None:
        subs = m.WebSocketSubscription.objects.using(self.using)
        if len(names) == 1:
            subs.create(session_id=session_pk, channel_name=names[0], created_at=at)
        else:
            subs.bulk_create(
                [
                    m.WebSocketSubscription(session_id=session_pk, channel_name=n, created_at=at)
                    for n in names
                ]
            )

    _SESSION_COLUMNS = (
        "connection_id",
        "channel_name",
        "user_id",
        "connected",
        "source_ip",
        "user_agent",
        "stage",
        "api_id",
        "connected_at",
        "disconnected_at",
        "attributes",
    )

    @staticmethod
    def _session_record(row: Sequence[Any]) -> Session:
        cid, channel, user, connected, ip, ua, stage, api, at, gone, attributes = row
        return Session(
            connection_id=cid,
            channel_name=channel,
            user_id=None if user is None else str(user),
            connected=bool(connected),
            source_ip=ip,
            user_agent=ua,
            stage=stage,
            api_id=api,
            connected_at=at,
            disconnected_at=gone,
            attributes={str(k): str(v) for k, v in (attributes or {}).items()},
        )

    def get_session(self, connection_id: str) -> Session | None:
        """See :meth:`Storage.get_session` (one SELECT on the unique index)."""
        rows = list(
            m.WebSocketSession.objects.using(self.using)
            .filter(connection_id=connection_id)
            .values_list(*self._SESSION_COLUMNS)[:1]
        )
        return self._session_record(rows[0]) if rows else None

    def mark_disconnected(
        self,
        connection_ids: Iterable[str],
        at: datetime,
        *,
        connected_before: datetime | None = None,
    ) -> int:
        """See :meth:`Storage.mark_disconnected`: per batch one UPDATE, and one DELETE of
        the batch's subscriptions when the UPDATE changed a row (a session that was already
        disconnected has none). With ``connected_before``, a SELECT of the old enough ids
        first."""
        ids = list(dict.fromkeys(connection_ids))
        changed = 0
        sessions = m.WebSocketSession.objects.using(self.using)
        if connected_before is not None:
            ids = [
                cid
                for batch in _chunks(ids, BULK_BATCH)
                for cid in sessions.filter(
                    connection_id__in=batch, connected=True, connected_at__lt=connected_before
                ).values_list("connection_id", flat=True)
            ]
        for batch in _chunks(ids, BULK_BATCH):
            count = sessions.filter(connection_id__in=batch, connected=True).update(
                connected=False, disconnected_at=at
            )
            if count:
                self._delete_subscriptions("connection_id", batch)
            changed += count
        return changed

    def _delete_subscriptions(
        self, column: str, values: Sequence[Any], channel: str | None = None
    ) -> int:
        """One DELETE of the subscriptions (to ``channel``, or all) of the sessions whose
        ``column`` is in ``values`` (a subquery: sessions are never loaded). Plain SQL, as
        in :meth:`subscribe`: ``QuerySet.delete()`` would add a transaction (two round
        trips) to every ``$disconnect``."""
        q = self._q
        marks = ", ".join(["%s"] * len(values))
        sql = (
            f"DELETE FROM {q(m.WebSocketSubscription._meta.db_table)} "  # noqa: S608 - quoted identifiers only
            f"WHERE {q('session_id')} IN (SELECT {q('id')} FROM "
            f"{q(m.WebSocketSession._meta.db_table)} WHERE {q(column)} IN ({marks}))"
        )
        params: list[Any] = list(values)
        if channel is not None:
            sql += f" AND {q('channel_name')} = %s"
            params.append(channel)
        with self.connection.cursor() as cursor:
            cursor.execute(sql, params)
            return int(cursor.rowcount)

    def _delete_rows(self, model: type[Any], column: str, values: Sequence[Any]) -> int:
        """One ``DELETE FROM model WHERE column IN (values)`` (no rows loaded, no signals:
        these tables have no dependants)."""
        q = self._q
        marks = ", ".join(["%s"] * len(values))
        sql = f"DELETE FROM {q(model._meta.db_table)} WHERE {q(column)} IN ({marks})"  # noqa: S608
        with self.connection.cursor() as cursor:
            cursor.execute(sql, list(values))
            return int(cursor.rowcount)

    # --- channels ------------------------------------------------------------------

    def subscribe(self, connection_id: str, channel_name: str) -> bool:
        """See :meth:`Storage.subscribe`: one ``INSERT ... SELECT`` from the connected
        session, ignoring an existing membership."""
        conn = self.connection
        q = self._q
        sub_table = q(m.WebSocketSubscription._meta.db_table)
        sess_table = q(m.WebSocketSession._meta.db_table)
        select = (
            f"SELECT {q('id')}, %s, %s FROM {sess_table} "  # noqa: S608 - quoted identifiers only
            f"WHERE {q('connection_id')} = %s AND {q('connected')} = %s"
        )
        columns = f"({q('session_id')}, {q('channel_name')}, {q('created_at')})"
        if conn.vendor == "mysql":
            sql = f"INSERT IGNORE INTO {sub_table} {columns} {select}"
        else:
            sql = f"INSERT INTO {sub_table} {columns} {select} ON CONFLICT DO NOTHING"
        now = datetime.now(UTC)
        with conn.cursor() as cursor:
            cursor.execute(sql, [channel_name, self._dt(now), connection_id, True])
            return bool(cursor.rowcount == 1)

    def unsubscribe(self, connection_id: str, channel_name: str) -> bool:
        """See :meth:`Storage.unsubscribe` (one DELETE)."""
        deleted = self._delete_subscriptions("connection_id", [connection_id], channel_name)
        return deleted > 0

    def channels_of(self, connection_id: str) -> list[str]:
        """See :meth:`Storage.channels_of`."""
        names = (
            m.WebSocketSubscription.objects.using(self.using)
            .filter(session__connection_id=connection_id)
            .values_list("channel_name", flat=True)
        )
        return sorted(names)

    def iter_connection_ids(
        self,
        *,
        channel: str | None = None,
        user_id: str | None = None,
        attributes: Mapping[str, str] | None = None,
        batch_size: int = 500,
    ) -> Iterator[list[str]]:
        """See :meth:`Storage.iter_connection_ids`: keyset pagination on the session's
        primary key, one indexed query per batch (an attribute filter adds a JSON key
        comparison per attribute)."""
        target = self._target(channel, user_id, attributes)
        if target is None:
            return
        qs, key, value = target
        yield from m.keyset_pages(qs, key, value, batch_size)

    def iter_connected_before(
        self,
        cutoff: datetime,
        *,
        batch_size: int = 500,
        after: str | None = None,
        upto: str | None = None,
    ) -> Iterator[list[str]]:
        """See :meth:`Storage.iter_connected_before`: keyset pagination on the primary key,
        one query per batch."""
        qs = m.WebSocketSession.objects.using(self.using).filter(
            connected=True, connected_at__lt=cutoff
        )
        if after is not None:
            qs = qs.filter(connection_id__gt=after)
        if upto is not None:
            qs = qs.filter(connection_id__lte=upto)
        yield from m.keyset_pages(qs, "id", "connection_id", batch_size)

    def user_sessions(
        self, user_id: str, *, channel: str | None = None, limit: int = 100
    ) -> list[Session]:
        """See :meth:`Storage.user_sessions` (one SELECT on the ``(user, connected)``
        index)."""
        try:
            user_pk = self._user_pk(user_id)
        except ValueError:
            return []
        qs = m.WebSocketSession.objects.using(self.using).filter(user_id=user_pk, connected=True)
        if channel is not None:
            qs = qs.filter(subscriptions__channel_name=channel)
        rows = qs.order_by("connected_at", "connection_id").values_list(*self._SESSION_COLUMNS)
        return [self._session_record(row) for row in rows[:limit]]

    def _target(
        self, channel: str | None, user_id: str | None, attributes: Mapping[str, str] | None
    ) -> tuple[Any, str, str] | None:
        """``(queryset, key, id field)`` of a target, ordered by its integer key; ``None``
        when ``user_id`` cannot be a primary key (nobody)."""
        try:
            user_pk = self._user_pk(user_id)
        except ValueError:
            return None
        if channel is not None:
            qs: Any = m.WebSocketSubscription.objects.using(self.using).filter(
                channel_name=channel, session__connected=True
            )
            if user_id is not None:
                qs = qs.filter(session__user_id=user_pk)
            for name, wanted in (attributes or {}).items():
                qs = qs.filter(**{f"session__attributes__{name}": wanted})
            return qs.order_by("session_id"), "session_id", "session__connection_id"
        qs = m.WebSocketSession.objects.using(self.using).filter(connected=True)
        if user_id is not None:
            qs = qs.filter(user_id=user_pk)
        for name, wanted in (attributes or {}).items():
            qs = qs.filter(**{f"attributes__{name}": wanted})
        return qs.order_by("id"), "id", "connection_id"

    def count_recipients(
        self,
        *,
        channel: str | None = None,
        user_id: str | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> int:
        """See :meth:`Storage.count_recipients` (one ``SELECT COUNT(*)``)."""
        target = self._target(channel, user_id, attributes)
        return 0 if target is None else int(target[0].count())

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
        """See :meth:`Storage.recipient_page` (the cursor is the session's primary key)."""
        target = self._target(channel, user_id, attributes)
        if target is None:
            return [], None
        qs, key, value = target
        if after is not None:
            qs = qs.filter(**{f"{key}__gt": int(after)})
        if upto is not None:
            qs = qs.filter(**{f"{key}__lte": int(upto)})
        rows = list(qs.values_list(key, value)[:limit])
        return [cid for _, cid in rows], (str(rows[-1][0]) if rows else None)

    def recipient_splits(
        self,
        *,
        channel: str | None = None,
        user_id: str | None = None,
        attributes: Mapping[str, str] | None = None,
        every: int = 50_000,
    ) -> list[str]:
        """See :meth:`Storage.recipient_splits`: one ``OFFSET`` query per cut, each
        starting after the previous cut."""
        target = self._target(channel, user_id, attributes)
        if target is None:
            return []
        qs, key, _ = target
        cuts: list[str] = []
        while True:
            page = qs if not cuts else qs.filter(**{f"{key}__gt": int(cuts[-1])})
            rows = list(page.values_list(key, flat=True)[every - 1 : every + 1])
            if len(rows) < 2:
                return cuts
            cuts.append(str(rows[0]))

    # --- durable send jobs -----------------------------------------------------------

    @staticmethod
    def _job_part(row: m.SendJobPart) -> JobPart:
        return JobPart(
            job_id=row.job_id,
            index=row.part,
            target=dict(row.target or {}),
            lower=row.lower,
            upper=row.upper,
            cursor=row.cursor,
            status=row.status,
            expected=row.expected,
            counts=JobCounts(**{k: getattr(row, k) for k in JobCounts().as_dict()}),
            runs=row.runs,
            first_error=row.first_error,
            created_at=_aware(row.created_at),
            updated_at=_aware(row.updated_at),
            finished_at=None if row.finished_at is None else _aware(row.finished_at),
        )

    def create_job_parts(self, parts: Sequence[JobPart]) -> int:
        """See :meth:`Storage.create_job_parts` (one SELECT and one bulk INSERT; a
        concurrent insert of the same part is tolerated)."""
        if not parts:
            return 0
        jobs = m.SendJobPart.objects.using(self.using)
        for _ in range(3):
            try:
                with transaction.atomic(using=self.using):
                    existing = set(
                        jobs.filter(job_id__in={p.job_id for p in parts}).values_list(
                            "job_id", "part"
                        )
                    )
                    rows = [
                        m.SendJobPart(
                            job_id=p.job_id,
                            part=p.index,
                            target=p.target,
                            lower=p.lower,
                            upper=p.upper,
                            cursor=p.cursor,
                            status=p.status,
                            expected=p.expected,
                            runs=p.runs,
                            first_error=p.first_error,
                            created_at=p.created_at,
                            updated_at=p.updated_at,
                            finished_at=p.finished_at,
                            **p.counts.as_dict(),
                        )
                        for p in parts
                        if (p.job_id, p.index) not in existing
                    ]
                    jobs.bulk_create(rows)
                    return len(rows)
            except IntegrityError:
                continue  # another worker inserted some of them: look again
        raise RuntimeError("could not insert job parts")  # pragma: no cover

    def get_job_parts(self, job_id: str) -> list[JobPart]:
        """See :meth:`Storage.get_job_parts`."""
        rows = m.SendJobPart.objects.using(self.using).filter(job_id=job_id).order_by("part")
        return [self._job_part(r) for r in rows]

    def start_job_part(self, job_id: str, index: int, now: datetime) -> JobPart | None:
        """See :meth:`Storage.start_job_part`: one UPDATE and one SELECT."""
        rows = m.SendJobPart.objects.using(self.using).filter(job_id=job_id, part=index)
        rows.exclude(status__in=JOB_FINISHED).update(
            status=JOB_RUNNING, runs=F("runs") + 1, updated_at=now
        )
        row = rows.first()
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
        """See :meth:`Storage.checkpoint_job_part`: one conditional UPDATE."""
        values: dict[str, Any] = {
            name: F(name) + amount for name, amount in add.as_dict().items() if amount
        }
        values.update(cursor=cursor, updated_at=now)
        if first_error is not None:
            values["first_error"] = Coalesce(F("first_error"), Value(first_error[:500]))
        if expected is not None:
            values["expected"] = expected
        if status is not None:
            values["status"] = status
            if status in JOB_FINISHED:
                values["finished_at"] = now
        rows = m.SendJobPart.objects.using(self.using).filter(
            job_id=job_id, part=index, status=JOB_RUNNING
        )
        if expected_cursor is None:
            rows = rows.filter(cursor__isnull=True)
        else:
            rows = rows.filter(cursor=expected_cursor)
        return bool(rows.update(**values) == 1)

    def delete_jobs(self, before: datetime, *, dry_run: bool = False) -> int:
        """See :meth:`Storage.delete_jobs`."""
        jobs = m.SendJobPart.objects.using(self.using)
        ids = list(
            jobs.values("job_id")
            .annotate(last=Max("updated_at"))
            .filter(last__lt=before)
            .values_list("job_id", flat=True)
        )
        if ids and not dry_run:
            for i in range(0, len(ids), BULK_BATCH):
                self._delete_rows(m.SendJobPart, "job_id", ids[i : i + BULK_BATCH])
        return len(ids)

    def presence(self, channel_name: str) -> Presence:
        """See :meth:`Storage.presence` (one grouped query)."""
        rows = (
            m.WebSocketSubscription.objects.using(self.using)
            .filter(channel_name=channel_name, session__connected=True)
            .values("session__user_id")
            .annotate(n=Count("pk"))
            .order_by()
        )
        users: set[str] = set()
        total = 0
        for row in rows:
            total += row["n"]
            if row["session__user_id"] is not None:
                users.add(str(row["session__user_id"]))
        return Presence(
            channel_name=channel_name, user_ids=frozenset(users), connection_count=total
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
        """See :meth:`Storage.append_history` (statements in the module table). The
        position upsert holds the row lock until commit, so appends commit in offset
        order."""
        conn = self.connection
        q = self._q
        table = q(m.ChannelHistory._meta.db_table)
        last = q("last_offset")
        insert = (
            f"INSERT INTO {table} ({q('channel')}, {q('epoch')}, {last}, {q('updated_at')}) "  # noqa: S608 - quoted identifiers only
            "VALUES (%s, %s, 1, %s)"
        )
        params = [channel, secrets.token_urlsafe(6), self._dt(now)]
        with transaction.atomic(using=self.using), conn.cursor() as cursor:
            if conn.vendor in ("postgresql", "sqlite") and self._supports_returning():
                target = f"{table}.{last}" if conn.vendor == "postgresql" else last
                cursor.execute(
                    f"{insert} ON CONFLICT ({q('channel')}) DO UPDATE SET {last} = {target} + 1, "
                    f"{q('updated_at')} = %s RETURNING {last}, {q('epoch')}",
                    [*params, self._dt(now)],
                )
                row = cursor.fetchall()[0]
            elif conn.vendor == "mysql" and self._supports_returning():  # MariaDB
                cursor.execute(
                    f"{insert} ON DUPLICATE KEY UPDATE {last} = {last} + 1, "
                    f"{q('updated_at')} = %s RETURNING {last}, {q('epoch')}",
                    [*params, self._dt(now)],
                )
                row = cursor.fetchall()[0]
            else:
                row = self._bump_position_portable(channel, now)
            offset, epoch = int(row[0]), str(row[1])
            messages = m.HistoryMessage.objects.using(self.using)
            messages.create(
                channel=channel,
                offset=offset,
                epoch=epoch,
                payload=payload,
                created_at=now,
                expires_at=None if ttl_seconds is None else now + timedelta(seconds=ttl_seconds),
            )
            if size is not None and offset % self.TRIM_EVERY == 0 and offset > size:
                messages.filter(channel=channel, offset__lte=offset - size).delete()
        return offset, epoch

    def _bump_position_portable(self, channel: str, now: datetime) -> tuple[int, str]:
        """Row-locking fallback (MySQL without RETURNING), inside the caller's transaction."""
        positions = m.ChannelHistory.objects.using(self.using)
        try:
            with transaction.atomic(using=self.using):
                positions.create(
                    channel=channel, epoch=secrets.token_urlsafe(6), last_offset=1, updated_at=now
                )
        except IntegrityError:
            row = positions.select_for_update().filter(channel=channel)
            row.update(last_offset=F("last_offset") + 1, updated_at=now)
        last, epoch = positions.filter(channel=channel).values_list("last_offset", "epoch")[0]
        return int(last), str(epoch)

    def read_history(
        self, channel: str, now: datetime, *, since: int | None = None, limit: int = 100
    ) -> HistoryPage:
        """See :meth:`Storage.read_history` (two SELECTs)."""
        position = list(
            m.ChannelHistory.objects.using(self.using)
            .filter(channel=channel)
            .values_list("epoch", "last_offset")[:1]
        )
        if not position:
            return HistoryPage(channel=channel, epoch="", offset=0)
        qs = (
            m.HistoryMessage.objects.using(self.using)
            .filter(channel=channel)
            .exclude(expires_at__lte=now)
        )
        fields = ("offset", "epoch", "payload", "created_at")
        if since is None:
            rows = list(qs.order_by("-offset").values_list(*fields)[:limit])[::-1]
        else:
            rows = list(qs.filter(offset__gt=since).order_by("offset").values_list(*fields)[:limit])
        epoch, last = position[0]
        return HistoryPage(
            channel=channel,
            epoch=epoch,
            offset=int(last),
            messages=tuple(
                HistoryMessage(
                    channel=channel,
                    offset=int(offset),
                    epoch=msg_epoch,
                    payload=bytes(payload),
                    created_at=created,
                )
                for offset, msg_epoch, payload, created in rows
            ),
        )

    def reset_history(self, channel: str) -> None:
        """See :meth:`Storage.reset_history` (two DELETEs, one transaction)."""
        with transaction.atomic(using=self.using):
            m.HistoryMessage.objects.using(self.using).filter(channel=channel).delete()
            m.ChannelHistory.objects.using(self.using).filter(channel=channel).delete()

    # --- tokens --------------------------------------------------------------------

    def spend_token(self, token: Token) -> bool:
        """See :meth:`Storage.spend_token`: one INSERT that ignores a duplicate hash
        (``ON CONFLICT DO NOTHING``; MySQL/MariaDB ``INSERT IGNORE``), its row count
        deciding. A user deleted since the token was issued makes it ``False`` (spent):
        the token is no longer anybody's. (Inside a transaction of your own on
        PostgreSQL or SQLite, the foreign key is only checked at your commit.)"""
        try:
            return self._spend(token)
        except IntegrityError:
            if self._user_exists(token.user_id):
                raise
            return False

    def _spend(self, token: Token) -> bool:
        """The INSERT of :meth:`spend_token`, without its error handling (``connect``
        handles a deleted user at its commit)."""
        q = self._q
        try:
            user_pk = self._user_pk(token.user_id)
        except ValueError:  # not an id of this user model: never a token of ours
            return False
        values = {
            "token_hash": token.token_hash,
            "user_id": user_pk,
            "created_at": token.created_at,
            "expires_at": token.expires_at,
            "channel": token.channel,
            "origin": token.origin,
        }
        if self.connection.vendor == "mysql":
            return self._insert_count(m.WebSocketToken, values, ignore=True) == 1
        tail = f" ON CONFLICT ({q('token_hash')}) DO NOTHING"
        return self._insert_count(m.WebSocketToken, values, tail) == 1

    # --- counters ------------------------------------------------------------------

    def _incr_hit(self, hit: CounterHit) -> int:
        return self.incr_counter(hit.key, hit.window_start, hit.expires_at)

    def incr_counter(self, key: str, window_start: datetime, expires_at: datetime) -> int:
        """See :meth:`Storage.incr_counter`: one atomic upsert returning the new value."""
        conn = self.connection
        q = self._q
        table = q(m.RateLimitCounter._meta.db_table)
        count = q("count")
        insert = (
            f"INSERT INTO {table} ({q('key')}, {q('window_start')}, {count}, "  # noqa: S608 - quoted identifiers only
            f"{q('expires_at')}) VALUES (%s, %s, 1, %s)"
        )
        params = [key, self._dt(window_start), self._dt(expires_at)]
        with conn.cursor() as cursor:
            if conn.vendor in ("postgresql", "sqlite") and self._supports_returning():
                target = f"{table}.{count}" if conn.vendor == "postgresql" else count
                cursor.execute(
                    f"{insert} ON CONFLICT ({q('key')}, {q('window_start')}) "
                    f"DO UPDATE SET {count} = {target} + 1 RETURNING {count}",
                    params,
                )
                return int(cursor.fetchall()[0][0])
            if conn.vendor == "mysql":
                if self._supports_returning():  # MariaDB
                    cursor.execute(
                        f"{insert} ON DUPLICATE KEY UPDATE {count} = {count} + 1 RETURNING {count}",
                        params,
                    )
                    return int(cursor.fetchall()[0][0])
                cursor.execute(
                    f"{insert} ON DUPLICATE KEY UPDATE {count} = LAST_INSERT_ID({count} + 1)",
                    params,
                )
                if cursor.rowcount == 1:  # inserted
                    return 1
                cursor.execute("SELECT LAST_INSERT_ID()")
                return int(cursor.fetchone()[0])
        return self._incr_counter_portable(key, window_start, expires_at)

    def _incr_counter_portable(self, key: str, window_start: datetime, expires_at: datetime) -> int:
        """Row-locking fallback for databases without an upsert we know."""
        counters = m.RateLimitCounter.objects.using(self.using)
        with transaction.atomic(using=self.using):
            try:
                with transaction.atomic(using=self.using):
                    counters.create(
                        key=key, window_start=window_start, count=1, expires_at=expires_at
                    )
                return 1
            except IntegrityError:
                pass
            row = counters.select_for_update().filter(key=key, window_start=window_start)
            row.update(count=F("count") + 1)
            return int(row.values_list("count", flat=True)[0])

    # --- gateway records -----------------------------------------------------------

    def get_gateway(self, name: str) -> GatewayRecord | None:
        """See :meth:`Storage.get_gateway`."""
        row = m.GatewayRecord.objects.using(self.using).filter(name=name).first()
        if row is None:
            return None
        return GatewayRecord(
            name=row.name,
            api_id=row.api_id,
            region=row.region,
            stage=row.stage,
            api_endpoint=row.api_endpoint,
            management_endpoint=row.management_endpoint,
            custom_domain=row.custom_domain,
            resources={str(k): str(v) for k, v in (row.resources or {}).items()},
            spec_hash=row.spec_hash,
            status=row.status,
            updated_at=row.updated_at,
        )

    def save_gateway(self, record: GatewayRecord) -> None:
        """See :meth:`Storage.save_gateway` (insert or replace by name)."""
        m.GatewayRecord.objects.using(self.using).update_or_create(
            name=record.name,
            defaults={
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
            },
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
        """See :meth:`Storage.cleanup`. Consumed tokens are already gone (consuming
        deletes them), so only expired ones remain to delete."""
        tokens = m.WebSocketToken.objects.using(self.using).filter(expires_at__lte=now)
        counters = m.RateLimitCounter.objects.using(self.using).filter(expires_at__lte=now)
        messages = m.HistoryMessage.objects.using(self.using).filter(expires_at__lte=now)
        sessions = m.WebSocketSession.objects.using(self.using)
        stale = sessions.filter(
            connected=True, connected_at__lt=now - timedelta(seconds=session_max_age_seconds)
        )
        old = sessions.filter(
            connected=False,
            disconnected_at__lt=now - timedelta(seconds=keep_disconnected_seconds),
        )
        if dry_run:
            return CleanupReport(
                expired_tokens=tokens.count(),
                stale_sessions=stale.count(),
                old_disconnected=old.count(),
                counters=counters.count(),
                history_messages=messages.count(),
            )
        expired_tokens = tokens.delete()[0]
        expired_counters = counters.delete()[0]
        expired_messages = messages.delete()[0]
        old_count = 0
        while True:  # bounded batches keep each statement short on big tables
            ids = list(old.values_list("pk", flat=True)[:BULK_BATCH])
            if not ids:
                break
            self._delete_subscriptions("id", ids)
            old_count += self._delete_rows(m.WebSocketSession, "id", ids)
        stale_count = 0
        while True:
            cids = list(stale.values_list("connection_id", flat=True)[:BULK_BATCH])
            if not cids:
                break
            stale_count += self.mark_disconnected(cids, now)
        return CleanupReport(
            expired_tokens=expired_tokens,
            stale_sessions=stale_count,
            old_disconnected=old_count,
            counters=expired_counters,
            history_messages=expired_messages,
        )

    def is_unavailable(self, error: BaseException) -> bool:
        """Django's ``OperationalError`` / ``InterfaceError`` (connection refused or lost,
        server gone away, read timeout): the database is unavailable (see
        :meth:`Storage.is_unavailable`)."""
        if isinstance(error, OperationalError | InterfaceError):
            return True
        return super().is_unavailable(error)

    def describe(self) -> dict[str, Any]:
        """Backend, database alias and vendor, for logs and diagnostics."""
        return {
            "backend": type(self).__name__,
            "database": self.using,
            "vendor": self.connection.vendor,
        }
