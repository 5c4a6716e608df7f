"""docs/examples/rq_jobs.py: durable, sharded jobs run by a real RQ worker (in-process,
burst mode) on Redis."""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

rq = pytest.importorskip("rq")
redis = pytest.importorskip("redis")

from apigw_ws_core import Config, MemoryStorage, WebSocketApp  # noqa: E402
from apigw_ws_core.storage import Session  # noqa: E402
from apigw_ws_core.testing import RecordingTransport  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "rq_jobs.py"


def _load():
    spec = importlib.util.spec_from_file_location("rq_jobs", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the worker imports run_part by its module name
    spec.loader.exec_module(module)
    return module


@pytest.mark.redis
def test_rq_worker_runs_sharded_durable_jobs():
    url = os.environ.get("APIGW_WS_TEST_REDIS_URL")
    if not url:
        pytest.skip("APIGW_WS_TEST_REDIS_URL not set")
    rq_jobs = _load()
    storage = MemoryStorage()
    now = datetime.now(UTC)
    for i in range(45):
        storage.create_session(
            Session(connection_id=f"conn-{i:06d}=", channel_name="room", connected_at=now)
        )
    transport = RecordingTransport()
    config = Config(secret="s", job_batch_size=10, job_shard_size=20, job_rate_limit=None)
    app = WebSocketApp(storage=storage, transport=transport, config=config)
    rq_jobs.get_ws_app = lambda: app
    connection = redis.Redis.from_url(url)
    queue = rq.Queue(f"apigw-ws-test-{uuid.uuid4().hex[:8]}", connection=connection)
    app.background_runner = rq_jobs.rq_runner(app, queue)
    handle = app.send_in_background({"hello": 1}, channel="room")
    worker = rq.SimpleWorker([queue], connection=connection)
    worker.work(burst=True)
    status = handle.status()
    assert status is not None and status.status == "done"
    assert len(status.parts) == 4  # the plan and three shards, each an RQ job
    assert status.counts.delivered == 45
    assert sorted(m.connection_id for m in transport.sent) == [f"conn-{i:06d}=" for i in range(45)]
    queue.delete(delete_jobs=True)
