"""docs/examples/observability.py: the JSON logging config and the OpenTelemetry setup that
docs/operations.rst shows, run against a real pipeline.

The OpenTelemetry part runs in a subprocess: OpenTelemetry's global providers can be set only
once per process."""

from __future__ import annotations

import importlib.util
import json
import logging
import logging.config
import subprocess
import sys
from pathlib import Path

import pytest

from tests.core.helpers import connect, make_app, message

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "observability.py"


def load_example():
    spec = importlib.util.spec_from_file_location("docs_observability", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def restore_logging():
    loggers = ["apigw_ws.events", "apigw_ws.fanout", ""]
    saved = {
        name: (logging.getLogger(name).level, list(logging.getLogger(name).handlers))
        for name in loggers
    }
    yield
    for name, (level, handlers) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.handlers[:] = handlers


def test_json_logging_config(capsys, restore_logging) -> None:
    logging.config.dictConfig(load_example().LOGGING)
    app = make_app(require_token=False)
    _, cid = connect(app, query="channel=room")
    message(app, cid, json.dumps({"action": "chat_message", "text": "hi"}))
    message(app, cid, "[]")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["event_type"] for line in lines] == ["CONNECT", "MESSAGE", "MESSAGE"]
    ok, bad = lines[1], lines[2]
    assert ok["logger"] == "apigw_ws.events" and ok["level"] == "INFO"
    assert ok["handler"] == "chat_message" and ok["status"] == 200
    assert ok["connection"] == cid[:8] and isinstance(ok["latency_ms"], float)
    assert bad["level"] == "WARNING" and bad["error_code"] == "invalid_message"


SCRIPT = f"""
import json, sys
sys.path.insert(0, {str(EXAMPLE.parent)!r})
from observability import setup_telemetry
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tests.core.helpers import connect, make_app, message

exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
provider = setup_telemetry(exporter, reader)
app = make_app(require_token=False)
_, cid = connect(app, query="channel=room")
message(app, cid, json.dumps({{"action": "chat_message", "text": "hi"}}))
provider.force_flush()
spans = [(s.name, s.resource.attributes["service.name"]) for s in exporter.get_finished_spans()]
names = sorted(
    m.name
    for rm in reader.get_metrics_data().resource_metrics
    for sm in rm.scope_metrics
    for m in sm.metrics
)
print(json.dumps({{"spans": spans, "metrics": names}}))
provider.shutdown()
"""


def test_telemetry_setup() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=EXAMPLE.parents[2],
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["spans"] == [
        ["apigw_ws CONNECT", "chat"],
        ["apigw_ws send", "chat"],
        ["apigw_ws MESSAGE", "chat"],
    ]
    assert data["metrics"] == [
        "apigw_ws.event.duration",
        "apigw_ws.events",
        "apigw_ws.handler.duration",
        "apigw_ws.send.duration",
        "apigw_ws.send.recipients",
    ]
