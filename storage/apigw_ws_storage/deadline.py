"""A deadline on every round trip of a psycopg 3 connection.

libpq has a connect timeout but no read timeout: a PostgreSQL server (or a path to it) that
accepts a statement and never answers holds the caller for as long as TCP keeps the
connection up. :func:`bounded_psycopg_connection` returns a ``psycopg.Connection`` subclass
whose every wait for the server ends after ``limit`` seconds: the connection is then closed
(it is mid-statement, so unusable) and ``psycopg.OperationalError`` is raised, which
SQLAlchemy and Django treat as a lost connection and replace. Used by
:func:`apigw_ws_storage.sqla.create_bounded_engine` and by the Django backend
``apigw_ws_storage.django_orm.postgresql``. No SQLAlchemy or Django import.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["bounded_psycopg_connection"]


@functools.lru_cache(maxsize=16)
def bounded_psycopg_connection(limit: float) -> Any:
    """A ``psycopg.Connection`` subclass whose every wait for the server ends after
    ``limit`` seconds with the connection closed and ``OperationalError`` raised."""
    if limit <= 0:
        raise ValueError("limit must be positive")
    import psycopg

    # psycopg raises its (private) _WaitTimeout when a wait's timeout expires
    wait_timeout: type[BaseException] = getattr(
        psycopg.errors, "_WaitTimeout", psycopg.OperationalError
    )

    class BoundedConnection(psycopg.Connection[Any]):
        """psycopg's connection with a deadline on each round trip."""

        deadline: float = limit

        def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
            try:
                return super().wait(
                    gen, interval=interval, timeout=self.deadline if timeout is None else timeout
                )
            except wait_timeout as exc:
                if self.closed or not str(exc).startswith("wait timeout"):
                    raise
                # mid-statement without an answer: the connection is unusable
                self.pgconn.finish()
                raise psycopg.OperationalError(
                    f"no answer from the server within {self.deadline} s; connection closed"
                ) from exc

    return BoundedConnection
