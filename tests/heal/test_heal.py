"""Sessions heal themselves: cleanup asks API Gateway about sessions that may be stale and
marks gone exactly those it no longer knows.

* unit: memory storage and a recording transport (gone ids answer 410);
* lost ``$disconnect``s: real WebSocket clients through the local gateway, which drops
  every ``$disconnect`` call while some clients close; one default cleanup repairs them
  and leaves the live sessions alone; a message after ``$disconnect`` does not revive;
* the app process SIGKILLed with connections open (PostgreSQL, a real server process),
  clients closing while it is down, the app restarted: one default cleanup leaves storage
  matching the gateway's live connections exactly.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.credentials import Credentials

from apigw_ws_core import Config, MemoryStorage, WebSocketApp
from apigw_ws_core.events import from_http
from apigw_ws_core.heal import heal_order
from apigw_ws_core.storage import Session
from apigw_ws_core.testing import RecordingTransport, gateway_headers, new_connection_id
from apigw_ws_core.transport import TransportError
from apigw_ws_core.wsgi import make_wsgi_app

ROOT = Path(__file__).resolve().parents[2]
SECRET = "heal-secret-0123456789"


def _session(cid: str, age: float) -> Session:
    return Session(
        connection_id=cid,
        channel_name="room",
        connected_at=datetime.now(UTC) - timedelta(seconds=age),
    )


# --- unit -------------------------------------------------------------------------------


class FlakyTransport(RecordingTransport):
    """GET answers 503 for some ids (never 410): they must be left alone."""

    def __init__(self, broken: set[str], **kw: Any):
        super().__init__(**kw)
        self.broken = broken
        self.asked: list[str] = []

    def get(self, connection_id: str) -> dict[str, Any]:
        self.asked.append(connection_id)
        if connection_id in self.broken:
            raise TransportError("Management API answered 503", status=503)
        return super().get(connection_id)


def test_heal_marks_exactly_the_gone_sessions():
    storage = MemoryStorage()
    for i in range(30):
        storage.create_session(_session(f"old-{i:04d}=", 600))
    storage.create_session(_session("young-gone=", 5))
    gone = {f"old-{i:04d}=" for i in range(0, 30, 3)} | {"young-gone="}
    transport = FlakyTransport({"old-0001="}, gone=gone)
    app = WebSocketApp(
        storage=storage, transport=transport, config=Config(secret=SECRET, send_max_attempts=2)
    )

    dry = app.heal(dry_run=True)
    assert sorted(dry.gone) == sorted(gone - {"young-gone="}) and dry.marked == 0
    assert all(s.connected for s in storage.sessions.values())  # dry run: nothing changed
    assert "young-gone=" not in transport.asked  # too young to ask ($connect may run)

    report = app.heal()
    assert report.checked == 30 and report.alive == 19 and report.unknown == ("old-0001=",)
    assert report.marked == 10 and sorted(report.gone) == sorted(gone - {"young-gone="})
    connected = {cid for cid, s in storage.sessions.items() if s.connected}
    assert connected == {f"old-{i:04d}=" for i in range(30)} - gone | {"young-gone="}
    assert storage.get_session("old-0001=").connected  # an error is not a 410


def test_heal_order_starts_anywhere_and_covers_every_session_once():
    storage = MemoryStorage()
    ids = sorted(f"c{i:03d}=" for i in range(0, 100, 2))
    for cid in ids:
        storage.create_session(_session(cid, 600))
    cutoff = datetime.now(UTC) - timedelta(seconds=60)
    for start in (None, "", "c050=", "c051=", "c098=", "zzz", None):
        order = [cid for batch in heal_order(storage, cutoff, start=start) for cid in batch]
        assert sorted(order) == ids  # each once
        if start is not None:  # begins after start, then wraps around
            above = [cid for cid in ids if cid > start]
            assert order == above + [cid for cid in ids if cid <= start]


def test_runs_cut_short_by_their_deadline_reach_different_sessions():
    """A run that cannot check everything leaves the rest for later runs, which start
    elsewhere: not the same lowest ids every time."""
    storage = MemoryStorage()
    for _ in range(400):  # AWS connection ids are random; so is where a run starts
        storage.create_session(_session(new_connection_id(), 600))
    transport = FlakyTransport(set())
    app = WebSocketApp(
        storage=storage, transport=transport, config=Config(secret=SECRET, heal_max_rate=200)
    )
    seen: list[set[str]] = []
    for _ in range(6):
        transport.asked.clear()
        report = app.heal(deadline=0.2)
        # cut short: what was not asked in time is left alone (reported unknown)
        assert 0 < len(transport.asked) < 400 and report.alive == len(transport.asked)
        assert len(report.unknown) == 400 - report.alive and report.marked == 0
        seen.append(set(transport.asked))
    assert len({frozenset(run) for run in seen}) > 1  # the runs began at different points
    assert len(set().union(*seen)) > max(len(run) for run in seen)


def test_app_cleanup_age_decides_only_past_two_hours():
    storage = MemoryStorage()
    app = WebSocketApp(
        storage=storage, transport=RecordingTransport(), config=Config(secret=SECRET)
    )
    storage.create_session(_session("ancient=", 7300))  # past API Gateway's maximum
    storage.create_session(_session("hour-old=", 3600))  # alive per API Gateway
    result = app.cleanup()
    # both answered (this transport knows no 410); age past the maximum still decides
    assert result.heal is not None and result.heal.alive == 2
    assert result.storage.stale_sessions == 1
    assert not storage.get_session("ancient=").connected
    assert storage.get_session("hour-old=").connected
    assert result.as_dict()["heal"]["alive"] == 2 and "2 alive" in result.summary()


# --- through the local gateway ---------------------------------------------------------------

pytest.importorskip("aiohttp")
websockets_sync = pytest.importorskip("websockets.sync.client")
werkzeug_serving = pytest.importorskip("werkzeug.serving")

from apigw_ws_core.http1 import ManagementApiTransport  # noqa: E402
from apigw_ws_core.local.config import config_from_backend  # noqa: E402
from apigw_ws_core.local.testing import LocalGateway, wait_until  # noqa: E402

N = 12


def _later(app: WebSocketApp, seconds: float) -> None:
    """Move the app's clock forward (healing skips sessions younger than a minute)."""
    app.clock = lambda: datetime.now(UTC) + timedelta(seconds=seconds)


