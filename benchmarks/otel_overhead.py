"""Cost of OpenTelemetry on a message event: tracing on vs off, as a ratio, in one run.

One process, one app (a ``RecordingTransport``, an ``echo`` handler that replies), one
connected session, on ``MemoryStorage`` (``--storage memory``: the pipeline alone, the worst
case for a ratio) or on ``SqlaStorage`` over a SQLite file (``--storage sqlite``: the
session is read from a database, as in production). A message event (``from_http`` with
API Gateway's headers, including an ``X-Amzn-Trace-Id``) goes through
``WebSocketApp.handle`` in a tight loop:

* **off**: not instrumented (the default: structured log records only, the
  ``apigw_ws.events`` logger at WARNING so records are not formatted);
* **on**: :func:`apigw_ws_core.observability.instrument` with the OpenTelemetry SDK: a
  ``TracerProvider`` with a ``BatchSpanProcessor`` into an exporter that counts and drops
  the spans (they are created, recorded, batched and exported as in production, minus the
  network; keeping them in memory would make the garbage collector's work grow), and a
  ``MeterProvider`` with an in-memory reader (every counter and histogram is recorded).

Off and on alternate ``--rounds`` times (median per-event time of each) so that drift of the
shared machine hits both sides alike. Prints microseconds per event and the ratio on/off.

Usage::

    python benchmarks/otel_overhead.py [--storage memory|sqlite] [--events 5000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from apigw_ws_core import Config, MemoryStorage, WebSocketApp, observability
from apigw_ws_core.events import from_http
from apigw_ws_core.storage import Storage
from apigw_ws_core.testing import RecordingTransport, gateway_headers, new_connection_id

SECRET = "bench-secret-0123456789"
XRAY = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"


class CountingExporter(SpanExporter):
    """Counts exported spans and drops them."""

    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: object) -> SpanExportResult:
        self.exported += len(spans)  # type: ignore[arg-type]
        return SpanExportResult.SUCCESS


def make_storage(kind: str, folder: Path) -> Storage:
    if kind == "memory":
        return MemoryStorage()
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    from apigw_ws_storage.sqla import SqlaStorage

    storage = SqlaStorage(sessionmaker(create_engine(f"sqlite:///{folder}/bench.sqlite3")))
    storage.create_tables()
    return storage


def build(storage: Storage) -> tuple[WebSocketApp, bytes, dict[str, str]]:
    app = WebSocketApp(
        storage=storage,
        transport=RecordingTransport(),
        config=Config(secret=SECRET, require_token=False, message_rate_per_connection=None),
    )

    @app.handler("echo")
    def echo(ctx: object, message: dict[str, object]) -> dict[str, object]:
        return {"echo": message.get("text")}

    cid = new_connection_id()
    app.handle(from_http("connect", gateway_headers("connect", cid, secret=SECRET), ""))
    headers = gateway_headers("default", cid, secret=SECRET, extra={"X-Amzn-Trace-Id": XRAY})
    return app, json.dumps({"action": "echo", "text": "hello"}).encode(), headers


def run(app: WebSocketApp, body: bytes, headers: dict[str, str], events: int) -> float:
    """Seconds per event over ``events`` message events."""
    started = time.perf_counter()
    for _ in range(events):
        reply = app.handle(from_http("default", headers, "", body))
    elapsed = time.perf_counter() - started
    assert reply.status == 200, reply
    return elapsed / events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", choices=["memory", "sqlite"], default="memory")
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    logging.getLogger("apigw_ws").setLevel(logging.WARNING)
    folder = tempfile.TemporaryDirectory()
    app, body, headers = build(make_storage(args.storage, Path(folder.name)))
    exporter = CountingExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    run(app, body, headers, 500)  # warm up both paths
    observability.instrument(tracer_provider, meter_provider)
    run(app, body, headers, 500)
    observability.uninstrument()
    off: list[float] = []
    on: list[float] = []
    for _ in range(args.rounds):
        off.append(run(app, body, headers, args.events))
        observability.instrument(tracer_provider, meter_provider)
        on.append(run(app, body, headers, args.events))
        observability.uninstrument()
        tracer_provider.force_flush()
    off_us = statistics.median(off) * 1e6
    on_us = statistics.median(on) * 1e6
    load = os.getloadavg()[0]
    print(
        f"python {platform.python_version()}, {os.cpu_count()} cores, load average {load:.1f}; "
        f"{args.events} events per round"
    )
    what = f"message event ({args.storage} storage)"
    print(f"{what}, tracing off: {off_us:.1f} us/event (median of {args.rounds} rounds)")
    print(f"{what}, tracing on:  {on_us:.1f} us/event (median of {args.rounds} rounds)")
    print(f"ratio on/off: {on_us / off_us:.2f}  (+{on_us - off_us:.1f} us per event)")
    tracer_provider.shutdown()
    expected = (args.rounds * args.events + 500) + 1  # measured + warm-up events + $connect
    assert exporter.exported >= expected - 1, (exporter.exported, expected)
    folder.cleanup()


if __name__ == "__main__":
    main()
