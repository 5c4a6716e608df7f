"""Per-event cost of $connect, messages and $disconnect through the Django and Flask adapters.

Each (framework, database) pair runs in its own process. Requests are WSGI calls made
in-process (no HTTP server, no network), shaped exactly as API Gateway's HTTP_PROXY
integration sends them. They go through each framework's usual middleware: Django's
``startproject`` stack, and plain Flask. Beside them runs **the floor**: a bare view of the
same framework, on the same database and middleware, that reads the same request and makes
one indexed ``SELECT`` (the session row by connection id) before answering JSON. A message
event cannot cost less than that: it needs at least one indexed read.

Measured per event (median of ``--repeat`` passes over ``--events`` connections):

* connect: verify, rate limit, store the session and its channel membership;
* message: verify, load the session, rate limit, dispatch to an ``echo`` handler, reply;
* disconnect: mark the session gone;
* floor: the bare view;
* send plain / send history: a message whose handler sends ``{"text": ...}`` to a channel
  with no members, once without history and once to a history channel (``Config.history``
  rule ``hist-*``, size 100): the difference is what channel history costs per send (the
  append), since the fan-out is the same for both.

Beside the time, each case reports the SQL statements it made per event (``BEGIN``/``COMMIT``
not counted), from a statement counter on the connection (Django ``execute_wrapper``,
SQLAlchemy ``before_cursor_execute``).

The rate limiter is the default (``$connect`` and token counters in the database, the
per-connection message counter in process), and also every counter in Django's cache
(``apigw_ws_django.limits.CacheRateLimiter``, locmem) or in the core's in-process limiter
for Flask. Transport: a
``RecordingTransport`` (no network). Connections are anonymous (``REQUIRE_TOKEN`` off), so
``$connect`` makes no token lookup.

PostgreSQL: ``APIGW_WS_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``).
A throwaway database ``apigw_ws_bench_<pid>`` is created on that server and dropped
afterwards.

Usage::

    .venv/bin/python benchmarks/events.py
    .venv/bin/python benchmarks/events.py --events 500 --framework flask --db sqlite

This prints numbers; it asserts nothing (tests assert behaviour).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
for sub in ("", "adapters/django", "adapters/flask", "storage"):
    sys.path.insert(0, str(ROOT / sub))

SECRET = "bench-gateway-secret-0123456789abcdef"
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


# --- calling a WSGI app the way API Gateway calls the backend -----------------------------


def environ(path: str, headers: dict[str, str], body: bytes = b"", query: str = "") -> dict:
    env: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "backend.example.com",
        "SERVER_PORT": "443",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "10.0.0.1",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "https",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "HTTP_HOST": "backend.example.com",
    }
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        if key == "CONTENT_TYPE":
            env["CONTENT_TYPE"] = value
        else:
            env["HTTP_" + key] = value
    return env


def call(app: WSGIApp, env: dict[str, Any]) -> tuple[str, bytes]:
    status: list[str] = []

    def start_response(s: str, headers: list[Any], exc_info: Any = None) -> None:
        status.append(s)

    result = app(env, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close:
            close()
    return status[0], body


_ips: dict[str, str] = {}


def gateway(route: str, cid: str) -> dict[str, str]:
    """The integration headers; each connection from its own client IP (the default
    connect limit is 60 per IP per minute)."""
    from apigw_ws_core.testing import gateway_headers

    n = len(_ips)
    ip = _ips.setdefault(cid, f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}")
    return gateway_headers(route, cid, secret=SECRET, source_ip=ip)


CASES = ("connect", "message", "disconnect", "floor", "send_plain", "send_history")


def measure(
    app: WSGIApp,
    prefix: str,
    floor_path: str,
    n: int,
    repeat: int,
    statements: Callable[[], int] = lambda: 0,
) -> dict[str, float]:
    """Median µs per event over ``repeat`` passes of n connects, messages, disconnects (and
    ``<case>_sql``: statements per event, from the ``statements`` counter)."""
    from apigw_ws_core.testing import new_connection_id

    samples: dict[str, list[float]] = {k: [] for k in CASES}
    sql: dict[str, float] = {}

    def timed(key: str, envs: list[dict[str, Any]], expect: str) -> None:
        before = statements()
        start = time.perf_counter()
        for env in envs:
            status, body = call(app, env)
            if not status.startswith(expect):
                raise RuntimeError(f"{key}: {status} {body[:200]!r}")
        samples[key].append((time.perf_counter() - start) / len(envs) * 1e6)
        sql[f"{key}_sql"] = (statements() - before) / len(envs)

    message = json.dumps({"action": "echo", "text": "hello"}).encode()
    for r in range(repeat + 1):  # the first pass warms up and is not counted
        ids = [new_connection_id() for _ in range(n)]
        timed(
            "connect",
            [
                environ(f"{prefix}/connect", gateway("connect", c), query="channel=bench")
                for c in ids
            ],
            "200",
        )
        timed(
            "message",
            [environ(f"{prefix}/default", gateway("default", c), message) for c in ids],
            "200",
        )
        timed(
            "floor",
            [environ(floor_path, gateway("default", c), message) for c in ids],
            "200",
        )
        for case, room in (("send_plain", "plain-room"), ("send_history", "hist-room")):
            say = json.dumps({"action": "say", "text": "hello", "room": room}).encode()
            envs = [environ(f"{prefix}/default", gateway("default", c), say) for c in ids]
            timed(case, envs, "200")
        timed(
            "disconnect",
            [environ(f"{prefix}/disconnect", gateway("disconnect", c)) for c in ids],
            "200",
        )
        if r == 0:
            for v in samples.values():
                v.clear()
    return {**{k: statistics.median(v) for k, v in samples.items()}, **sql}


# --- databases -----------------------------------------------------------------------------


class PgDatabase:
    """A throwaway PostgreSQL database on the test server."""

    def __init__(self, url: str):
        import psycopg

        self.server_url = url
        self.name = f"apigw_ws_bench_{os.getpid()}"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        parts = urlsplit(url)
        self.url = parts._replace(path="/" + self.name).geturl()
        self.parts = urlsplit(self.url)

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def pg_url() -> str | None:
    import socket

    url = os.environ.get("APIGW_WS_TEST_POSTGRES_URL", PG_DEFAULT)
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), 2):
            return url
    except OSError:
        return None


# --- Django --------------------------------------------------------------------------------


def django_worker(db: str, n: int, repeat: int, limiter: str) -> dict[str, Any]:
    import django
    from django.conf import settings

    pg = PgDatabase(pg_url() or PG_DEFAULT) if db == "postgres" else None
    tmp = tempfile.mkdtemp(prefix="apigw-ws-bench-")
    try:
        if pg is not None:
            database = {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": pg.name,
                "USER": pg.parts.username or "",
                "PASSWORD": pg.parts.password or "",
                "HOST": pg.parts.hostname,
                "PORT": str(pg.parts.port or 5432),
                "CONN_MAX_AGE": None,  # persistent connections, as in production
            }
        else:
            database = {"ENGINE": "django.db.backends.sqlite3", "NAME": f"{tmp}/db.sqlite3"}
        apigw = {
            "SECRET": SECRET,
            "REQUIRE_TOKEN": False,
            "TRANSPORT": "apigw_ws_core.transport.RecordingTransport",
            "HISTORY": [{"pattern": "hist-*", "size": 100}],
        }
        if limiter == "cache":
            apigw["RATE_LIMITER"] = "apigw_ws_django.limits.CacheRateLimiter"
        settings.configure(
            DEBUG=False,
            SECRET_KEY="bench-not-secret",
            ALLOWED_HOSTS=["*"],
            USE_TZ=True,
            ROOT_URLCONF=__name__,
            DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
            INSTALLED_APPS=[
                "django.contrib.auth",
                "django.contrib.contenttypes",
                "django.contrib.sessions",
                "django.contrib.messages",
                "apigw_ws_django",
                "apigw_ws_storage.django_orm",
            ],
            MIDDLEWARE=[  # what `django-admin startproject` generates
                "django.middleware.security.SecurityMiddleware",
                "django.contrib.sessions.middleware.SessionMiddleware",
                "django.middleware.common.CommonMiddleware",
                "django.middleware.csrf.CsrfViewMiddleware",
                "django.contrib.auth.middleware.AuthenticationMiddleware",
                "django.contrib.messages.middleware.MessageMiddleware",
                "django.middleware.clickjacking.XFrameOptionsMiddleware",
            ],
            DATABASES={"default": database},
            CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
            APIGW_WS=apigw,
            LOGGING_CONFIG=None,
        )
        django.setup()
        from django.core.management import call_command
        from django.core.wsgi import get_wsgi_application
        from django.http import HttpRequest, JsonResponse
        from django.urls import include, path
        from django.views.decorators.csrf import csrf_exempt

        from apigw_ws_django import WebSocketView, handler
        from apigw_ws_storage.django_orm.models import WebSocketSession

        class BenchView(WebSocketView):
            @handler
            def echo(self, request: Any, message: dict[str, Any]) -> dict[str, Any]:
                return {"type": "echo", "text": message.get("text")}

            @handler
            def say(self, request: Any, message: dict[str, Any]) -> None:
                self.context.send({"text": message.get("text")}, channel=message["room"])

        @csrf_exempt
        def bare(request: HttpRequest) -> JsonResponse:
            """The floor: read the request, one indexed SELECT, answer JSON."""
            cid = request.headers["X-Apigw-Ws-Connection-Id"]
            body = json.loads(request.body)
            channel = (
                WebSocketSession.objects.filter(connection_id=cid)
                .values_list("channel_name", flat=True)
                .first()
            )
            return JsonResponse({"channel": channel, "action": body.get("action")})

        global urlpatterns
        urlpatterns = [path("ws/", include(BenchView.urls())), path("bare", bare)]
        call_command("migrate", verbosity=0)
        from django.db import connection, connections

        count = [0]

        def counting(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
            count[0] += 1
            return execute(sql, params, many, context)

        with connection.execute_wrapper(counting):
            result = measure(get_wsgi_application(), "/ws", "/bare", n, repeat, lambda: count[0])
        connections.close_all()
        return result
    finally:
        if pg is not None:
            pg.drop()


# --- Flask --------------------------------------------------------------------------------


def flask_worker(db: str, n: int, repeat: int, limiter: str) -> dict[str, Any]:
    from flask import Flask, request
    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import sessionmaker

    from apigw_ws_core.transport import RecordingTransport
    from apigw_ws_flask import ApigwWebSocket
    from apigw_ws_storage.sqla import SqlaStorage

    pg = PgDatabase(pg_url() or PG_DEFAULT) if db == "postgres" else None
    tmp = tempfile.mkdtemp(prefix="apigw-ws-bench-")
    try:
        if pg is not None:
            url = "postgresql+psycopg://" + pg.url.split("://", 1)[1]
            engine = create_engine(url, pool_size=5)
        else:
            engine = create_engine(f"sqlite:///{tmp}/db.sqlite3")
        factory = sessionmaker(engine)
        storage = SqlaStorage(factory)
        storage.create_tables()
        rate_limiter = None
        if limiter == "cache":
            from apigw_ws_core.limits import MemoryRateLimiter

            rate_limiter = MemoryRateLimiter()
        app = Flask("bench")
        app.config.update(
            APIGW_WS_SECRET=SECRET,
            APIGW_WS_REQUIRE_TOKEN=False,
            APIGW_WS_HISTORY=[{"pattern": "hist-*", "size": 100}],
        )
        ws = ApigwWebSocket(
            storage=storage, transport=RecordingTransport(), rate_limiter=rate_limiter
        )

        @ws.handler("echo")
        def echo(ctx: Any, message: dict[str, Any]) -> dict[str, Any]:
            return {"type": "echo", "text": message.get("text")}

        @ws.handler("say")
        def say(ctx: Any, message: dict[str, Any]) -> None:
            ctx.send({"text": message.get("text")}, channel=message["room"])

        ws.init_app(app)
        from sqlalchemy import event

        count = [0]

        @event.listens_for(engine, "before_cursor_execute")
        def counting(*args: Any) -> None:
            count[0] += 1

        sessions = storage.models.session_table

        @app.post("/bare")
        def bare() -> dict[str, Any]:
            """The floor: read the request, one indexed SELECT, answer JSON."""
            cid = request.headers["X-Apigw-Ws-Connection-Id"]
            body = json.loads(request.get_data())
            with factory() as s:
                channel = s.execute(
                    select(sessions.c.channel_name).where(sessions.c.connection_id == cid)
                ).scalar()
            return {"channel": channel, "action": body.get("action")}

        try:
            return measure(app.wsgi_app, "/ws", "/bare", n, repeat, lambda: count[0])
        finally:
            engine.dispose()
    finally:
        if pg is not None:
            pg.drop()


urlpatterns: list[Any] = []


# --- driver -------------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        framework, db, n, repeat, limiter = sys.argv[2:7]
        worker = django_worker if framework == "django" else flask_worker
        print(json.dumps(worker(db, int(n), int(repeat), limiter)))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1000, help="connections per pass")
    parser.add_argument("--repeat", type=int, default=3, help="passes (median reported)")
    parser.add_argument("--framework", action="append", choices=["django", "flask"])
    parser.add_argument("--db", action="append", choices=["sqlite", "postgres"])
    args = parser.parse_args()
    frameworks = args.framework or ["django", "flask"]
    dbs = args.db or ["sqlite", "postgres"]
    if "postgres" in dbs and pg_url() is None:
        print("PostgreSQL not reachable: set APIGW_WS_TEST_POSTGRES_URL; skipping it")
        dbs = [d for d in dbs if d != "postgres"]
    print(
        f"per-event cost, µs (median of {args.repeat} passes x {args.events} connections); "
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    header = (
        f"{'framework':<8} {'database':<9} {'limiter':<8} {'floor':>7} {'connect':>8} "
        f"{'message':>8} {'disconn.':>8} {'send':>6} {'send+h':>7}  message/floor"
        "  SQL statements per event: connect/message/disconnect/send/send+history"
    )
    print(header)
    print("-" * len(header))
    for framework in frameworks:
        for db in dbs:
            for limiter in ("db", "cache"):
                proc = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--worker",
                        framework,
                        db,
                        str(args.events),
                        str(args.repeat),
                        limiter,
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if proc.returncode != 0:
                    print(f"{framework:<8} {db:<9} {limiter:<8} failed:\n{proc.stderr[-2000:]}")
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                stmts = "/".join(
                    f"{r[f'{k}_sql']:g}"
                    for k in ("connect", "message", "disconnect", "send_plain", "send_history")
                )
                print(
                    f"{framework:<8} {db:<9} {limiter:<8} {r['floor']:7.0f} {r['connect']:8.0f} "
                    f"{r['message']:8.0f} {r['disconnect']:8.0f} {r['send_plain']:6.0f} "
                    f"{r['send_history']:7.0f}  {r['message'] / r['floor']:.2f}x"
                    f"          {stmts}",
                    flush=True,
                )
    print(
        "\nfloor: a bare view of the same framework and database (request parsed, one indexed "
        "SELECT, JSON answer).\nlimiter db: the default, connect counters in the database and "
        "message counters in process; cache: every counter in Django's cache (locmem) / the "
        "core's in-process MemoryRateLimiter (Flask).\nsend / send+h: a message whose handler "
        "sends to a channel without members, without / with channel history (the append)."
    )


if __name__ == "__main__":
    main()
