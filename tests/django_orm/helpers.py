"""Shared helpers of the Django tests: which database aliases to run on, and threads that
each use (and close) their own database connection."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django.db import connections

from apigw_ws_storage.django_orm.storage import DjangoStorage
from tests.conftest import service_url

#: alias -> environment variable of its server ("default" is SQLite, always there).
ALIASES = {
    "default": None,
    "postgres": "APIGW_WS_TEST_POSTGRES_URL",
    "mariadb": "APIGW_WS_TEST_MARIADB_URL",
}


def alias_params(
    *, transaction: bool = True, aliases: tuple[str, ...] = tuple(ALIASES)
) -> list[Any]:
    """``pytest.param`` per database alias, each with its ``django_db`` mark. Aliases whose
    server is not configured skip (and fail under ``APIGW_WS_REQUIRE_SERVICES=1``)."""
    params = []
    for alias in aliases:
        env = ALIASES[alias]
        marks: list[Any] = []
        if env is not None:
            marks.append(getattr(pytest.mark, alias))
            # service_url raises under APIGW_WS_REQUIRE_SERVICES=1 (CI never skips).
            if service_url(env) is None or alias not in settings.DATABASES:
                marks.append(pytest.mark.skip(reason=f"{alias} not available: set {env}"))
                params.append(pytest.param(alias, marks=marks, id=alias))
                continue
        marks.append(pytest.mark.django_db(databases=[alias], transaction=transaction))
        params.append(
            pytest.param(alias, marks=marks, id="sqlite" if alias == "default" else alias)
        )
    return params


class AliasRouter:
    """Routes every model to the alias under test (set by the ``alias`` fixtures), as a
    project keeping its WebSocket tables in another database would with a router."""

    alias: str | None = None

    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        return AliasRouter.alias

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return AliasRouter.alias


class ThreadStorage:
    """A ``DjangoStorage`` for one worker thread: closes that thread's connection after
    every call, so no connection outlives the thread (test databases can be dropped)."""

    def __init__(self, using: str):
        self._storage = DjangoStorage(using)
        self._using = using

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._storage, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attr(*args, **kwargs)
            finally:
                connections[self._using].close()

        return call


def run_threads(fn: Callable[[], Any], count: int, using: str) -> list[Any]:
    """Run ``fn`` in ``count`` threads released together; return results (re-raise the
    first error). Each thread closes its own connection."""
    barrier = threading.Barrier(count)
    results: list[Any] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            barrier.wait(timeout=30)
            value = fn()
            with lock:
                results.append(value)
        except BaseException as exc:
            with lock:
                errors.append(exc)
        finally:
            connections[using].close()

    threads = [threading.Thread(target=worker) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]
    return results
