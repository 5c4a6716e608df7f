"""WebSocketApp's send side: targets, background sends, task-queue jobs, the default transport."""

from __future__ import annotations

import json
from concurrent.futures import Future
from datetime import UTC, datetime

import pytest

from apigw_ws_core import Config, MemoryStorage, WebSocketApp
from apigw_ws_core.errors import ConfigurationError, PayloadTooLarge
from apigw_ws_core.events import MAX_BODY_BYTES
from apigw_ws_core.fanout import SendJob, SendReport
from apigw_ws_core.gateways import GatewayRecord
from apigw_ws_core.http1 import ManagementApiTransport
from apigw_ws_core.storage import Session
from apigw_ws_core.transport import RecordingTransport

from .conftest import CREDS


def make(transport=None, **config):
    storage = MemoryStorage()
    now = datetime.now(UTC)
    for i, channel in enumerate(["a", "a", "b", "b", "b"]):
        storage.create_session(
            Session(
                connection_id=f"c{i}=", channel_name=channel, user_id=str(i % 2), connected_at=now
            )
        )
    return WebSocketApp(
        storage=storage,
        transport=transport or RecordingTransport(),
        config=Config(secret="s", **config),
    )


def test_targets():
    app = make()
    assert app.send({"x": 1}, channel="a").delivered == 2
    assert app.send({"x": 1}, channel="b", user_id=1).delivered == 1
    assert app.send({"x": 1}, user_id=0).delivered == 3
    assert app.send("hi", everyone=True).delivered == 5
    assert app.send(b'{"raw":1}', connection_id="c4=").delivered == 1
    sent = [m.data for m in app.transport.sent if m.connection_id == "c4="]
    assert sent == [b'{"x":1}', b"hi", b'{"raw":1}']


def test_send_in_background_default_executor():
    app = make()
    future = app.send_in_background({"x": 1}, channel="b")
    assert isinstance(future, Future)
    report = future.result(5)
    assert isinstance(report, SendReport) and report.delivered == 3
    app.close()


def test_send_in_background_checks_eagerly():
    app = make()
    with pytest.raises(PayloadTooLarge):
        app.send_in_background("x" * (MAX_BODY_BYTES + 1), everyone=True)
    with pytest.raises(ValueError, match="say who"):
        app.send_in_background({"x": 1})
    with pytest.raises(ValueError, match="combined"):
        app.send_in_background({"x": 1}, connection_id="c1=", channel="a")
    assert app.transport.attempts == 0


def test_task_queue_hook_round_trips_as_json():
    """What a Celery/RQ runner does: enqueue job.as_dict(), run it in a worker."""
    app = make()
    queue: list[str] = []
    app.background_runner = lambda job: queue.append(json.dumps(job.as_dict())) or "task-id"
    assert app.send_in_background({"hello": "wörld"}, channel="a", user_id=0) == "task-id"
    assert app.transport.attempts == 0  # nothing sent yet: it is queued
    (message,) = queue
    worker_app = make(transport=app.transport)  # the worker process has its own app
    report = worker_app.run_send_job(json.loads(message))
    assert report.delivered == 1
    assert app.transport.messages_for("c0=") == [{"hello": "wörld"}]


def test_send_job_is_callable_and_serialisable():
    app = make()
    jobs: list[SendJob] = []
    app.background_runner = lambda job: jobs.append(job)
    app.send_in_background(b"\xff\x00bin", connection_id="c1=")
    (job,) = jobs
    assert job().delivered == 1  # bound to the app that made it
    clone = SendJob.from_dict(job.as_dict())
    assert clone == job and clone.target == {"connection_id": "c1="}
    with pytest.raises(RuntimeError, match="not bound"):
        clone()
    assert app.run_send_job(clone).delivered == 1
    assert [m.data for m in app.transport.sent] == [b"\xff\x00bin"] * 2


def test_default_transport_from_gateway_record_with_region():
    storage = MemoryStorage()
    storage.save_gateway(
        GatewayRecord(
            name="default", region="eu-central-1", management_endpoint="https://ws.example.com/prod"
        )
    )
    config = Config(secret="s", send_concurrency=16, send_max_concurrency=16)
    app = WebSocketApp(storage=storage, config=config)
    t = app.transport
    assert isinstance(t, ManagementApiTransport)
    assert (t.endpoint, t.region, t.max_connections) == (
        "https://ws.example.com/prod",
        "eu-central-1",
        16,
    )
    explicit = WebSocketApp(
        storage=storage,
        config=Config(secret="s", management_endpoint="http://127.0.0.1:9/dev", region="us-west-2"),
    )
    # the pool holds as many connections as the fan-out may grow to
    assert explicit.transport.max_connections == Config().send_max_concurrency
    assert (explicit.transport.endpoint, explicit.transport.region) == (
        "http://127.0.0.1:9/dev",
        "us-west-2",
    )
    with pytest.raises(ConfigurationError):
        _ = WebSocketApp(storage=MemoryStorage(), config=Config(secret="s")).transport


def test_send_over_http_marks_gone(server):
    server.handler = lambda r: (
        (410, {"x-amzn-ErrorType": "GoneException"}, b"")
        if r.connection_id == "c2="
        else (200, {}, b"{}")
    )
    transport = ManagementApiTransport(server.url, credentials=CREDS)
    app = make(transport=transport)
    try:
        report = app.send({"x": 1}, channel="b")
        assert report.delivered == 2 and report.gone == ("c2=",)
        assert app.storage.get_session("c2=").connected is False
        assert app.send({"x": 2}, connection_id="c3=").delivered == 1
    finally:
        app.close()


def test_background_send_from_a_connect_hook_skips_the_connecting_id():
    """Like a direct send, a background send started during $connect leaves out the
    connection whose handshake is still open (API Gateway would answer 410)."""
    from tests.core.helpers import connect, make_app

    app = make_app(require_token=False)
    _, first = connect(app)
    futures = []
    app.on_connect(
        lambda session, event: futures.append(app.send_in_background("hi", everyone=True))
    )
    _, second = connect(app)
    report = futures[0].result(5)
    assert report.delivered == 1 and report.gone == ()
    assert app.storage.get_session(second).connected
    assert [m.connection_id for m in app.transport.sent] == [first]
    app.close()
