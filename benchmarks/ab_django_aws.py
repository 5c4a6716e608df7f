"""A/B: apigw-ws against django-aws-api-gateway-websockets 4.1.0 doing the same work.

Both run as Django apps with the ``django-admin startproject`` middleware stack, called
in-process through WSGI (no server, no network) exactly as API Gateway's HTTP_PROXY
integration calls them, on the same database engine, each in its own process:

* **apigw-ws** in this repository's virtualenv;
* **django-aws-api-gateway-websockets 4.1.0** in a virtualenv of its own, which this script
  creates on first use (``--venv``, default ``/tmp/apigw-ws-ab-dagw-4.1.0``: ``python -m venv``
  then ``pip install django-aws-api-gateway-websockets==4.1.0 psycopg[binary]``).

The work, per event (each side does what its documentation asks of a deployment):

* **token**: a logged-in user (session cookie, CSRF token) POSTs to the token endpoint;
* **connect**: ``$connect`` with a fresh token (issued beforehand, not timed), a new
  connection id and client IP, the ``Origin`` header; the session and its channel stored;
* **message**: a message to an ``echo`` handler on a connected session, answered with JSON.

The two processes are driven **interleaved** from this one invocation: for each round and
each operation, side A runs a batch of ``--events`` events, then side B, the order
alternating every round, so that both see the same machine load. Printed: the median
microseconds per event over ``--rounds`` rounds, min-max, and the ratio apigw-ws / theirs,
as wall time and as the CPU time of the app's process (which leaves out waiting for the
disk and, on PostgreSQL, the server's own work: on a machine shared with other work, the
steadier of the two).
PostgreSQL: a throwaway database per side on ``APIGW_WS_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``), dropped at the end. Prints numbers; asserts
nothing.

Usage::

    .venv/bin/python benchmarks/ab_django_aws.py
    .venv/bin/python benchmarks/ab_django_aws.py --db sqlite --events 200 --rounds 7
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
PACKAGE = "django-aws-api-gateway-websockets==4.1.0"
DEFAULT_VENV = "/tmp/apigw-ws-ab-dagw-4.1.0"
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"
SECRET = "bench-gateway-secret-0123456789abcdef"
HOST = "backend.example.com"
ORIGIN = f"https://{HOST}"
API_ID = "benchapi01"
CSRF = "C" * 32
OPS = ("token", "connect", "message")
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


# --- WSGI calls ------------------------------------------------------------------------------


def environ(
    path: str, headers: dict[str, str], body: bytes = b"", query: str = ""
) -> dict[str, Any]:
    env: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": HOST,
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


#: (wall, CPU of this process) microseconds per event
Timing = tuple[float, float]


def timed(app: WSGIApp, envs: list[dict[str, Any]], what: str) -> tuple[Timing, list[bytes]]:
    """Wall and CPU microseconds per call over ``envs``; every answer must be 200."""
    bodies = []
    start, cpu = time.perf_counter(), time.process_time()
    for env in envs:
        status, body = call(app, env)
        if not status.startswith("200"):
            raise RuntimeError(f"{what}: {status} {body[:300]!r}")
        bodies.append(body)
    n = len(envs)
    wall = (time.perf_counter() - start) / n * 1e6
    return (wall, (time.process_time() - cpu) / n * 1e6), bodies


# --- databases -------------------------------------------------------------------------------


def database_settings(db: str, name: str, tmp: str) -> dict[str, Any]:
    if db == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": f"{tmp}/{name}.sqlite3"}
    parts = urlsplit(os.environ.get("APIGW_WS_TEST_POSTGRES_URL", PG_DEFAULT))
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": parts.username or "",
        "PASSWORD": parts.password or "",
        "HOST": parts.hostname,
        "PORT": str(parts.port or 5432),
        "CONN_MAX_AGE": None,  # persistent connections, as in production
    }


def pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(
        os.environ.get("APIGW_WS_TEST_POSTGRES_URL", PG_DEFAULT), autocommit=True
    ) as conn:
        conn.execute(sql)


def common_settings(database: dict[str, Any], apps: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "DEBUG": False,
        "SECRET_KEY": "bench-not-secret",
        "ALLOWED_HOSTS": [HOST],
        "USE_TZ": True,
        "ROOT_URLCONF": __name__,
        "DEFAULT_AUTO_FIELD": "django.db.models.BigAutoField",
        "INSTALLED_APPS": [
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.messages",
            *apps,
        ],
        "MIDDLEWARE": [  # what `django-admin startproject` generates
            "django.middleware.security.SecurityMiddleware",
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
            "django.middleware.clickjacking.XFrameOptionsMiddleware",
        ],
        "CSRF_TRUSTED_ORIGINS": [ORIGIN],
        "DATABASES": {"default": database},
        "LOGGING_CONFIG": None,
        **extra,
    }


def login_cookie() -> str:
    """A logged-in user's session cookie plus the CSRF cookie."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    user = get_user_model().objects.create_user("bench", password=None)
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}; csrftoken={CSRF}"


