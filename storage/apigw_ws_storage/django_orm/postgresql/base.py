"""Django's PostgreSQL backend (psycopg 3) with a deadline on every round trip.

libpq has no read timeout, so with Django's own backend a PostgreSQL that accepts a
statement and never answers holds the request until API Gateway gives up (29 s). This
backend is Django's, except that its connections give up after ``OPTIONS["read_timeout"]``
seconds (default 2) and are then replaced (see :mod:`apigw_ws_storage.deadline`)::

    DATABASES = {
        "default": {
            "ENGINE": "apigw_ws_storage.django_orm.postgresql",
            ...,
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": {"connect_timeout": 2, "read_timeout": 2},
        }
    }

Every statement on the database is bounded, not only apigw-ws's: give an alias that runs
long reports its own, larger ``read_timeout``. Django's connection pool (``OPTIONS["pool"]``)
is used unchanged and unbounded; leave it off with this backend.
"""

from __future__ import annotations

from typing import Any

from django.db.backends.postgresql import base as postgresql

from apigw_ws_storage.deadline import bounded_psycopg_connection

__all__ = ["DatabaseWrapper"]

#: Seconds a round trip may take when ``OPTIONS`` names no ``read_timeout``.
DEFAULT_READ_TIMEOUT = 2.0


class _Psycopg:
    """The psycopg module as Django's backend sees it, with ``connect`` on the bounded
    connection class."""

    def __init__(self, connection_class: Any) -> None:
        self._connection_class = connection_class

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        return self._connection_class.connect(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        import psycopg

        return getattr(psycopg, name)


class DatabaseWrapper(postgresql.DatabaseWrapper):
    """Django's PostgreSQL ``DatabaseWrapper`` whose connections have a read deadline."""

    def get_connection_params(self) -> dict[str, Any]:
        """Django's parameters, without ``read_timeout`` (no libpq parameter)."""
        params: dict[str, Any] = super().get_connection_params()
        params.pop("read_timeout", None)
        return params

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        """Connect with the bounded connection class."""
        limit = float(self.settings_dict["OPTIONS"].get("read_timeout", DEFAULT_READ_TIMEOUT))
        self.Database = _Psycopg(bounded_psycopg_connection(limit))
        return super().get_new_connection(conn_params)
