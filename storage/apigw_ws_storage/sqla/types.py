"""Column types that behave the same on SQLite, PostgreSQL and MariaDB/MySQL.

* :class:`UTCDateTime` stores timezone-aware UTC datetimes as naive UTC with microseconds
  (``DATETIME(6)`` on MariaDB, whose plain ``DATETIME`` drops fractions) and returns them
  aware again, so records round-trip unchanged on every dialect.
* :func:`binary_string` is a ``VARCHAR`` compared byte for byte: API Gateway connection ids
  are case-sensitive base64, and MariaDB's default collation is case-insensitive.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, LargeBinary, String
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

__all__ = ["UTCDateTime", "binary_string", "payload_blob"]


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC ``datetime`` stored as naive UTC with microsecond precision.

    Binding a naive datetime raises ``ValueError``: the library only deals in aware UTC.
    """

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        """``DATETIME(6)`` on MySQL/MariaDB, ``TIMESTAMP WITHOUT TIME ZONE`` elsewhere."""
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime(timezone=False))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Aware datetime → naive UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("apigw-ws stores timezone-aware UTC datetimes only")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Naive UTC from the database → aware UTC."""
        if value is None:
            return None
        if value.tzinfo is not None:
            return value.astimezone(UTC)
        return value.replace(tzinfo=UTC)


def binary_string(length: int) -> TypeEngine[str]:
    """``VARCHAR(length)`` with case-sensitive, byte-wise comparison on every dialect.

    SQLite and PostgreSQL compare ``VARCHAR`` exactly already; MySQL/MariaDB get
    ``utf8mb4_bin``.
    """
    return String(length).with_variant(
        mysql.VARCHAR(length, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
    )


def payload_blob() -> TypeEngine[bytes]:
    """Bytes up to API Gateway's 128 KiB message size: ``BLOB`` on SQLite, ``BYTEA`` on
    PostgreSQL, ``MEDIUMBLOB`` on MySQL/MariaDB (whose plain ``BLOB`` stops at 64 KiB)."""
    return LargeBinary().with_variant(mysql.MEDIUMBLOB(), "mysql", "mariadb")
