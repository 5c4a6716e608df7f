"""Healing at scale: does ``WebSocketApp.heal()`` stay flat from 10,000 to 100,000 sessions?

The sessions are real rows in PostgreSQL (``SqlaStorage`` on its own tables, prefix
``heal_bench_<pid>_``, filled with one ``COPY``, dropped afterwards), all connected an hour ago,
so every one is old enough to be asked about. The transport is a no-network
:class:`~apigw_ws_core.transport.AsyncTransport` whose ``aget`` (the library's
``GET @connections/{id}`` hook) sleeps 2-5 ms on the event loop, then answers "live" for a
chosen fraction of the ids and ``GoneError`` (410) for the rest. ``heal()`` runs exactly as
``cleanup()`` runs it: keyset pages from ``Storage.iter_connected_before``, the fan-out
engine, then ``mark_disconnected`` for the 410 ids.

Each run (one size, one cap) is a fresh child process, so its peak RSS
(``resource.getrusage``) is its own. It prints, per run: wall time, sessions checked per
second, the SQL statements and transactions the storage issued (counted with SQLAlchemy
``before_cursor_execute`` / ``commit`` events), peak RSS, the load average, and a
correctness check (exactly the 410 ids are disconnected, every live one is untouched).
It prints numbers; it asserts nothing.

``--backend django`` runs the same measurement through the Django ORM storage
(``DjangoStorage``, app ``apigw_ws_storage.django_orm``): each child configures Django
(``settings.configure``) on a throwaway database ``heal_bench_<pid>`` (created by the parent,
tables by ``migrate``, filled with one ``COPY``, dropped with ``WITH (FORCE)`` at the end) and
counts the statements with ``connection.execute_wrapper`` (``DEBUG`` off). Django runs in
autocommit, so every statement is its own transaction: "commits" counts explicit ones
(``connection.commit()``, i.e. ``atomic`` blocks), none on this path.

Usage::

    .venv/bin/python benchmarks/heal_scale.py                          # 10k, 100k; both caps
    .venv/bin/python benchmarks/heal_scale.py --sizes 10000 100000 1000000 --caps none
    .venv/bin/python benchmarks/heal_scale.py --live 0.9 --caps none 500
    .venv/bin/python benchmarks/heal_scale.py --backend django --sizes 10000 100000 --caps none

``--caps none`` is unpaced (the storage and the engine are what is measured); ``500`` is
the default ``heal_max_rate``. Needs PostgreSQL (``APIGW_WS_TEST_POSTGRES_URL``, default
``postgresql://postgres@127.0.0.1:5432/test``).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import json
import os
import random
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
for sub in (".", "storage"):
    sys.path.insert(0, str(ROOT / sub))

from apigw_ws_core import Config, WebSocketApp  # noqa: E402
from apigw_ws_core.errors import GoneError  # noqa: E402
from apigw_ws_core.transport import AsyncTransport, Payload  # noqa: E402

#: Table prefix: ``heal_bench_<pid of the parent>_`` so that two runs never share tables.
PREFIX = "heal_bench_"


def cid(i: int) -> str:
    """The connection id of session ``i`` (the shape API Gateway uses: 16 characters)."""
    return f"h{i:014d}="


def is_live(i: int, live: float) -> bool:
    """Whether API Gateway still knows session ``i`` (spread evenly over the ids)."""
    return (i * 7919) % 1000 < live * 1000


class SimulatedGateway(AsyncTransport):
    """``GET @connections/{id}`` after 2-5 ms (no network): 200 for the live ids, 410 else."""

    def __init__(self, live: float, latency: tuple[float, float]) -> None:
        super().__init__()
        self.live = live
        self.latency = latency
        self.gets = 0
        self.rng = random.Random(12)

    async def apost(
        self, connection_id: str, payload: Payload, *, timeout: float | None = None
    ) -> None:
        raise NotImplementedError("healing only asks")

    async def aget(self, connection_id: str, *, timeout: float | None = None) -> dict[str, Any]:
        self.gets += 1
        await asyncio.sleep(self.rng.uniform(*self.latency))
        if not is_live(int(connection_id[1:15]), self.live):
            raise GoneError(connection_id)
        return {"connectedAt": "2026-01-01T00:00:00.000Z", "identity": {"sourceIp": "1.2.3.4"}}


def engine_url() -> str:
    return pg_url().replace("postgresql://", "postgresql+psycopg://", 1)


def storage_for(url: str, prefix: str) -> Any:
    from sqlalchemy import create_engine

    from apigw_ws_storage.sqla import SqlaStorage
    from apigw_ws_storage.sqla.models import make_models

    engine = create_engine(url)
    return engine, SqlaStorage(engine, models=make_models(prefix=prefix))


def fill(engine: Any, table: str, n: int) -> float:
    """Replace the sessions with ``n`` connected ones, an hour old (one ``COPY``)."""
    started = time.monotonic()
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute(f"TRUNCATE {table} CASCADE")
        at = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
        columns = "connection_id, channel_name, connected, source_ip, user_agent, stage, api_id"
        with cur.copy(f"COPY {table} ({columns}, connected_at) FROM STDIN") as copy:
            buf = io.StringIO()
            for i in range(n):
                buf.write(f"{cid(i)}\tall\tt\t\t\tbench\tapi\t{at}\n")
                if buf.tell() > 1 << 20:
                    copy.write(buf.getvalue())
                    buf = io.StringIO()
            copy.write(buf.getvalue())
        raw.commit()
    finally:
        raw.close()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"VACUUM ANALYZE {table}")  # as autovacuum would, soon after
    return time.monotonic() - started


def heal_once(
    storage: Any, n: int, cap: float | None, live: float, latency: tuple[float, float]
) -> dict[str, Any]:
    """Heal once through ``storage`` and measure it (the figures common to both backends)."""
    # when each keyset page is handed to the engine: the rate over each tenth of the run
    pages: list[tuple[float, int]] = []
    iter_before = storage.iter_connected_before

    def timed_pages(*args: Any, **kwargs: Any) -> Any:
        for page in iter_before(*args, **kwargs):
            pages.append((time.monotonic(), len(page)))
            yield page

    storage.iter_connected_before = timed_pages

    transport = SimulatedGateway(live, latency)
    app = WebSocketApp(
        storage=storage, transport=transport, config=Config(secret="s", heal_max_rate=cap)
    )
    load = os.getloadavg()[0]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    cpu = time.process_time()
    report = app.heal()
    elapsed = time.monotonic() - started
    cpu = time.process_time() - cpu
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    del storage.iter_connected_before
    app.close()
    # pages are handed over at most two ahead of the engine, so past the first three (taken
    # at once) the time between the first pages of two consecutive tenths is the time the
    # engine took for the first of them
    tenths = []
    steady = pages[3:]
    step = max(1, len(steady) // 10)
    starts = range(0, len(steady), step)
    for i, j in itertools.pairwise(starts):
        took = steady[j][0] - steady[i][0]
        tenths.append(sum(size for _, size in steady[i:j]) / max(1e-9, took))
    return {
        "sessions": n,
        "cap": cap,
        "live": live,
        "seconds": elapsed,
        "rate": report.checked / elapsed,
        "checked": report.checked,
        "alive": report.alive,
        "gone": len(report.gone),
        "unknown": len(report.unknown),
        "marked": report.marked,
        "gets": transport.gets,
        "cpu_us_per_session": 1e6 * cpu / n,
        "pages": len(pages),
        "tenths": tenths,
        "peak_rss_mb": rss / 1024,
        "rss_before_mb": rss_before / 1024,
        "load_average": load,
    }


def checked(result: dict[str, Any], down: set[str], n: int, live: float) -> dict[str, Any]:
    """The correctness figures: ``down`` (the disconnected ids) against the 410 ids."""
    expected = {cid(i) for i in range(n) if not is_live(i, live)}
    return {
        "correct": down == expected and result["checked"] == n,
        "wrongly_marked": len(down - expected),
        "missed": len(expected - down),
    }


def one_run(
    n: int, cap: float | None, live: float, latency: tuple[float, float], prefix: str
) -> dict[str, Any]:
    """Seed ``n`` sessions, heal once, check the outcome (runs in a child process)."""
    from sqlalchemy import event, select

    engine, storage = storage_for(engine_url(), prefix)
    storage.create_tables()
    table = storage.models.session_table
    fill_s = fill(engine, table.name, n)
    counts = {"statements": 0, "commits": 0, "selects": 0, "updates": 0, "deletes": 0}

    @event.listens_for(engine, "before_cursor_execute")
    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        counts["statements"] += 1
        verb = statement.lstrip().split(None, 1)[0].lower()
        if verb + "s" in counts:
            counts[verb + "s"] += 1

    @event.listens_for(engine, "commit")
    def committed(conn: Any) -> None:
        counts["commits"] += 1

    sql_time = {"select": 0.0, "update": 0.0, "delete": 0.0, "other": 0.0}

    @event.listens_for(engine, "after_cursor_execute")
    def timed(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        took = time.monotonic() - conn.info.pop("heal_bench_t0", time.monotonic())
        verb = statement.lstrip().split(None, 1)[0].lower()
        sql_time[verb if verb in sql_time else "other"] += took

    @event.listens_for(engine, "before_cursor_execute")
    def start(conn: Any, *args: Any) -> None:
        conn.info["heal_bench_t0"] = time.monotonic()

    result = heal_once(storage, n, cap, live, latency)
    for name, fn in [
        ("before_cursor_execute", count),
        ("commit", committed),
        ("after_cursor_execute", timed),
        ("before_cursor_execute", start),
    ]:
        event.remove(engine, name, fn)
    with engine.connect() as conn:
        down = set(
            conn.execute(
                select(table.c.connection_id).where(table.c.connected == False)  # noqa: E712
            ).scalars()
        )
    engine.dispose()
    return {
        **result,
        **checked(result, down, n, live),
        "sql_seconds": sum(sql_time.values()),
        "sql_seconds_by_verb": sql_time,
        "fill_seconds": fill_s,
        **counts,
    }


# --- the Django ORM storage (--backend django) ------------------------------------------------


def django_database(prefix: str) -> str:
    """The throwaway database of a ``--backend django`` invocation: ``heal_bench_<pid>``."""
    return prefix.rstrip("_")


def pg_admin(sql: str) -> None:
    """Run ``sql`` outside a transaction on the configured server (CREATE/DROP DATABASE)."""
    import psycopg

    with psycopg.connect(pg_url(), autocommit=True) as conn:
        conn.execute(sql)


def pg_url() -> str:
    return os.environ.get("APIGW_WS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def setup_django(database: str) -> None:
    """Configure Django on ``database`` (stock PostgreSQL backend, persistent connection,
    ``DEBUG`` off) and create the tables with ``migrate``."""
    import django
    from django.conf import settings
    from django.core.management import call_command

    parts = urlsplit(pg_url())
    settings.configure(
        DEBUG=False,
        SECRET_KEY="heal-bench-not-secret",
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "apigw_ws_storage.django_orm",
        ],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": database,
                "USER": unquote(parts.username or ""),
                "PASSWORD": unquote(parts.password or ""),
                "HOST": parts.hostname or "",
                "PORT": str(parts.port or 5432),
                "CONN_MAX_AGE": None,  # persistent, as in production
            }
        },
        LOGGING_CONFIG=None,
    )
    django.setup()
    call_command("migrate", verbosity=0)


def fill_django(n: int) -> float:
    """Replace the sessions with ``n`` connected ones, an hour old (one ``COPY`` on the
    psycopg connection under Django's, which is in autocommit)."""
    from django.db import connection

    from apigw_ws_storage.django_orm.models import WebSocketSession

    started = time.monotonic()
    table = connection.ops.quote_name(WebSocketSession._meta.db_table)
    connection.ensure_connection()
    raw = connection.connection
    at = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S+00")
    columns = "connection_id, channel_name, connected, source_ip, user_agent, stage, api_id"
    with raw.cursor() as cur:
        cur.execute(f"TRUNCATE {table} RESTART IDENTITY CASCADE")
        with cur.copy(f"COPY {table} ({columns}, connected_at, attributes) FROM STDIN") as copy:
            buf = io.StringIO()
            for i in range(n):
                buf.write(f"{cid(i)}\tall\tt\t\t\tbench\tapi\t{at}\t{{}}\n")
                if buf.tell() > 1 << 20:
                    copy.write(buf.getvalue())
                    buf = io.StringIO()
            copy.write(buf.getvalue())
        cur.execute(f"VACUUM ANALYZE {table}")  # as autovacuum would, soon after
    return time.monotonic() - started


def one_run_django(
    n: int, cap: float | None, live: float, latency: tuple[float, float], prefix: str
) -> dict[str, Any]:
    """As :func:`one_run`, through ``DjangoStorage`` (runs in a child process)."""
    setup_django(django_database(prefix))
    from django.db import connection

    from apigw_ws_storage.django_orm.models import WebSocketSession
    from apigw_ws_storage.django_orm.storage import DjangoStorage

    fill_s = fill_django(n)
    counts = {"statements": 0, "commits": 0, "selects": 0, "updates": 0, "deletes": 0}
    sql_time = {"select": 0.0, "update": 0.0, "delete": 0.0, "other": 0.0}

    def counted(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        counts["statements"] += 1
        verb = sql.lstrip().split(None, 1)[0].lower()
        if verb + "s" in counts:
            counts[verb + "s"] += 1
        t0 = time.monotonic()
        try:
            return execute(sql, params, many, context)
        finally:
            sql_time[verb if verb in sql_time else "other"] += time.monotonic() - t0

    # healing runs its storage calls on this thread (the engine runs on the transport's
    # loop), so this thread's connection sees every statement
    commit = connection.commit

    def committed() -> None:
        counts["commits"] += 1
        commit()

    connection.commit = committed
    try:
        with connection.execute_wrapper(counted):
            result = heal_once(DjangoStorage(), n, cap, live, latency)
    finally:
        del connection.commit
    down = set(
        WebSocketSession.objects.filter(connected=False).values_list("connection_id", flat=True)
    )
    connection.close()
    return {
        **result,
        **checked(result, down, n, live),
        "sql_seconds": sum(sql_time.values()),
        "sql_seconds_by_verb": sql_time,
        "fill_seconds": fill_s,
        **counts,
    }


def cap_arg(value: str) -> float | None:
    return None if value.lower() == "none" else float(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument(
        "--caps", type=cap_arg, nargs="+", default=[None, 500.0], help="heal_max_rate; none"
    )
    parser.add_argument("--live", type=float, default=0.7, help="fraction answered 200")
    parser.add_argument("--latency-ms", type=float, nargs=2, default=[2.0, 5.0])
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument(
        "--backend",
        choices=["sqla", "django"],
        default="sqla",
        help="the storage: SqlaStorage (default) or the Django ORM's DjangoStorage",
    )
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default=f"{PREFIX}{os.getpid()}_", help=argparse.SUPPRESS)
    args = parser.parse_args()
    latency = (args.latency_ms[0] / 1000, args.latency_ms[1] / 1000)
    if args.one:
        run = one_run_django if args.backend == "django" else one_run
        print(json.dumps(run(args.sizes[0], args.caps[0], args.live, latency, args.prefix)))
        return
    if args.backend == "django":
        import django

        storage_name = f"DjangoStorage, Django {django.get_version()}"
        pg_admin(f'CREATE DATABASE "{django_database(args.prefix)}"')
    else:
        storage_name = "SqlaStorage"
    print(
        f"heal(), PostgreSQL ({storage_name}), simulated GET {args.latency_ms[0]:g}-"
        f"{args.latency_ms[1]:g} ms, {args.live:.0%} live, python {sys.version.split()[0]}, "
        f"{os.cpu_count()} cores",
        flush=True,
    )
    results = []
    try:
        for cap in args.caps:
            for n in args.sizes:
                child = [sys.executable, __file__, "--one", "--sizes", str(n)]
                child += ["--caps", "none" if cap is None else str(cap), "--live", str(args.live)]
                child += ["--latency-ms", *map(str, args.latency_ms), "--prefix", args.prefix]
                child += ["--backend", args.backend]
                out = subprocess.run(child, check=True, capture_output=True, text=True).stdout
                r = json.loads(out.strip().splitlines()[-1])
                results.append(r)
                cap_s = "unpaced" if cap is None else f"cap {cap:g}/s"
                check = (
                    "OK: exactly the 410 ids disconnected, live ones untouched"
                    if r["correct"]
                    else f"WRONG: {r['wrongly_marked']} wrongly marked, {r['missed']} missed"
                )
                by_verb = ", ".join(f"{k} {v:.2f}" for k, v in r["sql_seconds_by_verb"].items())
                print(
                    f"  {n:>9,} sessions, {cap_s:>12}: {r['seconds']:7.2f} s, "
                    f"{r['rate']:6.0f} checked/s; {r['alive']} live, {r['gone']} gone, "
                    f"{r['unknown']} unknown, {r['marked']} marked; SQL {r['statements']} "
                    f"statements ({r['selects']} SELECT, {r['updates']} UPDATE, "
                    f"{r['deletes']} DELETE), {r['commits']} commits, "
                    f"{r['sql_seconds']:.2f} s in SQL ({by_verb}); "
                    f"{r['pages']} pages, by tenth {min(r['tenths'], default=0):.0f}-"
                    f"{max(r['tenths'], default=0):.0f}/s; peak RSS "
                    f"{r['peak_rss_mb']:.0f} MB (before heal {r['rss_before_mb']:.0f}); CPU "
                    f"{r['cpu_us_per_session']:.0f} us/session; load {r['load_average']:.1f}; "
                    f"{check}",
                    flush=True,
                )
    finally:
        if args.backend == "django":
            pg_admin(f'DROP DATABASE IF EXISTS "{django_database(args.prefix)}" WITH (FORCE)')
        else:
            engine, storage = storage_for(engine_url(), args.prefix)
            storage.drop_tables()
            engine.dispose()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
