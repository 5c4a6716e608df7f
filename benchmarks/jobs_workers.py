"""A broadcast to N local-gateway connections: in-process vs one Celery worker vs two.

The local gateway (own process, ``--management-latency-ms``, 20 ms by default) holds N
real WebSocket connections opened by a client process that counts what each receives (the
gateway and client of ``benchmarks/fanout.py``). The sessions live in a SQLite file that
the sender and the workers share. The same message goes out:

(a) in-process, ``app.send(everyone=True)`` (no job, no checkpoints);
(b) in-process as a durable job (``run_job_part``: pages, checkpoints, no queue);
(c) as a durable job on Celery (Redis broker): one worker process, then two. The job is
    sharded (``--shard``, 2,500 by default: two shards for 5,000 connections) so that two
    workers can share it; one worker runs both shards one after the other.

Every variant must reach every client exactly once. Rates are recipients per second from
the call (or the enqueue) to the job's end. On a 2-core machine the gateway, the clients
and the workers share the cores, so a second worker adds a process more than it adds CPU:
the figures say what one machine does, not what two machines would.

Usage::

    .venv/bin/python benchmarks/jobs_workers.py                   # 5,000 connections, 20 ms
    .venv/bin/python benchmarks/jobs_workers.py -n 1000 --rounds 1

Needs Redis (``APIGW_WS_TEST_REDIS_URL``, default ``redis://127.0.0.1:6379/15``). It prints
numbers; it asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for sub in (".", "adapters/django", "adapters/flask", "storage"):
    sys.path.insert(0, str(ROOT / sub))

_spec = importlib.util.spec_from_file_location("bench_fanout", ROOT / "benchmarks" / "fanout.py")
if _spec is None or _spec.loader is None:
    raise ImportError("benchmarks/fanout.py not found")
fb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fb)


def start_worker(env: dict[str, str], state: Path, name: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "celery", "-A", "tests.jobs.worker", "worker"]
    cmd += ["--pool=prefork", "--concurrency=1", "-n", f"{name}@%h", "-l", "warning"]
    cmd += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    log = (state / f"{name}.log").open("w")
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def wait_ready(procs: list[subprocess.Popen[bytes]], state: Path) -> None:
    end = time.monotonic() + 120
    while not all((state / f"ready-{p.pid}").exists() for p in procs):
        if time.monotonic() > end or any(p.poll() is not None for p in procs):
            raise RuntimeError("a worker did not start; see its log in " + str(state))
        time.sleep(0.1)


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--connections", type=int, default=5000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--shard", type=int, default=2500, help="job_shard_size")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    from botocore.credentials import Credentials
    from celery import Celery
    from sqlalchemy import create_engine

    from apigw_ws_celery import CeleryRunner
    from apigw_ws_core import Config, WebSocketApp
    from apigw_ws_core.jobs import create_job, run_job_part
    from apigw_ws_core.storage import Session
    from apigw_ws_core.transport import ManagementApiTransport
    from apigw_ws_storage.sqla import SqlaStorage

    n = args.connections
    broker = os.environ.get("APIGW_WS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    state = Path(tempfile.mkdtemp(prefix="apigw-ws-jobs-bench-"))
    db_url = f"sqlite:///{state / 'jobs.db'}"
    storage = SqlaStorage(create_engine(db_url, connect_args={"timeout": 30}))
    storage.create_tables()
    gw = fb.GatewayProc(args.latency_ms)
    clients = fb.Clients(gw.ws_url, n)
    config = Config(secret="s", job_shard_size=args.shard, job_rate_limit=None)
    transport = ManagementApiTransport(
        gw.endpoint,
        credentials=Credentials("test", "test"),
        max_connections=config.send_max_concurrency,
    )
    app = WebSocketApp(storage=storage, transport=transport, config=config)
    queue = f"apigw-ws-bench-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            str(ROOT / p) for p in (".", "adapters/django", "adapters/flask", "storage")
        ),
        "JOBS_BROKER_URL": broker,
        "JOBS_QUEUE": queue,
        "JOBS_DB_URL": db_url,
        "JOBS_MANAGEMENT_ENDPOINT": gw.endpoint,
        "JOBS_BATCH": str(config.job_batch_size),
        "JOBS_SHARD": str(args.shard),
        "JOBS_CONCURRENCY": str(config.send_concurrency),
        "JOBS_MAX_CONCURRENCY": str(config.send_max_concurrency),
        "JOBS_STATE_DIR": str(state),
    }
    celery_app = Celery("apigw_ws_bench", broker=broker, set_as_current=True)
    celery_app.conf.task_default_queue = queue
    runner = CeleryRunner(app)
    results: dict[str, list[float]] = {}
    workers: list[subprocess.Popen[bytes]] = []
    try:
        ids = gw.open_ids()
        now = datetime.now(UTC)
        for cid in ids:
            storage.create_session(Session(connection_id=cid, channel_name="all", connected_at=now))
        print(
            f"jobs benchmark: {len(ids)} connections, management latency {args.latency_ms:g} ms, "
            f"shards of {args.shard}, python {sys.version.split()[0]}, {os.cpu_count()} cores",
            flush=True,
        )

        def measure(key: str, label: str, send: Any) -> None:
            tag = f"{key}-{len(results.get(key, []))}"
            load = os.getloadavg()[0]
            started = time.monotonic()
            send(fb.message(tag, 200))
            got = clients.wait_count(tag, n, timeout=120)
            elapsed = time.monotonic() - started
            results.setdefault(key, []).append(n / elapsed)
            ok = (
                "every client got it exactly once"
                if got["received"] == n and not got["duplicates"]
                else f"{got['received']}/{n} received, {got['duplicates']} duplicates"
            )
            print(
                f"  {label:<44} {elapsed:7.2f} s {n / elapsed:8.0f} recipients/s  "
                f"load average {load:4.1f}  [{ok}]",
                flush=True,
            )

        def durable(data: bytes) -> None:
            run_job_part(app, create_job(storage, data, {"everyone": True}))

        def on_celery(data: bytes) -> None:
            handle = runner(fb_job(data))
            handle.wait(timeout=300, poll=0.05)

        from apigw_ws_core.fanout import SendJob

        def fb_job(data: bytes) -> SendJob:
            return SendJob(payload=data, everyone=True)

        for _ in range(args.rounds):
            measure(
                "inprocess",
                "(a) in-process app.send(everyone=True)",
                lambda d: app.send(d, everyone=True),
            )
            measure("durable", "(b) in-process durable job", durable)
        workers.append(start_worker(env, state, "w1"))
        wait_ready(workers, state)
        for _ in range(args.rounds):
            measure("celery1", "(c) Celery, one worker process", on_celery)
        workers.append(start_worker(env, state, "w2"))
        wait_ready(workers, state)
        for _ in range(args.rounds):
            measure("celery2", "(c) Celery, two worker processes", on_celery)
    finally:
        stop_workers(workers)
        clients.stop()
        gw.stop()
        app.close()
        celery_app.close()
    if args.json:
        args.json.write_text(
            json.dumps(
                {"connections": n, "latency_ms": args.latency_ms, "rates": results}, indent=2
            )
        )


if __name__ == "__main__":
    main()