def test_lost_disconnects_repaired_by_one_default_cleanup():
    storage = MemoryStorage()
    app = WebSocketApp(storage=storage, config=Config(secret=SECRET, require_token=False))
    server = werkzeug_serving.make_server("127.0.0.1", 0, make_wsgi_app(app), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    api = config_from_backend(f"http://127.0.0.1:{server.port}/", secret=SECRET)
    try:
        with LocalGateway(api) as gateway, contextlib.ExitStack() as stack:
            app.transport = ManagementApiTransport(
                gateway.management_endpoint, credentials=Credentials("test", "test")
            )
            clients = [
                stack.enter_context(
                    websockets_sync.connect(gateway.ws_url + "?channel=room", open_timeout=10)
                )
                for _ in range(N)
            ]
            wait_until(lambda: len(gateway.connection_ids()) == N)
            wait_until(lambda: sum(s.connected for s in storage.sessions.values()) == N)
            gateway.faults(drop_disconnect_every=1)  # every $disconnect is lost
            for client in clients[: N // 3]:
                client.close()
            wait_until(lambda: len(gateway.connection_ids()) == N - N // 3)
            wait_until(lambda: gateway.stats()["counters"]["disconnects_dropped"] == N // 3)
            live = set(gateway.connection_ids())
            assert sum(s.connected for s in storage.sessions.values()) == N  # not repaired

            _later(app, 120)
            dry = app.cleanup(dry_run=True)
            assert dry.heal is not None and len(dry.heal.gone) == N // 3
            assert sum(s.connected for s in storage.sessions.values()) == N

            result = app.cleanup()  # the defaults
            assert result.heal is not None
            assert result.heal.checked == N and result.heal.alive == len(live)
            assert result.heal.marked == N // 3 and not result.heal.unknown
            connected = {cid for cid, s in storage.sessions.items() if s.connected}
            assert connected == live  # exactly: no live session touched

            # a message arriving after a connection's $disconnect does not bring it back
            gone_id = next(cid for cid, s in storage.sessions.items() if not s.connected)
            reply = app.handle(
                from_http(
                    "default",
                    gateway_headers("default", gone_id, secret=SECRET),
                    "",
                    b'{"action":"ping"}',
                )
            )
            assert reply.status == 404
            assert not storage.get_session(gone_id).connected
            # the live ones still talk
            clients[-1].send('{"action": "ping"}')
            assert "pong" in clients[-1].recv(timeout=10)
    finally:
        app.close()
        server.shutdown()
        thread.join(5)
        server.server_close()


# --- SIGKILL of the app process (PostgreSQL) ------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_app(url: str, prefix: str, port: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.heal.app_server", url, prefix, str(port), SECRET],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", line
    return proc


@pytest.mark.postgres
@pytest.mark.slow
def test_app_sigkilled_with_connections_open_then_one_cleanup_matches_the_gateway(
    request: pytest.FixtureRequest, tmp_path: Path
):
    from tests.sqla.dbs import open_database

    db = open_database(request, "postgresql", tmp_path)
    port = _free_port()
    proc = _start_app(str(db.engine.url.render_as_string(hide_password=False)), db.prefix, port)
    api = config_from_backend(f"http://127.0.0.1:{port}/", secret=SECRET)
    try:
        with LocalGateway(api) as gateway, contextlib.ExitStack() as stack:
            clients = [
                stack.enter_context(
                    websockets_sync.connect(gateway.ws_url + "?channel=room", open_timeout=10)
                )
                for _ in range(N)
            ]
            storage = db.storage
            wait_until(lambda: len(list(_ids(storage))) == N, timeout=15)

            proc.send_signal(signal.SIGKILL)  # the app dies with connections open
            proc.wait(10)
            for client in clients[: N // 2]:  # their $disconnect finds no app
                client.close()
            wait_until(lambda: len(gateway.connection_ids()) == N - N // 2, timeout=15)
            time.sleep(0.5)  # let the failed $disconnect calls finish
            assert len(list(_ids(storage))) == N  # storage still believes all are open

            proc = _start_app(
                str(db.engine.url.render_as_string(hide_password=False)), db.prefix, port
            )
            app = WebSocketApp(
                storage=storage,
                transport=ManagementApiTransport(
                    gateway.management_endpoint, credentials=Credentials("test", "test")
                ),
                config=Config(secret=SECRET),
            )
            _later(app, 120)
            try:
                result = app.cleanup()  # one default run
            finally:
                app.close()
            assert result.heal is not None and result.heal.marked == N // 2
            assert set(_ids(storage)) == set(gateway.connection_ids())
            # and the restarted app serves the survivors
            clients[-1].send('{"action": "ping"}')
            assert "pong" in clients[-1].recv(timeout=10)
    finally:
        with contextlib.suppress(Exception):
            proc.kill()
            proc.wait(10)
        db.close()


def _ids(storage: Any) -> list[str]:
    return [cid for batch in storage.iter_connection_ids() for cid in batch]
