"""Production logging and OpenTelemetry for an apigw-ws app (docs/operations.rst).

``LOGGING`` is a standard ``logging.config.dictConfig`` dictionary (Django reads it from
settings as is; elsewhere call ``logging.config.dictConfig(LOGGING)``): one JSON object per
line on standard output, with apigw-ws's structured fields as keys.

``setup_telemetry`` turns on apigw-ws's OpenTelemetry spans and metrics with the exporters
you pass (OTLP to a collector in production).
"""

from __future__ import annotations

from typing import Any

LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"levelname": "level", "name": "logger"},
        }
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": "json",
        }
    },
    "loggers": {
        # One record per event (INFO; rejected events WARNING, 5xx ERROR).
        "apigw_ws.events": {"level": "INFO"},
        # One record per send (DEBUG; sends with failed recipients WARNING).
        "apigw_ws.fanout": {"level": "WARNING"},
    },
    "root": {"handlers": ["stdout"], "level": "WARNING"},
}


def setup_telemetry(span_exporter: Any, metric_reader: Any, service_name: str = "chat") -> Any:
    """Install OpenTelemetry SDK providers and instrument apigw-ws; returns the tracer
    provider (call its ``shutdown()`` when the process ends)."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from apigw_ws_core.observability import instrument

    resource = Resource.create({"service.name": service_name})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    meter_provider = MeterProvider(resource=resource, metric_readers=[metric_reader])
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    instrument()  # uses the global providers just set
    return tracer_provider
