"""Durable jobs on a real Celery worker (prefork) against Redis and RabbitMQ, sending
through the local gateway to real WebSocket clients.

* SIGKILL of the worker child while a page is in flight: the broker redelivers (late ack,
  reject on worker lost), the job resumes from its checkpoint; every client has the
  message, and the duplicates are exactly the one re-sent page, the job's ``ambiguous``.
* A sharded job on two worker processes (prefork children): every client receives it
  once, and both processes sent shards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("celery")
pytest.importorskip("aiohttp")
websockets_client = pytest.importorskip("websockets.asyncio.client")
werkzeug_serving = pytest.importorskip("werkzeug.serving")

from botocore.credentials import Credentials  # noqa: E402
from sqlalchemy import create_engine  # noqa: E402

from apigw_ws_core import Config, WebSocketApp  # noqa: E402
from apigw_ws_core.jobs import JobHandle  # noqa: E402
from apigw_ws_core.local.config import GatewayOptions, config_from_backend  # noqa: E402
from apigw_ws_core.local.testing import LocalGateway, wait_until  # noqa: E402
from apigw_ws_core.transport import ManagementApiTransport  # noqa: E402
from apigw_ws_core.wsgi import make_wsgi_app  # noqa: E402
from apigw_ws_storage.sqla import SqlaStorage  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SECRET = "jobs-secret"
N = 60
BATCH = 10


def _broker(name: str) -> str:
    if name == "redis":
        url = os.environ.get("APIGW_WS_TEST_REDIS_URL")
    else:
        url = os.environ.get("APIGW_WS_TEST_RABBITMQ_URL")
    if not url:
        if os.environ.get("APIGW_WS_REQUIRE_SERVICES"):
            pytest.fail(f"{name} is required (APIGW_WS_REQUIRE_SERVICES)")
        pytest.skip(f"{name} not configured")
    return url


class Clients:
    """``n`` real WebSocket clients on one event loop thread, counting what they receive."""

    def __init__(self, url: str, n: int):
        self.received: list[list[str]] = [[] for _ in range(n)]
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, n), daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise TimeoutError("clients did not connect")

    def _run(self, url: str, n: int) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main(url, n))

    async def _main(self, url: str, n: int) -> None:
        self._stop = asyncio.Event()
        conns = []
        for _ in range(n):
            conns.append(await websockets_client.connect(url))
        self._ready.set()

        async def pump(i: int, ws: Any) -> None:
            try:
                async for message in ws:
                    self.received[i].append(message)
            except Exception:
                pass

        tasks = [asyncio.create_task(pump(i, ws)) for i, ws in enumerate(conns)]
        await self._stop.wait()
        for ws in conns:
            await ws.close()
        await asyncio.gather(*tasks, return_exceptions=True)

    def counts(self) -> list[int]:
        return [len(r) for r in self.received]

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


class Worker:
    """``celery -A tests.jobs.worker worker --pool=prefork --concurrency=N``."""

    def __init__(self, env: dict[str, str], state: Path, name: str, concurrency: int = 1):
        self.state = state
        self.name = name
        cmd = [sys.executable, "-m", "celery", "-A", "tests.jobs.worker", "worker"]
        cmd += ["--pool=prefork", f"--concurrency={concurrency}", "-n", f"{name}@%h"]
        cmd += ["-l", "warning", "--without-gossip", "--without-mingle", "--without-heartbeat"]
        self.log = (state / f"{name}.log").open("w")
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # stop() kills the whole group
        )

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            log = (self.state / f"{self.name}.log").read_text()[-2000:]
            raise RuntimeError(f"worker exited: {log}")
        return (self.state / f"ready-{self.proc.pid}").exists()

    def stop(self) -> None:
        """Kill the worker and its children at once (nothing is left to finish)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.log.close()


def _children(state: Path) -> list[int]:
    path = state / "children"
    return [int(x) for x in path.read_text().split()] if path.exists() else []


