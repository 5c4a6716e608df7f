"""Durable send jobs at scale: is a worker's rate flat from 10,000 to 1,000,000 recipients?

A *simulated* broadcast: the recipients are real rows in PostgreSQL (``SqlaStorage``, its
own database ``apigw_ws_bench``, filled with ``COPY``), the job runs exactly as a worker
runs it (:func:`apigw_ws_core.jobs.run_job_part`: keyset pages of ``job_batch_size``, one
compare-and-set checkpoint per page), and the transport is a no-network
:class:`~apigw_ws_core.transport.AsyncTransport` whose ``apost`` returns at once. What is
left is everything a worker does besides waiting for API Gateway: paging, checkpoints, the
fan-out engine. If pagination or checkpoints grew with the table, the rate would fall as
the job goes on and as the table grows; the benchmark prints the rate over the whole job
and over each tenth of it, and the worker's CPU time per recipient (which other load on
the machine moves much less than the rates).

It also writes the figures as JSON (``--json``), and draws ``docs/_static/scaling-jobs.png``
(``--plot``, needs matplotlib: ``pip install -r requirements/bench.txt``): the measured
rate per worker beside the capacity model of docs/scaling.rst, which takes the per-worker
rate through the local gateway from ``benchmarks/jobs_workers.py --json``
(``--workers-json``). ``--plot-only`` redraws from saved JSON without running anything.

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
        raw.commit()
    finally:
        raw.close()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"VACUUM ANALYZE {table}")  # as autovacuum would, soon after
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
        cpu = time.process_time()
        run_job_part(app, message)
        elapsed = time.monotonic() - started
        cpu = time.process_time() - cpu
    finally:
        del storage.checkpoint_job_part  # type: ignore[method-assign]
    status = job_status(storage, message["job_id"])
    if status is None or status.counts.delivered != n:
        raise RuntimeError(f"the job did not deliver to every recipient: {status}")
    # the rate over each tenth of the job (pages in order): flat if nothing grows
    tenths = []
    size = max(1, len(marks) // 10)
    before = started
    for i in range(0, len(marks) - 1, size):
        chunk = marks[i : i + size]
        tenths.append(sum(r for _, r in chunk) / max(1e-9, chunk[-1][0] - before))
        before = chunk[-1][0]
    first, last = tenths[0], tenths[-1]
    return {
        "tenths": tenths,
        "cpu_us_per_recipient": 1e6 * cpu / n,
        "recipients": n,
        "seconds": elapsed,
        "rate": n / elapsed,
        "first_tenth_rate": first,
        "last_tenth_rate": last,
        "checkpoints": len(marks),
    }


#: The capacity model's caps: API Gateway's default account quota with the default
#: ``JOB_RATE_LIMIT`` (half of it), and a raised quota with the same share.
CAPS = {
    "default quota 10,000 rps, jobs capped at 5,000/s": 5_000.0,
    "raised quota 100,000 rps, jobs capped at 50,000/s": 50_000.0,
}
SIZES = [100_000, 1_000_000, 10_000_000]


def capacity(per_worker: float) -> list[dict[str, Any]]:
    """Workers and time for each broadcast size and cap, from a per-worker rate."""
    rows = []
    for label, cap in CAPS.items():
        workers = max(1, -(-int(cap) // int(per_worker)))
        for n in SIZES:
            rows.append(
                {
                    "cap": label,
                    "recipients": n,
                    "workers": workers,
                    "seconds": n / min(cap, workers * per_worker),
                }
            )
    return rows


def plot(results: list[dict[str, Any]], workers: dict[str, Any] | None, out: Path) -> None:
    """Measured per-worker rate (left) and the capacity model (right) into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    sizes = [r["recipients"] for r in results]
    left.scatter(sizes, [r["rate"] for r in results], label="whole job", zorder=3)
    for r in results:
        left.scatter(
            [r["recipients"]] * len(r["tenths"]),
            r["tenths"],
            s=8,
            alpha=0.35,
            color="gray",
            zorder=2,
        )
    left.scatter([], [], s=8, color="gray", alpha=0.35, label="each tenth of the job")
    left.set_xscale("log")
    left.set_ylim(bottom=0)
    left.set_xlabel("recipients in PostgreSQL")
    left.set_ylabel("recipients/s, one worker")
    left.set_title("Worker rate, no-network transport")
    cpu = [r.get("cpu_us_per_recipient") for r in results]
    if all(c is not None for c in cpu):
        twin = left.twinx()
        twin.plot(sizes, cpu, "s", color="tab:red", label="worker CPU per recipient")
        twin.set_ylabel("worker CPU, microseconds per recipient", color="tab:red")
        twin.set_ylim(bottom=0, top=max(cpu) * 2.5)
        twin.legend(loc="lower right", fontsize=8)
    left.legend(loc="lower left", fontsize=8)
    per_worker = None
    if workers:
        rates = workers["rates"].get("celery1") or []
        per_worker = sorted(rates)[len(rates) // 2] if rates else None
    if per_worker:
        xs = [10_000 * 10 ** (i / 4) for i in range(17)]
        for label, cap in CAPS.items():
            n_workers = max(1, -(-int(cap) // int(per_worker)))
            rate = min(cap, n_workers * per_worker)
            right.plot(xs, [x / rate for x in xs], label=f"{label}: {n_workers} workers")
        one = [x / per_worker for x in xs]
        right.plot(xs, one, linestyle="--", color="gray", label="one worker")
        right.set_xscale("log")
        right.set_yscale("log")
        right.set_xlabel("connections in the broadcast")
        right.set_ylabel("seconds")
        right.set_title(f"Capacity model ({per_worker:,.0f} recipients/s per worker)")
        right.legend(fontsize=7, loc="upper left")
        right.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--batch", type=int, default=500, help="job_batch_size")
    parser.add_argument("--repeat", type=int, default=1, help="runs per size")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--plot", type=Path, help="draw the figure (PNG) here")
    parser.add_argument("--workers-json", type=Path, help="jobs_workers.py --json output")
    parser.add_argument("--plot-only", action="store_true", help="redraw from --json")
    args = parser.parse_args()
    workers = json.loads(args.workers_json.read_text()) if args.workers_json else None
    if args.plot_only:
        results = json.loads(args.json.read_text())
        plot(results, workers, args.plot)
        if workers:
            rates = sorted(workers["rates"]["celery1"])
            for row in capacity(rates[len(rates) // 2]):
                print(row)
        return

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
    for n in [size for size in args.sizes for _ in range(args.repeat)]:
        load = os.getloadavg()[0]
        fill_s = fill(engine, table, n)
        result = run(app, n)
        result["load_average"] = load
        result["fill_seconds"] = fill_s
        results.append(result)
        print(
            f"  {n:>9,} recipients: {result['seconds']:7.2f} s, {result['rate']:8.0f} recipients/s"
            f" (by tenth of the job: {min(result['tenths']):.0f}-{max(result['tenths']):.0f}/s, "
            f"first {result['first_tenth_rate']:.0f}, last {result['last_tenth_rate']:.0f}), "
            f"{result['checkpoints']} checkpoints, worker CPU "
            f"{result['cpu_us_per_recipient']:.0f} us/recipient; "
            f"load average {load:.1f}; table filled in {fill_s:.1f} s",
            flush=True,
        )
    app.close()
    engine.dispose()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.plot:
        plot(results, workers, args.plot)


if __name__ == "__main__":
    main()
