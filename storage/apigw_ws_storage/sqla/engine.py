""":func:`create_bounded_engine`: a SQLAlchemy engine on which no wait is unbounded.

A database that is down, restarted or hung must cost a request a few seconds, not API
Gateway's 29 s integration timeout. SQLAlchemy's and the drivers' defaults wait forever in
several places (connecting, reading an answer, waiting for a pooled connection), and
``pool_pre_ping`` is off, so a restarted database fails one request per pooled connection.
This helper sets, for the drivers apigw-ws is tested with:

* every dialect: ``pool_pre_ping=True``; ``pool_timeout`` (waiting for a pooled connection);
* PostgreSQL on psycopg 3: ``connect_timeout``, and a deadline on every round trip of an
  open connection (libpq has no read timeout: a connection whose answer does not come
  within ``timeout`` is closed and the statement fails, so the pool replaces it);
* MariaDB/MySQL on PyMySQL or mysqlclient: ``connect_timeout``, ``read_timeout``,
  ``write_timeout``;
* SQLite: the busy ``timeout``.

Anything you pass yourself wins over these defaults. Other drivers get the pool settings
only; set their timeouts in ``connect_args``.
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url

from apigw_ws_storage.deadline import bounded_psycopg_connection

__all__ = ["create_bounded_engine"]


def create_bounded_engine(url: str | URL, *, timeout: float = 2.0, **kwargs: Any) -> Engine:
    """``sqlalchemy.create_engine(url, **kwargs)`` with every wait bounded by about
    ``timeout`` seconds (see the module docs). Statements that legitimately run longer than
    ``timeout`` on PostgreSQL fail too: apigw-ws's own statements take milliseconds, but give
    an engine you also use for long reports its own, larger ``timeout``."""
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    url = make_url(url)
    backend, driver = url.get_backend_name(), url.get_driver_name()
    whole = max(1, math.ceil(timeout))
    connect_args: dict[str, Any] = dict(kwargs.pop("connect_args", None) or {})
    kwargs.setdefault("pool_pre_ping", True)
    if backend == "sqlite":
        connect_args.setdefault("timeout", timeout)
    else:
        kwargs.setdefault("pool_timeout", timeout)
    if backend in ("mysql", "mariadb") and driver in ("pymysql", "mysqldb"):
        for name in ("connect_timeout", "read_timeout", "write_timeout"):
            connect_args.setdefault(name, whole)
    psycopg = backend == "postgresql" and driver == "psycopg"
    if psycopg:
        connect_args.setdefault("connect_timeout", max(2, whole))  # libpq's minimum is 2
    engine = create_engine(url, connect_args=connect_args, **kwargs)
    if psycopg:
        connection_class = bounded_psycopg_connection(timeout)

        @event.listens_for(engine, "do_connect")
        def _connect(dialect: Any, record: Any, cargs: Any, cparams: Any) -> Any:
            return connection_class.connect(*cargs, **cparams)

    return engine