def token_headers(cookie: str) -> dict[str, str]:
    return {
        "Host": HOST,
        "Cookie": cookie,
        "X-CSRFToken": CSRF,
        "Origin": ORIGIN,
        "Referer": ORIGIN + "/",
        "Content-Type": "application/json",
    }


class Counter:
    """Fresh connection ids and client IPs (each connect from its own address, so that no
    side's per-IP connect limit decides the result)."""

    def __init__(self) -> None:
        self.n = 0

    def next(self) -> tuple[str, str]:
        self.n += 1
        n = self.n
        cid = f"Bench{n:010d}AA="
        return cid, f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"


# --- the apigw-ws side -----------------------------------------------------------------------


def ours(db: str, name: str, tmp: str) -> Callable[[str, int], Timing]:
    import django
    from django.conf import settings

    sys.path[:0] = [str(ROOT / p) for p in ("", "adapters/django", "storage")]
    settings.configure(
        **common_settings(
            database_settings(db, name, tmp),
            ["apigw_ws_django", "apigw_ws_storage.django_orm"],
            APIGW_WS={
                "SECRET": SECRET,
                "TRANSPORT": "apigw_ws_core.transport.RecordingTransport",
                "TOKEN_RATE_PER_USER": "1000000/60",  # counted at $connect, never reached
            },
        )
    )
    django.setup()
    from django.core.management import call_command
    from django.core.wsgi import get_wsgi_application
    from django.urls import include, path

    from apigw_ws_core.testing import gateway_headers
    from apigw_ws_django import WebSocketView, handler

    class BenchView(WebSocketView):
        @handler
        def echo(self, request: Any, message: dict[str, Any]) -> dict[str, Any]:
            return {"type": "echo", "text": message.get("text")}

    global urlpatterns
    urlpatterns = [
        path("ws/", include(BenchView.urls())),
        path("ws-token/", include("apigw_ws_django.urls")),
    ]
    call_command("migrate", verbosity=0)
    app = get_wsgi_application()
    cookie = login_cookie()
    ids = Counter()
    connected: list[str] = []
    message = json.dumps({"action": "echo", "text": "hello"}).encode()

    def tokens(n: int) -> tuple[Timing, list[str]]:
        env = [environ("/ws-token/", token_headers(cookie), b"{}") for _ in range(n)]
        us, bodies = timed(app, env, "token")
        return us, [json.loads(b)["token"] for b in bodies]

    def run(op: str, n: int) -> Timing:
        if op == "token":
            return tokens(n)[0]
        if op == "connect":
            _, toks = tokens(n)
            envs, new = [], []
            for tok in toks:
                cid, ip = ids.next()
                headers = gateway_headers("connect", cid, secret=SECRET, source_ip=ip)
                headers["Origin"] = ORIGIN
                envs.append(environ("/ws/connect", headers, query=f"channel=bench&ws_token={tok}"))
                new.append(cid)
            us, _ = timed(app, envs, "connect")
            connected[:] = new
            return us
        envs = [
            environ("/ws/default", gateway_headers("default", cid, secret=SECRET), message)
            for cid in connected[:n]
        ]
        return timed(app, envs, "message")[0]

    return run


# --- the django-aws-api-gateway-websockets side ----------------------------------------------


