"""What the library tells operators: structured log records, and optional OpenTelemetry.

Every event the pipeline handles ends with one record on the ``apigw_ws.events`` logger, and
every send with one on ``apigw_ws.fanout``. Besides a readable message each record carries
structured fields in ``extra=`` (so JSON formatters such as python-json-logger emit them as
keys):

================ =============================================================
field            value
================ =============================================================
``event_type``   ``CONNECT``, ``MESSAGE``, ``DISCONNECT`` (``SEND`` for sends)
``route_key``    the API Gateway route key (``$connect``, ``chat_message``, ...)
``handler``      the handler that ran (message events), else absent
``status``       the HTTP status of the reply
``error_code``   the stable error code of a rejected event (``invalid_token``, ...)
``latency_ms``   time spent in the pipeline (sends: the whole send)
``connection``   the connection id, shortened to its first 8 characters
``stage``        the API Gateway stage
================ =============================================================

Sends add ``recipients``, ``delivered``, ``gone``, ``failed``, ``throttled``, ``retried``
and ``ambiguous`` (counts); healing's probes are logged the same way as ``PROBE``. Each
housekeeping run (``WebSocketApp.cleanup``) leaves one record on ``apigw_ws.cleanup``
(:func:`record_cleanup`). Successful events are logged at INFO, rejected ones at WARNING
(5xx: ERROR); successful sends at DEBUG, sends with failures at WARNING.

OpenTelemetry is optional (``pip install 'apigw-ws[otel]'``) and off until
:func:`instrument` is called: only then is :mod:`apigw_ws_core.otel` (and with it
``opentelemetry``) imported. It adds a span per event and per send and the metrics listed
there; an event's ``X-Amzn-Trace-Id`` header (sent by API Gateway; in Lambda the runtime's
``_X_AMZN_TRACE_ID``) links its span to the AWS X-Ray trace.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:  # pragma: no cover
    from apigw_ws_core.events import Event
    from apigw_ws_core.fanout import SendReport
    from apigw_ws_core.heal import CleanupResult
    from apigw_ws_core.otel import OtelInstrumentation

__all__ = [
    "EventObservation",
    "instrument",
    "instrumented",
    "observe_event",
    "observe_handler",
    "observe_send",
    "record_cleanup",
    "short_id",
    "uninstrument",
]

event_log = logging.getLogger("apigw_ws.events")
send_log = logging.getLogger("apigw_ws.fanout")

#: The OpenTelemetry instrumentation when :func:`instrument` was called, else ``None``.
_otel: OtelInstrumentation | None = None
_current: ContextVar[EventObservation | None] = ContextVar("apigw_ws_event", default=None)


def short_id(connection_id: str) -> str:
    """A connection id shortened for logs and span attributes: its first 8 characters,
    control characters escaped (ids of rejected calls come from the caller)."""
    return connection_id[:8].encode("unicode_escape").decode("ascii")


@attrs.define
class EventObservation:
    """What is known about one event while the pipeline handles it.

    The pipeline fills in ``handler``, ``handler_seconds``, ``status`` and ``error_code``;
    :func:`observe_event` logs (and, when instrumented, traces and counts) it at the end.
    """

    event_type: str
    route_key: str
    connection_id: str
    stage: str = ""
    trace_header: str | None = None
    handler: str | None = None
    handler_seconds: float | None = None
    handler_error: bool = False
    status: int = 0
    error_code: str | None = None
    error_message: str | None = None
    started: float = attrs.field(factory=time.perf_counter)
    seconds: float = 0.0

    def fields(self) -> dict[str, Any]:
        """The structured fields of the event's log record."""
        fields: dict[str, Any] = {
            "event_type": self.event_type,
            "route_key": self.route_key,
            "status": self.status,
            "latency_ms": round(self.seconds * 1000, 3),
            "connection": short_id(self.connection_id),
            "stage": self.stage,
        }
        if self.handler is not None:
            fields["handler"] = self.handler
        if self.error_code is not None:
            fields["error_code"] = self.error_code
        return fields


def _log_event(obs: EventObservation) -> None:
    if obs.status >= 500:
        level = logging.ERROR
    elif obs.status >= 400:
        level = logging.WARNING
    else:
        level = logging.INFO
    if not event_log.isEnabledFor(level):
        return
    what = f" handler={obs.handler}" if obs.handler else ""
    error = ""
    if obs.error_code:
        message = (obs.error_message or "")[:200].encode("unicode_escape").decode("ascii")
        error = f" error={obs.error_code} ({message})"
    event_log.log(
        level,
        "%s %s connection=%s status=%d%s%s %.1fms",
        obs.event_type,
        (obs.route_key or "-")[:128].encode("unicode_escape").decode("ascii"),
        short_id(obs.connection_id),
        obs.status,
        what,
        error,
        obs.seconds * 1000,
        extra=obs.fields(),
    )


def _trace_header(event: Event) -> str | None:
    """API Gateway's ``X-Amzn-Trace-Id`` for this event: the header of an HTTP call, or in a
    Lambda function the runtime's ``_X_AMZN_TRACE_ID`` (set per invocation)."""
    header = event.headers.get("x-amzn-trace-id")
    if header is None and event.source == "lambda":
        header = os.environ.get("_X_AMZN_TRACE_ID")
    return header


