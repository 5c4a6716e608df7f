"""Honest reports end to end: real WebSocket clients through the local gateway, whose
management API delivers some posts and then answers 500, or never answers. The report's
``ambiguous`` equals the clients that really received the message twice; a call that
never answers costs the per-call timeout, not the send deadline."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator

import pytest
from botocore.credentials import Credentials

from apigw_ws_core import Config, MemoryStorage, WebSocketApp
from apigw_ws_core.fanout import fanout
from apigw_ws_core.http1 import ManagementApiTransport
from apigw_ws_core.wsgi import make_wsgi_app

pytest.importorskip("aiohttp")
websockets_sync = pytest.importorskip("websockets.sync.client")
werkzeug_serving = pytest.importorskip("werkzeug.serving")

from apigw_ws_core.local.config import config_from_backend  # noqa: E402
from apigw_ws_core.local.testing import LocalGateway, wait_until  # noqa: E402

SECRET = "faults-secret"
N = 40
CALL_TIMEOUT = 0.5


@pytest.fixture
def stack() -> Iterator[tuple[WebSocketApp, LocalGateway, list]]:
    app = WebSocketApp(
        storage=MemoryStorage(),
        config=Config(
            secret=SECRET,
            require_token=False,
            send_concurrency=8,
            send_call_timeout=CALL_TIMEOUT,
        ),
    )
    server = werkzeug_serving.make_server("127.0.0.1", 0, make_wsgi_app(app), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    api = config_from_backend(f"http://127.0.0.1:{server.port}/", secret=SECRET)
    with LocalGateway(api) as gateway, contextlib.ExitStack() as clients_stack:
        app.transport = ManagementApiTransport(
            gateway.management_endpoint, credentials=Credentials("test", "test")
        )
        clients = [
            clients_stack.enter_context(
                websockets_sync.connect(gateway.ws_url + "?channel=all", open_timeout=10)
            )
            for _ in range(N)
        ]
        wait_until(lambda: len(gateway.connection_ids()) == N)
        wait_until(lambda: sum(len(b) for b in app.storage.iter_connection_ids(channel="all")) == N)
        try:
            yield app, gateway, clients
        finally:
            app.close()
            server.shutdown()
            thread.join(5)
            server.server_close()


def copies_received(clients: list, app: WebSocketApp) -> list[int]:
    """Per client, how many copies of the "news" message arrived before the sentinel."""
    assert app.send({"type": "sentinel"}, channel="all").delivered == N
    counts = []
    for client in clients:
        n = 0
        while True:
            message = json.loads(client.recv(timeout=10))
            if message == {"type": "sentinel"}:
                break
            assert message == {"type": "news"}
            n += 1
        counts.append(n)
    return counts


def test_5xx_after_delivery_duplicates_equal_ambiguous(stack):
    app, gateway, clients = stack
    assert gateway.faults(inject_5xx_every=7)["inject_5xx_every"] == 7
    report = app.send({"type": "news"}, channel="all")
    gateway.faults(inject_5xx_every=0)
    injected = gateway.stats()["counters"]["management_injected_5xx"]

    copies = copies_received(clients, app)
    assert min(copies) >= 1  # at least once, to everyone
    twice = sum(1 for n in copies if n > 1)
    assert injected >= N // 7 and twice >= 1
    assert len(report.ambiguous) == twice
    assert report.delivered == N and not report.failed and report.retried >= twice


def test_never_answering_calls_cost_the_call_timeout(stack):
    app, gateway, clients = stack
    gateway.faults(inject_hang_every=9)
    started = time.monotonic()
    report = app.send({"type": "news"}, channel="all")
    elapsed = time.monotonic() - started
    gateway.faults(inject_hang_every=0)
    hung = gateway.stats()["counters"]["management_injected_hang"]

    assert hung >= N // 9
    # Hung calls run in parallel: about one call timeout, far from the 25 s deadline.
    assert CALL_TIMEOUT <= elapsed < CALL_TIMEOUT + 2.0, elapsed
    copies = copies_received(clients, app)
    twice = sum(1 for n in copies if n > 1)
    assert report.delivered == N and not report.failed
    assert len(report.ambiguous) == twice and 1 <= twice <= hung

    # One recipient whose every call hangs: one attempt costs one call timeout.
    gateway.faults(inject_hang_every=1)
    cid = gateway.connection_ids()[0]
    started = time.monotonic()
    single = fanout(
        app.transport, b'{"type": "x"}', [cid], max_attempts=1, call_timeout=CALL_TIMEOUT
    )
    elapsed = time.monotonic() - started
    gateway.faults(inject_hang_every=0)
    assert single.failed == (cid,) and "timed out" in (single.first_error or "")
    assert CALL_TIMEOUT <= elapsed < CALL_TIMEOUT + 0.5, elapsed