def theirs(db: str, name: str, tmp: str) -> Callable[[str, int], Timing]:
    import django
    from django.conf import settings

    settings.configure(
        **common_settings(
            database_settings(db, name, tmp),
            ["django_aws_api_gateway_websockets"],
            AWS_REGION_NAME="us-east-1",
            WEBSOCKETS={
                "gateway_secret": SECRET,
                "token_rate_limit_per_minute": 1000000,  # counted, never reached
                "rate_limit_max_attempts": 1000000,
                "push_changes_to_aws": False,
            },
        )
    )
    django.setup()
    from django.core.management import call_command
    from django.core.wsgi import get_wsgi_application
    from django.http import JsonResponse
    from django.urls import path
    from django_aws_api_gateway_websockets.models import GATEWAY_SECRET_HEADER, ApiGateway
    from django_aws_api_gateway_websockets.views import WebSocketTokenView, WebSocketView

    class BenchView(WebSocketView):
        def echo(self, request: Any, *args: Any, **kwargs: Any) -> JsonResponse:
            return JsonResponse({"type": "echo", "text": self.body.get("text")})

    global urlpatterns
    urlpatterns = [
        path("ws/<slug:route>", BenchView.as_view()),
        path("ws-token/", WebSocketTokenView.as_view()),
    ]
    call_command("migrate", verbosity=0)
    ApiGateway.objects.bulk_create([ApiGateway(api_name="bench", api_id=API_ID)])
    app = get_wsgi_application()
    cookie = login_cookie()
    ids = Counter()
    connected: list[str] = []
    message = json.dumps({"handler": "echo", "text": "hello"}).encode()

    def gateway(cid: str, ip: str, connect: bool) -> dict[str, str]:
        headers = {
            "Host": HOST,
            "X-Forwarded-For": ip,
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Port": "443",
            "X-Real-Ip": ip,
            "X-Amzn-Trace-Id": "Root=1-00000000-000000000000000000000000",
            "Connectionid": cid,
            "User-Agent": "Mozilla/5.0 (bench)",
            "X-Amzn-Apigateway-Api-Id": API_ID,
            GATEWAY_SECRET_HEADER: SECRET,
        }
        if connect:
            headers.update(
                {
                    "Cookie": cookie,
                    "Origin": ORIGIN,
                    "Sec-Websocket-Extensions": "permessage-deflate",
                    "Sec-Websocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                    "Sec-Websocket-Version": "13",
                }
            )
        return headers

    def tokens(n: int) -> tuple[Timing, list[str]]:
        env = [environ("/ws-token/", token_headers(cookie), b"{}") for _ in range(n)]
        us, bodies = timed(app, env, "token")
        return us, [json.loads(b)["token"] for b in bodies]

    def run(op: str, n: int) -> Timing:
        if op == "token":
            return tokens(n)[0]
        if op == "connect":
            _, toks = tokens(n)
            envs, new = [], []
            for tok in toks:
                cid, ip = ids.next()
                envs.append(
                    environ(
                        "/ws/connect", gateway(cid, ip, True), query=f"channel=bench&ws_token={tok}"
                    )
                )
                new.append(cid)
            us, _ = timed(app, envs, "connect")
            connected[:] = new
            return us
        envs = [
            environ("/ws/default", gateway(cid, "10.9.9.9", False), message)
            for cid in connected[:n]
        ]
        return timed(app, envs, "message")[0]

    return run


# --- worker protocol -------------------------------------------------------------------------


def worker(side: str, db: str, name: str) -> None:
    """Set up one side, then answer ``{"op", "n"}`` lines with ``{"us": ...}`` lines."""
    tmp = tempfile.mkdtemp(prefix="apigw-ws-ab-")
    out = sys.stdout
    sys.stdout = sys.stderr  # keep the protocol channel clean
    run = (ours if side == "ours" else theirs)(db, name, tmp)
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("op") == "quit":
            break
        try:
            wall, cpu = run(request["op"], int(request["n"]))
            reply: dict[str, Any] = {"us": wall, "cpu": cpu}
        except Exception as exc:  # report, do not hang the driver
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    from django.db import connections

    connections.close_all()


