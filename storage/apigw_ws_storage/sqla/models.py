"""Typed SQLAlchemy 2.x declarative models for apigw-ws, with configurable table names.

:func:`make_models` builds the seven mapped classes on a :class:`~sqlalchemy.MetaData` you
choose, with a table-name prefix you choose. Put them on your application's metadata and
Alembic's ``--autogenerate`` (or Flask-Migrate) picks them up with your own tables::

    from apigw_ws_storage.sqla import make_models

    class Base(DeclarativeBase): ...
    ws_models = make_models(Base.metadata, prefix="apigw_ws_")   # once, at import time

Alembic writes the column types of :mod:`apigw_ws_storage.sqla.types` with their module
path and does not import it: add ``import apigw_ws_storage.sqla.types`` to your
``script.py.mako``. Autogenerate is then stable on SQLite, PostgreSQL and MariaDB with its
default ``compare_type=True`` (``tests/sqla/test_alembic.py``).

:data:`DEFAULT_MODELS` (on :data:`metadata`, prefix ``apigw_ws_``) is what
:class:`~apigw_ws_storage.sqla.SqlaStorage` uses when given no models.

Every hot query has an index:

=================================================  =========================================
query                                              index
=================================================  =========================================
message: load one session                          primary key ``connection_id``
send to everyone (keyset by id)                    ``ix_{p}session_connected_id``
send to a user / presence by user                  ``ix_{p}session_user``
cleanup of stale / old sessions                    ``ix_{p}session_connected_at``,
                                                   ``ix_{p}session_disconnected_at``
durable send jobs: parts of a job                  primary key ``(job_id, part)``
send to a channel (keyset by id), presence         ``ix_{p}subscription_channel``
channels of a connection, drop on disconnect       primary key ``(connection_id, channel)``
token consumption                                  primary key ``token_hash``
token cleanup                                      ``ix_{p}token_expires_at``
rate-limit upsert / cleanup                        primary key ``(key, window_start)``,
                                                   ``ix_{p}counter_expires_at``
history: next offset of a channel                  primary key ``channel`` of
                                                   ``{p}channel_history``
history: messages since an offset, size trim       primary key ``(channel, offset)`` of
                                                   ``{p}history_message``
history: TTL cleanup                               ``ix_{p}history_message_expires_at``
=================================================  =========================================

Connection attributes are a JSON column of the session (``NULL`` means none); sends
filtered by an attribute filter the sessions of their target (channel, user or everyone)
by JSON path, without an index of their own.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import attrs
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from apigw_ws_storage.sqla.types import UTCDateTime, binary_string, payload_blob

__all__ = [
    "DEFAULT_MODELS",
    "NAMING_CONVENTION",
    "CounterColumns",
    "GatewayColumns",
    "HistoryColumns",
    "HistoryMessageColumns",
    "JobColumns",
    "Models",
    "SessionColumns",
    "SubscriptionColumns",
    "TokenColumns",
    "make_models",
    "metadata",
]

#: Constraint naming convention of :data:`metadata` (stable names for Alembic).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

_PREFIX_RE = re.compile(r"\A[a-z_][a-z0-9_]{0,30}\Z")


class SessionColumns:
    """Columns of one WebSocket connection (``WebSocketSession``; see core ``Session``)."""

    connection_id: Mapped[str] = mapped_column(binary_string(128), primary_key=True)
    channel_name: Mapped[str] = mapped_column(binary_string(100))
    user_id: Mapped[str | None] = mapped_column(binary_string(64), nullable=True)
    connected: Mapped[bool] = mapped_column(Boolean, default=True)
    source_ip: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(255), default="")
    stage: Mapped[str] = mapped_column(String(64), default="")
    api_id: Mapped[str] = mapped_column(String(64), default="")
    connected_at: Mapped[datetime] = mapped_column(UTCDateTime())
    disconnected_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    attributes: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)


class SubscriptionColumns:
    """Columns of a channel membership (``connection_id`` is added with its foreign key)."""

    channel_name: Mapped[str] = mapped_column(binary_string(100))
    user_id: Mapped[str | None] = mapped_column(binary_string(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class TokenColumns:
    """Columns of a single-use connection token (only the SHA-256 hex digest is stored)."""

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(binary_string(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    channel: Mapped[str | None] = mapped_column(binary_string(100), nullable=True)
    origin: Mapped[str | None] = mapped_column(String(255), nullable=True)


class CounterColumns:
    """Columns of a fixed-window rate-limit counter."""

    key: Mapped[str] = mapped_column(binary_string(255), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class GatewayColumns:
    """Columns of a provisioned gateway record (see core ``GatewayRecord``)."""

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    api_id: Mapped[str] = mapped_column(String(64), default="")
    region: Mapped[str] = mapped_column(String(32), default="")
    stage: Mapped[str] = mapped_column(String(128), default="")
    api_endpoint: Mapped[str] = mapped_column(String(512), default="")
    management_endpoint: Mapped[str] = mapped_column(String(512), default="")
    custom_domain: Mapped[str] = mapped_column(String(255), default="")
    resources: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    spec_hash: Mapped[str] = mapped_column(String(128), default="")
    status: Mapped[str] = mapped_column(String(16), default="partial")
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class HistoryColumns:
    """The history position of one channel: its epoch and last offset."""

    channel: Mapped[str] = mapped_column(binary_string(100), primary_key=True)
    epoch: Mapped[str] = mapped_column(String(16))
    last_offset: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class HistoryMessageColumns:
    """One message kept in a channel's history (the payload before the envelope)."""

    channel: Mapped[str] = mapped_column(binary_string(100), primary_key=True)
    offset: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    epoch: Mapped[str] = mapped_column(String(16))
    payload: Mapped[bytes] = mapped_column(payload_blob())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class JobColumns:
    """Columns of one part of a durable send job (see core ``JobPart``)."""

    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    part: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    target: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    lower: Mapped[str | None] = mapped_column(binary_string(128), nullable=True)
    upper: Mapped[str | None] = mapped_column(binary_string(128), nullable=True)
    cursor: Mapped[str | None] = mapped_column(binary_string(128), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    expected: Mapped[int] = mapped_column(Integer, default=0)
    recipients: Mapped[int] = mapped_column(Integer, default=0)
    delivered: Mapped[int] = mapped_column(Integer, default=0)
    gone: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    retried: Mapped[int] = mapped_column(Integer, default=0)
    throttled: Mapped[int] = mapped_column(Integer, default=0)
    ambiguous: Mapped[int] = mapped_column(Integer, default=0)
    runs: Mapped[int] = mapped_column(Integer, default=0)
    first_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


@attrs.frozen
class Models:
    """The mapped classes of one :func:`make_models` call, and their tables.

    The storage issues Core statements against ``*_table``; the classes are there for your
    own queries, admin screens and Alembic.
    """

    metadata: MetaData
    prefix: str
    base: type[DeclarativeBase]
    session: type[SessionColumns]
    subscription: type[SubscriptionColumns]
    token: type[TokenColumns]
    counter: type[CounterColumns]
    gateway: type[GatewayColumns]
    history: type[HistoryColumns]
    history_message: type[HistoryMessageColumns]
    job: type[JobColumns]

    @staticmethod
    def _table(cls: type[Any]) -> Table:
        table: Table = cls.__table__
        return table

    @property
    def session_table(self) -> Table:
        """``{prefix}session``."""
        return self._table(self.session)

    @property
    def subscription_table(self) -> Table:
        """``{prefix}subscription``."""
        return self._table(self.subscription)

    @property
    def token_table(self) -> Table:
        """``{prefix}token``."""
        return self._table(self.token)

    @property
    def counter_table(self) -> Table:
        """``{prefix}counter``."""
        return self._table(self.counter)

    @property
    def gateway_table(self) -> Table:
        """``{prefix}gateway``."""
        return self._table(self.gateway)

    @property
    def history_table(self) -> Table:
        """``{prefix}channel_history``."""
        return self._table(self.history)

    @property
    def history_message_table(self) -> Table:
        """``{prefix}history_message``."""
        return self._table(self.history_message)

    @property
    def job_table(self) -> Table:
        """``{prefix}job`` (parts of durable send jobs)."""
        return self._table(self.job)

    @property
    def tables(self) -> list[Table]:
        """All tables, in dependency order (for ``create_all(tables=...)``)."""
        return [
            self.session_table,
            self.subscription_table,
            self.token_table,
            self.counter_table,
            self.gateway_table,
            self.history_table,
            self.history_message_table,
            self.job_table,
        ]


def make_models(metadata: MetaData | None = None, *, prefix: str = "apigw_ws_") -> Models:
    """Declare the apigw-ws tables on ``metadata`` (a new one if ``None``) named
    ``{prefix}session``, ``{prefix}subscription``, ``{prefix}token``, ``{prefix}counter``,
    ``{prefix}gateway``, ``{prefix}channel_history``, ``{prefix}history_message`` and
    ``{prefix}job``.

    Call it once per metadata and prefix (at import time) and keep the result: declaring the
    same tables twice raises ``ValueError``.
    """
    if not _PREFIX_RE.match(prefix):
        raise ValueError(f"table prefix must match {_PREFIX_RE.pattern}: {prefix!r}")
    md = metadata if metadata is not None else MetaData(naming_convention=NAMING_CONVENTION)
    if f"{prefix}session" in md.tables:
        raise ValueError(
            f"{prefix}session is already declared on this MetaData: call make_models() once "
            "per metadata and prefix and reuse the returned Models"
        )
    p = prefix

    class Base(DeclarativeBase):
        """Declarative base of these models (its own registry, the given metadata)."""

        metadata = md

    class WebSocketSession(SessionColumns, Base):
        """One WebSocket connection."""

        __tablename__ = f"{p}session"
        __table_args__ = (
            Index(f"ix_{p}session_connected_id", "connected", "connection_id"),
            Index(f"ix_{p}session_user", "user_id", "connected", "connection_id"),
            Index(f"ix_{p}session_connected_at", "connected", "connected_at"),
            Index(f"ix_{p}session_disconnected_at", "disconnected_at"),
        )

    class Subscription(SubscriptionColumns, Base):
        """Membership of a connection in a channel."""

        __tablename__ = f"{p}subscription"
        __table_args__ = (
            PrimaryKeyConstraint("connection_id", "channel_name"),
            Index(f"ix_{p}subscription_channel", "channel_name", "connection_id"),
        )

        connection_id: Mapped[str] = mapped_column(
            binary_string(128), ForeignKey(f"{p}session.connection_id", ondelete="CASCADE")
        )

    class ConnectionToken(TokenColumns, Base):
        """A single-use connection token."""

        __tablename__ = f"{p}token"
        __table_args__ = (Index(f"ix_{p}token_expires_at", "expires_at"),)

    class RateCounter(CounterColumns, Base):
        """A rate-limit counter."""

        __tablename__ = f"{p}counter"
        __table_args__ = (Index(f"ix_{p}counter_expires_at", "expires_at"),)

    class Gateway(GatewayColumns, Base):
        """A provisioned gateway record."""

        __tablename__ = f"{p}gateway"

    class ChannelHistory(HistoryColumns, Base):
        """The history position of a channel."""

        __tablename__ = f"{p}channel_history"

    class HistoryMessage(HistoryMessageColumns, Base):
        """A message kept in a channel's history."""

        __tablename__ = f"{p}history_message"
        __table_args__ = (Index(f"ix_{p}history_message_expires_at", "expires_at"),)

    class SendJobPart(JobColumns, Base):
        """A part of a durable send job."""

        __tablename__ = f"{p}job"

    return Models(
        metadata=md,
        prefix=prefix,
        base=Base,
        session=WebSocketSession,
        subscription=Subscription,
        token=ConnectionToken,
        counter=RateCounter,
        gateway=Gateway,
        history=ChannelHistory,
        history_message=HistoryMessage,
        job=SendJobPart,
    )


#: The models :class:`~apigw_ws_storage.sqla.SqlaStorage` uses by default.
DEFAULT_MODELS = make_models(MetaData(naming_convention=NAMING_CONVENTION))
#: The :class:`~sqlalchemy.MetaData` of :data:`DEFAULT_MODELS` (add it to Alembic's
#: ``target_metadata`` list).
metadata = DEFAULT_MODELS.metadata