class Stack:
    """Web app (WSGI) + local gateway + SQLite file storage + N clients + Celery workers."""

    def __init__(self, tmp: Path, broker: str, latency_ms: float, shard: int = 50_000):
        self.tmp = tmp
        db_url = f"sqlite:///{tmp / 'jobs.db'}"
        self.storage = SqlaStorage(create_engine(db_url, connect_args={"timeout": 30}))
        self.storage.create_tables()
        config = Config(
            secret=SECRET,
            require_token=False,
            job_batch_size=BATCH,
            job_shard_size=shard,
            job_rate_limit=None,
        )
        self.app = WebSocketApp(storage=self.storage, config=config)
        self.server = werkzeug_serving.make_server(
            "127.0.0.1", 0, make_wsgi_app(self.app), threaded=True
        )
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        api = config_from_backend(f"http://127.0.0.1:{self.server.port}/", secret=SECRET)
        self.gateway = LocalGateway(api, GatewayOptions(management_latency_ms=latency_ms)).start()
        self.app.transport = ManagementApiTransport(
            self.gateway.management_endpoint, credentials=Credentials("test", "test")
        )
        queue = f"apigw-ws-test-{uuid.uuid4().hex[:8]}"
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                str(ROOT / p) for p in (".", "adapters/django", "adapters/flask", "storage")
            ),
            "JOBS_BROKER_URL": broker,
            "JOBS_QUEUE": queue,
            "JOBS_DB_URL": db_url,
            "JOBS_MANAGEMENT_ENDPOINT": self.gateway.management_endpoint,
            "JOBS_BATCH": str(BATCH),
            "JOBS_SHARD": str(shard),
            "JOBS_STATE_DIR": str(tmp),
        }
        # The enqueuing side: a Celery app of its own for this broker and queue.
        from celery import Celery

        self.celery = Celery("apigw_ws_jobs_enqueue", broker=broker, set_as_current=True)
        self.celery.conf.update(task_default_queue=queue, broker_connection_retry=False)
        self.celery.set_current()
        from apigw_ws_celery import CeleryRunner

        self.app.background_runner = CeleryRunner(self.app)
        self.workers: list[Worker] = []
        self.clients = Clients(self.gateway.ws_url, N)
        wait_until(lambda: self.storage.count_recipients() == N, timeout=20)

    def start_workers(self, n: int, concurrency: int = 1) -> None:
        for i in range(n):
            self.workers.append(Worker(self.env, self.tmp, f"w{i + 1}", concurrency))
        wait_until(lambda: all(w.ready() for w in self.workers), timeout=60, interval=0.1)

    def close(self) -> None:
        for w in self.workers:
            w.stop()
        self.clients.close()
        self.gateway.stop()
        self.server.shutdown()
        self.app.close()
        self.celery.close()


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[Any]:
    stacks: list[Stack] = []

    def make(*args: Any, **kwargs: Any) -> Stack:
        stack = Stack(tmp_path, *args, **kwargs)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.close()


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_sigkill_mid_job_resumes_with_one_ambiguous_page(make_stack: Any, broker: str) -> None:
    stack = make_stack(_broker(broker), latency_ms=400)
    stack.start_workers(1)
    handle = stack.app.send_in_background({"type": "news", "n": 1}, everyone=True)
    assert isinstance(handle, JobHandle)
    # Pages 1 and 2 are checkpointed; page 3 has reached every one of its clients, and the
    # gateway's answers are still on their way back (the second 200 ms of its 400 ms):
    # kill the child now, before it can checkpoint page 3.
    wait_until(lambda: sum(stack.clients.counts()) >= 3 * BATCH, timeout=30, interval=0.002)
    (child,) = _children(stack.tmp)
    os.kill(child, signal.SIGKILL)
    status = handle.wait(timeout=60)
    assert status.status == "done", status
    time.sleep(1.0)  # everything in flight has arrived
    counts = stack.clients.counts()
    assert min(counts) >= 1, counts  # every live client has the message
    duplicates = sum(c - 1 for c in counts)
    assert duplicates == status.counts.ambiguous == BATCH, (counts, status)
    assert status.counts.delivered == N
    assert status.parts[0].runs == 2
    assert len(_children(stack.tmp)) == 2  # the killed child was replaced


def test_sharded_job_on_two_worker_processes_reaches_every_client(make_stack: Any) -> None:
    stack = make_stack(_broker("redis"), latency_ms=40, shard=20)
    stack.start_workers(1, concurrency=2)  # two prefork worker processes
    wait_until(lambda: len(_children(stack.tmp)) == 2, timeout=30)
    handle = stack.app.send_in_background({"type": "news", "n": 2}, everyone=True)
    status = handle.wait(timeout=60)
    assert status.status == "done", status
    assert len(status.parts) == 4  # the plan and three shards
    assert status.counts.delivered == N and status.counts.ambiguous == 0
    wait_until(lambda: sum(stack.clients.counts()) >= N, timeout=10)
    time.sleep(0.2)
    assert stack.clients.counts() == [1] * N
    ran = [line.split() for line in (stack.tmp / "tasks").read_text().splitlines()]
    shard_pids = {pid for pid, part in ran if part != "0"}
    assert len(shard_pids) == 2, ran  # both worker processes sent shards
