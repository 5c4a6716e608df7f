"""Honest send reports: the per-call timeout is separate from the send deadline, a retry
after an ambiguous outcome (5xx, or a timeout after the request went out) is reported in
``SendReport.ambiguous``, and a failing background send is logged at ERROR whether or not
anyone reads its Future."""

from __future__ import annotations

import logging
import time

import pytest

from apigw_ws_core import Config, MemoryStorage, WebSocketApp
from apigw_ws_core.errors import TransportError
from apigw_ws_core.fanout import SendJob, fanout
from apigw_ws_core.http1 import ManagementApiTransport
from apigw_ws_core.storage import Session
from apigw_ws_core.transport import RecordingTransport, Transport

from .conftest import CREDS
from .server import ScriptedServer, make_handler, status


def test_transport_error_ambiguity_rule():
    assert TransportError("x", status=500).ambiguous
    assert TransportError("x", status=503).sent
    assert not TransportError("x", status=429).ambiguous
    assert not TransportError("x", status=400).ambiguous
    assert not TransportError("refused").ambiguous  # network error before sending
    assert TransportError("reset after write", sent=True).ambiguous


def test_retry_after_5xx_is_ambiguous_but_429_and_410_are_not():
    transport = RecordingTransport(
        gone=["gone"], throttle={"slow": 2}, fail={"flaky": 1, "twice": 2}
    )
    report = fanout(transport, b"m", [["ok", "gone", "slow", "flaky", "twice"]], base_delay=0.001)
    assert report.delivered == 4 and report.gone == ("gone",) and not report.failed
    # "twice" failed twice with 503 then succeeded: still one recipient that may have it twice
    assert sorted(report.ambiguous) == ["flaky", "twice"]
    assert report.as_dict()["ambiguous"] == 2


def test_ambiguous_then_failed_counts_only_if_another_call_went_out():
    transport = RecordingTransport(fail={"a": 10})  # every call answers 503
    report = fanout(transport, b"m", [["a"]], max_attempts=3, base_delay=0.001)
    assert report.failed == ("a",) and report.ambiguous == ("a",)

    class RefusedAfterFirst(Transport):
        """503 (went out), then connection refused (did not) until attempts run out."""

        calls = 0

        def post(self, connection_id: str, data: bytes) -> None:
            self.calls += 1
            if self.calls == 1:
                raise TransportError("Management API answered 503", status=503)
            raise TransportError("network error: refused")

    report = fanout(RefusedAfterFirst(), b"m", [["a"]], max_attempts=3, base_delay=0.001)
    assert report.failed == ("a",) and report.ambiguous == ()


def test_never_answering_call_costs_the_call_timeout_not_the_deadline():
    server = ScriptedServer(make_handler({"hung": ["hang"]}))
    transport = ManagementApiTransport(server.url, credentials=CREDS)
    try:
        started = time.monotonic()
        report = fanout(
            transport,
            b"m",
            [["a", "hung", "b"]],
            deadline=25.0,
            call_timeout=0.4,
            base_delay=0.01,
        )
        elapsed = time.monotonic() - started
        assert report.delivered == 3 and not report.failed
        assert report.ambiguous == ("hung",)  # the hung call had gone out
        assert server.per_id()["hung"] == 2
        assert 0.4 <= elapsed < 1.5, elapsed
    finally:
        transport.close()
        server.stop()


def test_5xx_after_the_request_is_ambiguous_on_the_async_engine():
    server = ScriptedServer(make_handler({"x": [status(500)], "y": [status(502), status(503)]}))
    transport = ManagementApiTransport(server.url, credentials=CREDS)
    try:
        report = fanout(transport, b"m", [["x", "y", "z"]], base_delay=0.001)
        assert report.delivered == 3 and sorted(report.ambiguous) == ["x", "y"]
    finally:
        transport.close()
        server.stop()


def test_config_send_call_timeout_reaches_fanout():
    cfg = Config(send_call_timeout=1.5)
    assert cfg.send_options()["call_timeout"] == 1.5
    assert cfg.send_options(concurrency=1, deadline=None)["concurrency"] == 1
    assert cfg.send_options(deadline=None)["deadline"] == cfg.send_deadline
    with pytest.raises(ValueError):
        Config(send_call_timeout=0)


class BrokenStorage(MemoryStorage):
    def iter_connection_ids(self, *args, **kwargs):
        raise ConnectionError("storage unreachable")
        yield []  # pragma: no cover


def test_failed_background_send_is_logged_without_reading_the_future(caplog):
    app = WebSocketApp(
        storage=BrokenStorage(),
        transport=RecordingTransport(),
        config=Config(allow_insecure_no_secret=True),
    )
    with caplog.at_level(logging.ERROR, logger="apigw_ws.fanout"):
        app.send_in_background({"x": 1}, channel="room-1")  # the Future is dropped
        app.close()  # waits for the pool
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "channel='room-1'" in record.getMessage()
    assert "storage unreachable" in record.getMessage()
    assert record.exc_info is not None


def test_background_send_with_undelivered_recipients_is_logged(caplog):
    storage = MemoryStorage()
    from datetime import UTC, datetime

    for cid in ("a", "b", "c"):
        storage.create_session(
            Session(connection_id=cid, channel_name="room", connected_at=datetime.now(UTC))
        )
    transport = RecordingTransport(fail={"b": 99})
    app = WebSocketApp(
        storage=storage,
        transport=transport,
        config=Config(allow_insecure_no_secret=True, send_max_attempts=2),
    )
    with caplog.at_level(logging.ERROR, logger="apigw_ws.fanout"):
        app.send_in_background("hi", channel="room")
        app.close()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "channel='room'" in errors[0] and "1 of 3 recipient(s) failed" in errors[0]
    assert "2 delivered" in errors[0] and "503" in errors[0]


def test_send_job_describe():
    assert SendJob(payload=b"x", user_id="7").describe() == "user_id='7'"
    assert SendJob(payload=b"x", everyone=True).describe() == "everyone=True"