class Side:
    def __init__(self, label: str, python: str, side: str, db: str, name: str):
        self.label = label
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if side == "theirs":  # nothing of this repository on their path
            env.pop("PYTHONPATH", None)
        self.proc = subprocess.Popen(
            [python, __file__, "--worker", side, "--db", db, "--name", name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tempfile.gettempdir(),
        )
        self._expect("ready")

    def _expect(self, key: str) -> Any:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.label} worker died")
        data = json.loads(line)
        if "error" in data:
            raise RuntimeError(f"{self.label}: {data['error']}")
        return data if key == "*" else data[key]

    def run(self, op: str, n: int) -> Timing:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, "n": n}) + "\n")
        self.proc.stdin.flush()
        data = self._expect("*")
        return float(data["us"]), float(data["cpu"])

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.write('{"op": "quit"}\n')
            self.proc.stdin.close()
        self.proc.wait(30)


def ensure_venv(path: str) -> str:
    python = str(Path(path) / "bin" / "python")
    probe = [python, "-c", "import django_aws_api_gateway_websockets, psycopg"]
    if Path(python).exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"creating {path} with {PACKAGE} ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", path], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", PACKAGE, "psycopg[binary]"], check=True)
    return python


def compare(db: str, venv_python: str, events: int, rounds: int) -> dict[str, list[Timing]]:
    names = {"ours": f"apigw_ws_ab_ours_{os.getpid()}", "theirs": f"apigw_ws_ab_dagw_{os.getpid()}"}
    if db == "postgres":
        for name in names.values():
            pg_admin(f'CREATE DATABASE "{name}"')
    sides = {
        "ours": Side("apigw-ws", sys.executable, "ours", db, names["ours"]),
        "theirs": Side("django-aws 4.1.0", venv_python, "theirs", db, names["theirs"]),
    }
    samples: dict[tuple[str, str], list[Timing]] = {(side, op): [] for side in sides for op in OPS}
    try:
        for r in range(rounds + 1):  # round 0 warms up and is not counted
            order = ["ours", "theirs"] if r % 2 else ["theirs", "ours"]
            for op in OPS:
                for side in order:
                    timing = sides[side].run(op, events)
                    if r:
                        samples[(side, op)].append(timing)
    finally:
        for side in sides.values():
            side.close()
        if db == "postgres":
            for name in names.values():
                pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return {f"{side}:{op}": values for (side, op), values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--events", type=int, default=200, help="events per batch")
    parser.add_argument("--rounds", type=int, default=5, help="counted rounds per side")
    parser.add_argument("--venv", default=DEFAULT_VENV, help="virtualenv for 4.1.0")
    parser.add_argument("--worker", choices=["ours", "theirs"], help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.db, args.name)
        return
    venv_python = ensure_venv(args.venv)
    print(
        f"A/B apigw-ws vs {PACKAGE}: {args.events} events per batch, {args.rounds} rounds, "
        f"interleaved; {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.2f} at start"
    )
    for db in ["sqlite", "postgres"] if args.db == "both" else [args.db]:
        results = compare(db, venv_python, args.events, args.rounds)
        load = os.getloadavg()[0]
        print(f"\n{db} (load average {load:.2f}), microseconds per event: median (min-max)")
        for op in OPS:
            ours_t, theirs_t = results[f"ours:{op}"], results[f"theirs:{op}"]
            for kind, i in (("wall", 0), ("cpu", 1)):
                a_s = [t[i] for t in ours_t]
                b_s = [t[i] for t in theirs_t]
                ma, mb = statistics.median(a_s), statistics.median(b_s)
                ratios = sorted(x / y for x, y in zip(a_s, b_s, strict=True))
                print(
                    f"  {op:8s} {kind:4s} apigw-ws {ma:7.0f} ({min(a_s):.0f}-{max(a_s):.0f})  "
                    f"django-aws {mb:7.0f} ({min(b_s):.0f}-{max(b_s):.0f})  "
                    f"ratio {ma / mb:.2f}x (rounds {ratios[0]:.2f}-{ratios[-1]:.2f})"
                )


if __name__ == "__main__":
    main()