@contextmanager
def observe_event(event: Event) -> Iterator[EventObservation]:
    """Around one event in the pipeline: the caller sets ``status`` (and ``error_code``)
    before leaving; the record is logged, traced and counted on the way out."""
    obs = EventObservation(
        event_type=event.event_type,
        route_key=event.route_key,
        connection_id=event.connection_id,
        stage=event.stage,
        trace_header=_trace_header(event),
    )
    token = _current.set(obs)
    otel = _otel
    span = otel.start_event(obs) if otel is not None else None
    try:
        yield obs
    except BaseException:
        obs.status = obs.status or 500
        obs.error_code = obs.error_code or "internal_error"
        raise
    finally:
        _current.reset(token)
        obs.seconds = time.perf_counter() - obs.started
        if otel is not None:
            otel.end_event(span, obs)
        _log_event(obs)


@contextmanager
def observe_handler(name: str) -> Iterator[None]:
    """Around one handler call: its name and duration go to the current event's record."""
    obs = _current.get()
    started = time.perf_counter()
    try:
        yield
    except BaseException:
        if obs is not None:
            obs.handler_error = True
        raise
    finally:
        if obs is not None:
            obs.handler = name
            obs.handler_seconds = time.perf_counter() - started


@attrs.define
class SendObservation:
    """One send (or healing probe) while it runs; :func:`observe_send` logs and traces it
    when it ends."""

    kind: str = "send"
    started: float = attrs.field(factory=time.perf_counter)
    report: SendReport | None = None


def _send_fields(report: SendReport, seconds: float, kind: str) -> dict[str, Any]:
    return {
        "event_type": kind.upper(),
        "recipients": report.recipients,
        "delivered": report.delivered,
        "gone": len(report.gone),
        "failed": len(report.failed),
        "throttled": report.throttled,
        "retried": report.retried,
        "ambiguous": len(report.ambiguous),
        "latency_ms": round(seconds * 1000, 3),
    }


@contextmanager
def observe_send(kind: str = "send") -> Iterator[SendObservation]:
    """Around one send (the one send path, :func:`apigw_ws_core.fanout.fanout`): the caller
    stores its :class:`~apigw_ws_core.fanout.SendReport` in ``report`` before leaving.
    ``kind`` is ``"probe"`` for healing's ``GET @connections`` runs (logged as ``PROBE``,
    traced as ``apigw_ws probe``, not counted in the send metrics)."""
    obs = SendObservation(kind=kind)
    otel = _otel
    span = otel.start_send(kind) if otel is not None else None
    error: BaseException | None = None
    try:
        yield obs
    except BaseException as exc:
        error = exc
        raise
    finally:
        seconds = time.perf_counter() - obs.started
        if otel is not None:
            otel.end_send(span, obs.report, seconds, error, kind)
        report = obs.report
        if report is not None:
            level = logging.WARNING if report.failed or report.ambiguous else logging.DEBUG
            if send_log.isEnabledFor(level):
                send_log.log(
                    level,
                    "%s: %d recipients, %d delivered, %d gone, %d failed, %d throttled, "
                    "%d maybe twice; first error: %s",
                    kind,
                    report.recipients,
                    report.delivered,
                    len(report.gone),
                    len(report.failed),
                    report.throttled,
                    len(report.ambiguous),
                    report.first_error or ("deadline reached" if report.failed else "none"),
                    extra=_send_fields(report, seconds, kind),
                )


cleanup_log = logging.getLogger("apigw_ws.cleanup")


def record_cleanup(result: CleanupResult) -> None:
    """One record (and, when instrumented, metrics) for a housekeeping run
    (:meth:`WebSocketApp.cleanup <apigw_ws_core.app.WebSocketApp.cleanup>`).

    Fields: ``event_type`` ``CLEANUP``, ``dry_run``, ``heal_checked``, ``heal_alive``,
    ``heal_gone`` (sessions whose ``$disconnect`` was lost), ``heal_unknown``,
    ``stale_sessions`` (past the 2 h maximum), ``old_disconnected``, ``expired_tokens``,
    ``counters``, ``history_messages``, ``jobs``. A run that found lost ``$disconnect`` calls
    or could not ask about some sessions logs at WARNING, else INFO.
    """
    heal = result.heal
    store = result.storage
    fields: dict[str, Any] = {
        "event_type": "CLEANUP",
        "dry_run": result.dry_run,
        "heal_checked": heal.checked if heal else 0,
        "heal_alive": heal.alive if heal else 0,
        "heal_gone": len(heal.gone) if heal else 0,
        "heal_unknown": len(heal.unknown) if heal else 0,
        "stale_sessions": store.stale_sessions,
        "old_disconnected": store.old_disconnected,
        "expired_tokens": store.expired_tokens,
        "counters": store.counters,
        "history_messages": store.history_messages,
        "jobs": result.jobs,
    }
    worrying = fields["heal_gone"] or fields["heal_unknown"] or fields["stale_sessions"]
    cleanup_log.log(
        logging.WARNING if worrying else logging.INFO,
        "cleanup: %s",
        result.summary(),
        extra=fields,
    )
    otel = _otel
    if otel is not None and not result.dry_run:
        otel.record_cleanup(fields)


def instrument(tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Turn on OpenTelemetry: a span per event and per send, and the library's metrics.

    ``tracer_provider``/``meter_provider`` default to the global ones
    (``opentelemetry.trace.get_tracer_provider()`` and ``metrics.get_meter_provider()``).
    Needs ``apigw-ws[otel]``. Calling it again replaces the providers.
    """
    global _otel
    from apigw_ws_core.otel import OtelInstrumentation

    _otel = OtelInstrumentation(tracer_provider=tracer_provider, meter_provider=meter_provider)


def uninstrument() -> None:
    """Turn OpenTelemetry off again (the no-OTel path: structured logs only)."""
    global _otel
    _otel = None


def instrumented() -> bool:
    """Whether :func:`instrument` is in effect."""
    return _otel is not None
