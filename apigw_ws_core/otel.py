"""OpenTelemetry spans and metrics for apigw-ws (needs ``apigw-ws[otel]``).

Imported only by :func:`apigw_ws_core.observability.instrument`; nothing else in the core
imports ``opentelemetry``.

Spans (tracer ``apigw_ws``):

* ``apigw_ws CONNECT|MESSAGE|DISCONNECT`` (kind SERVER), one per event, with
  ``apigw_ws.event_type``, ``apigw_ws.route_key``, ``apigw_ws.handler``,
  ``apigw_ws.connection_id`` (shortened), ``apigw_ws.stage``,
  ``http.response.status_code`` and ``error.type`` (the stable error code). Status ERROR for
  5xx replies. When the call carries API Gateway's ``X-Amzn-Trace-Id``, the span continues
  that X-Ray trace (its ``Root`` is the trace id, its ``Parent`` the parent span); if a span is
  already active (a framework's own instrumentation), the span is its child and *links* to
  the X-Ray context instead.
* ``apigw_ws send`` (kind PRODUCER), one per send, with ``apigw_ws.send.recipients``,
  ``.delivered``, ``.gone``, ``.failed``, ``.throttled``, ``.retried``, ``.ambiguous``;
  status ERROR when recipients failed. A send made by a handler is a child of its event span.

Metrics (meter ``apigw_ws``):

* ``apigw_ws.events`` (counter): events by ``apigw_ws.event_type``, ``apigw_ws.route_key``,
  ``http.response.status_code`` and ``error.type``;
* ``apigw_ws.event.duration`` (histogram, s): pipeline time by event type and status;
* ``apigw_ws.handler.duration`` (histogram, s): handler time by ``apigw_ws.handler`` and
  ``apigw_ws.outcome`` (``ok``/``error``);
* ``apigw_ws.send.recipients`` (counter): send outcomes by ``apigw_ws.outcome``
  (``delivered``, ``gone``, ``failed``);
* ``apigw_ws.send.throttled`` (counter): 429 answers from the Management API;
* ``apigw_ws.send.duration`` (histogram, s): whole sends;
* ``apigw_ws.cleanup.sessions`` (counter): sessions housekeeping changed, by
  ``apigw_ws.reason`` (``lost_disconnect``: healing found API Gateway no longer knew them;
  ``past_max_age``; ``deleted``).

Healing's ``GET @connections`` runs get an ``apigw_ws probe`` span (kind CLIENT) with the
same count attributes, and are not counted as sends.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from apigw_ws_core.observability import EventObservation, short_id

if TYPE_CHECKING:  # pragma: no cover
    from apigw_ws_core.fanout import SendReport

__all__ = ["OtelInstrumentation", "span_context_from_xray"]

_SCOPE = "apigw_ws"
# Fields of ``Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1``.
_ROOT = re.compile(r"(?:^|;)\s*Root=1-([0-9a-fA-F]{8})-([0-9a-fA-F]{24})\s*(?:;|$)")
_PARENT = re.compile(r"(?:^|;)\s*Parent=([0-9a-fA-F]{16})\s*(?:;|$)")
_SAMPLED = re.compile(r"(?:^|;)\s*Sampled=([^;\s]*)")


def span_context_from_xray(header: str | None) -> trace.SpanContext | None:
    """The remote span context an ``X-Amzn-Trace-Id`` header names, or ``None``.

    ``Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1``: the
    trace id is the root's two hex parts joined (as the AWS X-Ray propagator does), the span
    id is ``Parent``. A header without ``Parent`` (API Gateway's own root segment) gets
    none: the root alone cannot be a parent, so ``None`` is returned.
    """
    if not header:
        return None
    root = _ROOT.search(header)
    parent = _PARENT.search(header)
    if root is None or parent is None:
        return None
    trace_id = int(root.group(1) + root.group(2), 16)
    span_id = int(parent.group(1), 16)
    if trace_id == 0 or span_id == 0:
        return None
    sampled = _SAMPLED.search(header)
    flags = trace.TraceFlags(
        trace.TraceFlags.SAMPLED
        if sampled is not None and sampled.group(1) == "1"
        else trace.TraceFlags.DEFAULT
    )
    return trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)


class _EventSpan:
    """A started event span and the context token that made it current."""

    __slots__ = ("span", "token")

    def __init__(self, span: trace.Span, token: object) -> None:
        self.span = span
        self.token = token


class OtelInstrumentation:
    """The tracer and instruments; :mod:`apigw_ws_core.observability` calls it."""

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        self.tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
        meter = metrics.get_meter(_SCOPE, meter_provider=meter_provider)
        self.events = meter.create_counter(
            "apigw_ws.events", unit="{event}", description="Events handled by the pipeline"
        )
        self.event_duration = meter.create_histogram(
            "apigw_ws.event.duration", unit="s", description="Time spent handling an event"
        )
        self.handler_duration = meter.create_histogram(
            "apigw_ws.handler.duration", unit="s", description="Time spent in message handlers"
        )
        self.send_recipients = meter.create_counter(
            "apigw_ws.send.recipients",
            unit="{recipient}",
            description="Send outcomes per recipient (delivered, gone, failed)",
        )
        self.send_throttled = meter.create_counter(
            "apigw_ws.send.throttled",
            unit="{response}",
            description="429 answers from the Management API",
        )
        self.send_duration = meter.create_histogram(
            "apigw_ws.send.duration", unit="s", description="Time a whole send took"
        )
        self.cleanup_sessions = meter.create_counter(
            "apigw_ws.cleanup.sessions",
            unit="{session}",
            description="Sessions housekeeping marked disconnected or deleted, by reason",
        )

    # --- events ----------------------------------------------------------------------

    def start_event(self, obs: EventObservation) -> _EventSpan:
        """Start the event's span and make it current (sends made in the handler nest)."""
        remote = span_context_from_xray(obs.trace_header)
        active = trace.get_current_span().get_span_context()
        parent = None
        links: list[Link] = []
        if remote is not None:
            if active.is_valid:
                links.append(Link(remote))
            else:
                parent = trace.set_span_in_context(trace.NonRecordingSpan(remote))
        span = self.tracer.start_span(
            f"apigw_ws {obs.event_type}",
            context=parent,
            kind=SpanKind.SERVER,
            links=links,
            attributes={
                "apigw_ws.event_type": obs.event_type,
                "apigw_ws.route_key": obs.route_key,
                "apigw_ws.connection_id": short_id(obs.connection_id),
                "apigw_ws.stage": obs.stage,
            },
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        return _EventSpan(span, token)

    def end_event(self, started: Any, obs: EventObservation) -> None:
        """Finish the event's span and record its metrics."""
        attributes: dict[str, str | int] = {
            "apigw_ws.event_type": obs.event_type,
            "apigw_ws.route_key": obs.route_key,
            "http.response.status_code": obs.status,
        }
        if obs.error_code:
            attributes["error.type"] = obs.error_code
        self.events.add(1, attributes)
        self.event_duration.record(
            obs.seconds,
            {"apigw_ws.event_type": obs.event_type, "http.response.status_code": obs.status},
        )
        if obs.handler is not None and obs.handler_seconds is not None:
            self.handler_duration.record(
                obs.handler_seconds,
                {
                    "apigw_ws.handler": obs.handler,
                    "apigw_ws.outcome": "error" if obs.handler_error else "ok",
                },
            )
        if not isinstance(started, _EventSpan):
            return
        span = started.span
        try:
            span.set_attribute("http.response.status_code", obs.status)
            if obs.handler is not None:
                span.set_attribute("apigw_ws.handler", obs.handler)
            if obs.error_code:
                span.set_attribute("error.type", obs.error_code)
            if obs.status >= 500:
                span.set_status(Status(StatusCode.ERROR, obs.error_code or "server error"))
            span.end()
        finally:
            otel_context.detach(started.token)  # type: ignore[arg-type]

    # --- housekeeping ------------------------------------------------------------------

    def record_cleanup(self, fields: dict[str, Any]) -> None:
        """Count what a cleanup run changed: ``lost_disconnect`` (healing found the session
        gone), ``past_max_age`` (2 h), ``deleted`` (old disconnected rows)."""
        for reason, key in (
            ("lost_disconnect", "heal_gone"),
            ("past_max_age", "stale_sessions"),
            ("deleted", "old_disconnected"),
        ):
            if fields[key]:
                self.cleanup_sessions.add(int(fields[key]), {"apigw_ws.reason": reason})

    # --- sends -----------------------------------------------------------------------

    def start_send(self, kind: str = "send") -> trace.Span:
        """Start a send's (or probe's) span (a child of the current event span, if any)."""
        return self.tracer.start_span(
            f"apigw_ws {kind}", kind=SpanKind.PRODUCER if kind == "send" else SpanKind.CLIENT
        )

    def end_send(
        self,
        span: Any,
        report: SendReport | None,
        seconds: float,
        error: BaseException | None,
        kind: str = "send",
    ) -> None:
        """Finish a send's span with its counts and record the send metrics (not for
        healing's probes: their outcomes are counted by :meth:`record_cleanup`)."""
        if kind == "send":
            self.send_duration.record(seconds, {"apigw_ws.outcome": "error" if error else "ok"})
        if report is not None and kind == "send":
            for outcome, count in (
                ("delivered", report.delivered),
                ("gone", len(report.gone)),
                ("failed", len(report.failed)),
            ):
                if count:
                    self.send_recipients.add(count, {"apigw_ws.outcome": outcome})
            if report.throttled:
                self.send_throttled.add(report.throttled)
        if not isinstance(span, trace.Span):
            return
        if report is not None:
            span.set_attributes(
                {
                    "apigw_ws.send.recipients": report.recipients,
                    "apigw_ws.send.delivered": report.delivered,
                    "apigw_ws.send.gone": len(report.gone),
                    "apigw_ws.send.failed": len(report.failed),
                    "apigw_ws.send.throttled": report.throttled,
                    "apigw_ws.send.retried": report.retried,
                    "apigw_ws.send.ambiguous": len(report.ambiguous),
                }
            )
            if report.failed:
                span.set_status(Status(StatusCode.ERROR, report.first_error or "recipients failed"))
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()
