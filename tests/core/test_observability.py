"""Structured log records, and OpenTelemetry spans and metrics (asserted with the SDK's
in-memory span exporter and metric reader)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from apigw_ws_core import observability
from apigw_ws_core.events import from_http
from apigw_ws_core.testing import gateway_headers
from tests.core.helpers import SECRET, connect, make_app, message

XRAY = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"


def events_of(caplog: pytest.LogCaptureFixture, logger: str = "apigw_ws.events") -> list[Any]:
    return [r for r in caplog.records if r.name == logger]


def test_every_event_leaves_one_structured_record(caplog: pytest.LogCaptureFixture) -> None:
    app = make_app(require_token=False)
    with caplog.at_level(logging.DEBUG, logger="apigw_ws"):
        _, cid = connect(app, query="channel=room")
        message(app, cid, json.dumps({"action": "chat_message", "text": "hi"}))
        message(app, cid, "not json")
        message(app, cid, "{}", secret="wrong-secret-000000000")
    connect_rec, ok, bad, forbidden = events_of(caplog)
    assert connect_rec.event_type == "CONNECT" and connect_rec.route_key == "$connect"
    assert connect_rec.status == 200 and connect_rec.levelno == logging.INFO
    assert ok.event_type == "MESSAGE" and ok.handler == "chat_message" and ok.status == 200
    assert ok.connection == cid[:8] and len(ok.connection) == 8
    assert isinstance(ok.latency_ms, float) and ok.latency_ms >= 0
    assert ok.stage == "test"
    assert not hasattr(ok, "error_code")
    assert "MESSAGE $default connection=" in ok.getMessage()
    assert bad.status == 400 and bad.error_code == "invalid_json" and bad.levelno == logging.WARNING
    assert forbidden.status == 403 and forbidden.error_code == "forbidden"
    # The send the handler made: one record with the counts.
    (send,) = events_of(caplog, "apigw_ws.fanout")
    assert send.event_type == "SEND" and send.levelno == logging.DEBUG
    assert (send.recipients, send.delivered, send.gone, send.failed) == (1, 1, 0, 0)
    # The full connection id never appears in the records.
    assert all(cid not in r.getMessage() for r in caplog.records)


def test_json_formatter_picks_up_the_fields(caplog: pytest.LogCaptureFixture) -> None:
    """The documented logging setup (python-json-logger) emits the fields as JSON keys."""
    from pythonjsonlogger.json import JsonFormatter

    app = make_app(require_token=False)
    with caplog.at_level(logging.INFO, logger="apigw_ws.events"):
        _, cid = connect(app)
        message(app, cid, json.dumps({"action": "nope"}))
    formatter = JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    line = json.loads(formatter.format(events_of(caplog)[-1]))
    assert line["name"] == "apigw_ws.events" and line["levelname"] == "WARNING"
    assert line["event_type"] == "MESSAGE"
    assert line["error_code"] == "unknown_handler"
    assert line["status"] == 400
    assert line["connection"] == cid[:8]
    assert {"route_key", "latency_ms", "stage"} <= set(line)


def test_failed_send_is_a_warning_with_counts(caplog: pytest.LogCaptureFixture) -> None:
    from apigw_ws_core.fanout import fanout
    from apigw_ws_core.testing import RecordingTransport

    transport = RecordingTransport(gone=["dead"], fail={"sick": 100})
    with caplog.at_level(logging.DEBUG, logger="apigw_ws.fanout"):
        fanout(transport, b"x", [["ok", "dead", "sick"]], max_attempts=2, base_delay=0.001)
    (send,) = events_of(caplog, "apigw_ws.fanout")
    assert send.levelno == logging.WARNING
    assert (send.recipients, send.delivered, send.gone, send.failed) == (3, 1, 1, 1)
    assert send.retried == 1 and send.ambiguous == 1  # a 503 may have been delivered


def test_the_core_does_not_import_opentelemetry() -> None:
    code = (
        "import sys, json\n"
        "import apigw_ws_core, apigw_ws_core.app, apigw_ws_core.fanout, "
        "apigw_ws_core.observability, apigw_ws_core.wsgi\n"
        "from tests.core.helpers import make_app, connect\n"
        "connect(make_app(require_token=False))\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('opentelemetry'))))\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    ).stdout
    assert json.loads(out) == []


# --- OpenTelemetry -------------------------------------------------------------------

sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
sdk_metrics = pytest.importorskip("opentelemetry.sdk.metrics")
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

from apigw_ws_core.otel import span_context_from_xray  # noqa: E402


class Otel:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = sdk_trace.TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = sdk_metrics.MeterProvider(metric_readers=[self.reader])

    def spans(self) -> list[Any]:
        return list(self.exporter.get_finished_spans())

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found


@pytest.fixture
def otel() -> Iterator[Otel]:
    o = Otel()
    observability.instrument(o.tracer_provider, o.meter_provider)
    try:
        yield o
    finally:
        observability.uninstrument()


def test_event_and_send_spans(otel: Otel) -> None:
    app = make_app(require_token=False)
    _, cid = connect(app, query="channel=room")
    _, other = connect(app, query="channel=room")
    _, gone = connect(app, query="channel=room")
    app.transport.gone.add(gone)  # type: ignore[attr-defined]
    otel.exporter.clear()
    headers = gateway_headers("default", cid, secret=SECRET, extra={"X-Amzn-Trace-Id": XRAY})
    body = json.dumps({"action": "chat_message", "text": "hi"}).encode()
    reply = app.handle(from_http("default", headers, "", body))
    assert reply.status == 200
    send, event = otel.spans()
    assert event.name == "apigw_ws MESSAGE" and event.kind is SpanKind.SERVER
    attrs = dict(event.attributes)
    assert attrs == {
        "apigw_ws.event_type": "MESSAGE",
        "apigw_ws.route_key": "$default",
        "apigw_ws.connection_id": cid[:8],
        "apigw_ws.stage": "test",
        "http.response.status_code": 200,
        "apigw_ws.handler": "chat_message",
    }
    # Continues API Gateway's X-Ray trace: Root is the trace id, Parent the parent span.
    assert event.context.trace_id == 0x5759E988BD862E3FE1BE46A994272793
    assert event.parent.span_id == 0x53995C3F42CD8AD8 and event.parent.is_remote
    assert event.status.status_code is StatusCode.UNSET
    # The handler's send is a child of the event span, with its counts.
    assert send.name == "apigw_ws send" and send.kind is SpanKind.PRODUCER
    assert send.parent.span_id == event.context.span_id
    assert send.context.trace_id == event.context.trace_id
    counts = {k.rsplit(".", 1)[1]: v for k, v in send.attributes.items()}
    assert counts == {
        "recipients": 3,
        "delivered": 2,
        "gone": 1,
        "failed": 0,
        "throttled": 0,
        "retried": 0,
        "ambiguous": 0,
    }
    assert {cid, other} <= {m.connection_id for m in app.transport.sent}  # type: ignore[attr-defined]


def test_metrics(otel: Otel) -> None:
    app = make_app(require_token=False)
    _, cid = connect(app, query="channel=room")
    _, gone = connect(app, query="channel=room")
    app.transport.gone.add(gone)  # type: ignore[attr-defined]
    for _ in range(3):
        message(app, cid, json.dumps({"action": "chat_message", "text": "hi"}))
    message(app, cid, "not json")

    def count(points: list[Any], **wanted: Any) -> int:
        return sum(
            p.value for p in points if all(p.attributes.get(k) == v for k, v in wanted.items())
        )

    events = otel.points("apigw_ws.events")
    assert (
        count(events, **{"apigw_ws.event_type": "CONNECT", "http.response.status_code": 200}) == 2
    )
    ok = {"apigw_ws.event_type": "MESSAGE", "http.response.status_code": 200}
    assert count(events, **ok) == 3
    bad = {"http.response.status_code": 400, "error.type": "invalid_json"}
    assert count(events, **bad) == 1
    (handler,) = otel.points("apigw_ws.handler.duration")
    assert dict(handler.attributes) == {
        "apigw_ws.handler": "chat_message",
        "apigw_ws.outcome": "ok",
    }
    assert handler.count == 3 and handler.sum > 0
    durations = otel.points("apigw_ws.event.duration")
    assert sum(p.count for p in durations) == 6
    outcomes = otel.points("apigw_ws.send.recipients")
    assert count(outcomes, **{"apigw_ws.outcome": "delivered"}) == 3
    assert count(outcomes, **{"apigw_ws.outcome": "gone"}) == 1  # marked gone after the first
    assert sum(p.count for p in otel.points("apigw_ws.send.duration")) == 3


def test_throttled_and_failed_sends_are_counted(otel: Otel) -> None:
    from apigw_ws_core.fanout import fanout
    from apigw_ws_core.testing import RecordingTransport

    transport = RecordingTransport(throttle={"a": 1, "b": 1, "c": 1}, fail={"c": 100})
    report = fanout(transport, b"x", [["a", "b", "c"]], base_delay=0.001, max_attempts=2)
    assert report.throttled == 3 and report.delivered == 2 and len(report.failed) == 1
    (span,) = otel.spans()
    assert span.attributes["apigw_ws.send.throttled"] == 3
    assert span.attributes["apigw_ws.send.failed"] == 1
    assert span.status.status_code is StatusCode.ERROR
    (throttled,) = otel.points("apigw_ws.send.throttled")
    assert throttled.value == 3
    outcomes = {
        p.attributes["apigw_ws.outcome"]: p.value for p in otel.points("apigw_ws.send.recipients")
    }
    assert outcomes == {"delivered": 2, "failed": 1}


def test_handler_failure_is_an_error_span(otel: Otel) -> None:
    app = make_app(require_token=False)

    @app.handler("boom")
    def boom(ctx: Any, message: Any) -> None:
        raise RuntimeError("bug")

    _, cid = connect(app)
    otel.exporter.clear()
    assert message(app, cid, json.dumps({"action": "boom"})).status == 500
    (span,) = otel.spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "handler_failed"
    assert span.attributes["apigw_ws.handler"] == "boom"
    (handler,) = otel.points("apigw_ws.handler.duration")
    assert handler.attributes["apigw_ws.outcome"] == "error"


def test_an_active_span_is_the_parent_and_xray_a_link(otel: Otel) -> None:
    """Behind a framework's own OpenTelemetry instrumentation the event span nests in the
    request span and links to the X-Ray trace."""
    app = make_app(require_token=False)
    tracer = otel.tracer_provider.get_tracer("framework")
    headers = gateway_headers("connect", "abcdefghijklmnop", secret=SECRET)
    headers["X-Amzn-Trace-Id"] = XRAY
    with tracer.start_as_current_span("GET /ws/connect") as outer:
        app.handle(from_http("connect", headers, ""))
    event, request = otel.spans()
    assert event.parent.span_id == outer.get_span_context().span_id
    (link,) = event.links
    assert link.context.trace_id == 0x5759E988BD862E3FE1BE46A994272793
    assert link.context.span_id == 0x53995C3F42CD8AD8
    assert request.name == "GET /ws/connect"
    # No span is left current afterwards.
    assert not trace.get_current_span().get_span_context().is_valid


def test_lambda_events_use_the_runtime_trace_id(
    otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apigw_ws_core.aws_lambda import make_handler
    from apigw_ws_core.testing import lambda_event

    monkeypatch.setenv("_X_AMZN_TRACE_ID", XRAY)
    app = make_app(require_token=False)
    handler = make_handler(app)
    result = handler(lambda_event("connect", "abcdefghijklmnop"), None)
    assert result["statusCode"] == 200
    (span,) = otel.spans()
    assert span.context.trace_id == 0x5759E988BD862E3FE1BE46A994272793
    assert span.parent.span_id == 0x53995C3F42CD8AD8


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Root=1-5759e988-bd862e3fe1be46a994272793",  # no parent: nothing to attach to
        "Root=2-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8",
        "Root=1-5759e988-bd862e3f;Parent=53995c3f42cd8ad8",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=xyz",
    ],
)
def test_unusable_trace_headers_are_ignored(header: str | None) -> None:
    assert span_context_from_xray(header) is None


def test_xray_sampling_flag() -> None:
    unsampled = span_context_from_xray(XRAY.replace("Sampled=1", "Sampled=0"))
    assert unsampled is not None and not unsampled.trace_flags.sampled
    sampled = span_context_from_xray(XRAY)
    assert sampled is not None and sampled.trace_flags.sampled


def test_cleanup_leaves_one_record_and_counts_lost_disconnects(
    otel: Otel, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(require_token=False, heal_min_age=0)
    _, alive = connect(app, query="channel=room")
    _, lost = connect(app, query="channel=room")
    app.transport.gone.add(lost)  # type: ignore[attr-defined]  # its $disconnect was lost
    otel.exporter.clear()
    with caplog.at_level(logging.DEBUG, logger="apigw_ws"):
        result = app.cleanup()
    assert result.heal is not None and result.heal.gone == (lost,)
    (record,) = events_of(caplog, "apigw_ws.cleanup")
    assert record.levelno == logging.WARNING  # lost $disconnect calls are worth a look
    assert record.event_type == "CLEANUP" and record.dry_run is False
    assert (record.heal_checked, record.heal_alive, record.heal_gone) == (2, 1, 1)
    (probe_record,) = events_of(caplog, "apigw_ws.fanout")
    assert probe_record.event_type == "PROBE"
    (probe,) = otel.spans()
    assert probe.name == "apigw_ws probe" and probe.kind is SpanKind.CLIENT
    assert probe.attributes["apigw_ws.send.gone"] == 1
    (lost_point,) = otel.points("apigw_ws.cleanup.sessions")
    assert dict(lost_point.attributes) == {"apigw_ws.reason": "lost_disconnect"}
    assert lost_point.value == 1
    # Probes are not sends.
    assert otel.points("apigw_ws.send.recipients") == []
    assert alive  # still connected
