"""Durable send jobs at scale: is a worker's rate flat from 10,000 to 1,000,000 recipients?

A *simulated* broadcast: the recipients are real rows in PostgreSQL (``SqlaStorage``, its
own database ``apigw_ws_bench``, filled with ``COPY``), the job runs exactly as a worker
runs it (:func:`apigw_ws_core.jobs.run_job_part`: keyset pages of ``job_batch_size``, one
compare-and-set checkpoint per page), and the transport is a no-network
:class:`~apigw_ws_core.transport.AsyncTransport` whose ``apost`` returns at once. What is
left is everything a worker does besides waiting for API Gateway: paging, checkpoints, the
fan-out engine. If pagination or checkpoints grew with the table, the rate would fall as
the job goes on and as the table grows; the benchmark prints the rate over the whole job
and over its first and last tenth.

It also writes the figures as JSON (``--json``) for ``benchmarks/plot_scaling.py``.

Usage::

    .venv/bin/python benchmarks/jobs_scale.py                       # 10k, 100k, 1M
    .venv/bin/python benchmarks/jobs_scale.py --sizes 10000 100000 --json /tmp/jobs.json

Needs PostgreSQL (``APIGW_WS_TEST_POSTGRES_URL``, default
``postgresql://postgres@127.0.0.1:5432/test``; the benchmark creates and uses the database
``apigw_ws_bench`` next to it). It prints numbers; it asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for sub in (".", "storage"):
    sys.path.insert(0, str(ROOT / sub))

from apigw_ws_core import Config, WebSocketApp  # noqa: E402
from apigw_ws_core.jobs import create_job, job_status, run_job_part  # noqa: E402
from apigw_ws_core.transport import AsyncTransport, Payload  # noqa: E402

DB = "apigw_ws_bench"


class NoNetwork(AsyncTransport):
    """Every post succeeds at once: what remains is the worker's own work."""

    def __init__(self) -> None:
        super().__init__()
        self.posts = 0

    async def apost(
        self, connection_id: str, payload: Payload, *, timeout: float | None = None
    ) -> None:
        self.posts += 1

    def delete(self, connection_id: str) -> None:
        raise NotImplementedError

    def get(self, connection_id: str) -> dict[str, Any]:
        raise NotImplementedError


def database_url(base: str) -> str:
    """Create ``apigw_ws_bench`` on the server of ``base`` (if missing); its SQLAlchemy URL."""
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB,)).fetchone()
        if not exists:
            conn.execute(f"CREATE DATABASE {DB}")
    server = base.rsplit("/", 1)[0]
    return server.replace("postgresql://", "postgresql+psycopg://", 1) + f"/{DB}"


def fill(engine: Any, table: str, n: int) -> float:
    """Replace the sessions with ``n`` connected ones (one ``COPY``); return seconds."""
    started = time.monotonic()
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute(f"TRUNCATE {table} CASCADE")
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
        columns = "connection_id, channel_name, connected, source_ip, user_agent, stage, api_id"
        with cur.copy(f"COPY {table} ({columns}, connected_at) FROM STDIN") as copy:
            buf = io.StringIO()
            for i in range(n):
                buf.write(f"c{i:014d}=\tall\tt\t\t\tbench\tapi\t{now}\n")
                if buf.tell() > 1 << 20:
                    copy.write(buf.getvalue())
                    buf = io.StringIO()
            copy.write(buf.getvalue())
        cur.execute(f"ANALYZE {table}")
        raw.commit()
    finally:
        raw.close()
    return time.monotonic() - started


def run(app: WebSocketApp, n: int) -> dict[str, Any]:
    """One job to everyone; the rate overall and over its first and last tenth."""
    storage = app.storage
    marks: list[tuple[float, int]] = []
    checkpoint = storage.checkpoint_job_part

    def timed_checkpoint(*args: Any, **kwargs: Any) -> bool:
        ok = checkpoint(*args, **kwargs)
        marks.append((time.monotonic(), kwargs["add"].recipients))
        return ok

    storage.checkpoint_job_part = timed_checkpoint  # type: ignore[method-assign]
    try:
        message = create_job(storage, b'{"type":"bench"}', {"everyone": True})
        started = time.monotonic()
        run_job_part(app, message)
        elapsed = time.monotonic() - started
    finally:
        del storage.checkpoint_job_part  # type: ignore[method-assign]
    status = job_status(storage, message["job_id"])
    if status is None or status.counts.delivered != n:
        raise RuntimeError(f"the job did not deliver to every recipient: {status}")
    tenth = max(1, len(marks) // 10)

    def rate(chunk: list[tuple[float, int]], before: float) -> float:
        return sum(r for _, r in chunk) / (chunk[-1][0] - before)

    first = rate(marks[:tenth], started)
    last = rate(marks[-tenth - 1 : -1], marks[-tenth - 2][0]) if len(marks) > tenth + 2 else first
    return {
        "recipients": n,
        "seconds": elapsed,
        "rate": n / elapsed,
        "first_tenth_rate": first,
        "last_tenth_rate": last,
        "checkpoints": len(marks),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--batch", type=int, default=500, help="job_batch_size")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    from sqlalchemy import create_engine

    from apigw_ws_storage.sqla import SqlaStorage

    base = os.environ.get("APIGW_WS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    engine = create_engine(database_url(base))
    storage = SqlaStorage(engine)
    storage.create_tables()
    table = storage.models.session_table.name
    transport = NoNetwork()
    config = Config(secret="s", job_batch_size=args.batch, job_rate_limit=None)
    app = WebSocketApp(storage=storage, transport=transport, config=config)
    print(
        f"durable job, PostgreSQL, no-network transport, job_batch_size {args.batch}, "
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores",
        flush=True,
    )
    results = []
    for n in args.sizes:
        load = os.getloadavg()[0]
        fill_s = fill(engine, table, n)
        result = run(app, n)
        result["load_average"] = load
        result["fill_seconds"] = fill_s
        results.append(result)
        print(
            f"  {n:>9,} recipients: {result['seconds']:7.2f} s, {result['rate']:8.0f} recipients/s"
            f" (first tenth {result['first_tenth_rate']:.0f}/s, last tenth "
            f"{result['last_tenth_rate']:.0f}/s), {result['checkpoints']} checkpoints; "
            f"load average {load:.1f}; table filled in {fill_s:.1f} s",
            flush=True,
        )
    app.close()
    engine.dispose()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
