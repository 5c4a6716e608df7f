"""Durable send jobs in-process (memory storage, recording transport): checkpoints, resume
after a crash between sending a page and checkpointing it, sharding, status, caps."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from apigw_ws_core import Config, MemoryStorage, WebSocketApp
from apigw_ws_core.errors import ConfigurationError
from apigw_ws_core.jobs import (
    JobHandle,
    LocalRateCap,
    create_job,
    fail_job_part,
    job_status,
    run_job_part,
)
from apigw_ws_core.storage import JobCounts, Session
from apigw_ws_core.testing import RecordingTransport


def _session(cid: str, channel: str = "room") -> Session:
    return Session(connection_id=cid, channel_name=channel, connected_at=datetime.now(UTC))


def _app(n: int, storage: MemoryStorage | None = None, **cfg: Any) -> WebSocketApp:
    storage = storage or MemoryStorage()
    for i in range(n):
        storage.create_session(_session(f"conn-{i:06d}="))
    config = Config(secret="s", job_batch_size=10, job_rate_limit=None, **cfg)
    return WebSocketApp(storage=storage, transport=RecordingTransport(), config=config)


def _received(app: WebSocketApp) -> Counter[str]:
    transport = app.transport
    assert isinstance(transport, RecordingTransport)
    return Counter(m.connection_id for m in transport.sent)


class CrashingStorage(MemoryStorage):
    """Dies (as a killed worker would) at the n-th checkpoint, after its page was sent."""

    def __init__(self) -> None:
        super().__init__()
        self.crash_at: int | None = None
        self.checkpoints = 0

    def checkpoint_job_part(self, *args: Any, **kwargs: Any) -> bool:
        self.checkpoints += 1
        if self.crash_at is not None and self.checkpoints == self.crash_at:
            raise ConnectionError("worker died")
        return super().checkpoint_job_part(*args, **kwargs)


def test_job_sends_everyone_with_checkpoints_and_status() -> None:
    app = _app(35)
    message = create_job(app.storage, b'{"x":1}', {"channel": "room"})
    status = app.job_status(message["job_id"])
    assert status is not None and status.status == "pending" and status.progress is None
    part = run_job_part(app, message)
    assert part is not None and part.status == "done" and part.runs == 1
    assert _received(app) == {f"conn-{i:06d}=": 1 for i in range(35)}
    status = app.job_status(message["job_id"])
    assert status is not None and status.finished and status.status == "done"
    assert status.counts.delivered == 35 and status.counts.ambiguous == 0
    assert status.expected == 35 and status.progress == 1.0
    assert status.as_dict()["parts"] == 1
    # running the same message again (a redelivery after the end) sends nothing
    run_job_part(app, message)
    assert sum(_received(app).values()) == 35


def test_killed_worker_resumes_and_resends_one_page_as_ambiguous() -> None:
    storage = CrashingStorage()
    app = _app(35, storage)
    message = create_job(storage, b"hi", {"everyone": True})
    storage.crash_at = 3  # the 3rd page was sent, its checkpoint never written
    with pytest.raises(ConnectionError):
        run_job_part(app, message)
    status = app.job_status(message["job_id"])
    assert status is not None and status.status == "running" and status.counts.delivered == 20
    storage.crash_at = None
    part = run_job_part(app, message)  # the redelivered task
    assert part is not None and part.status == "done" and part.runs == 2
    received = _received(app)
    assert set(received) == {f"conn-{i:06d}=" for i in range(35)}
    duplicates = sum(n - 1 for n in received.values())
    status = app.job_status(message["job_id"])
    assert status is not None
    assert duplicates == status.counts.ambiguous == 10  # one page
    assert status.counts.delivered == 35  # the lost page was never counted


def test_big_target_is_sharded_and_status_adds_up() -> None:
    app = _app(55, job_shard_size=20)
    message = create_job(app.storage, b"hi", {"channel": "room"})
    queued: list[dict[str, Any]] = []
    planner = run_job_part(app, message, enqueue=queued.append)
    assert planner is not None and planner.status == "done"
    assert [m["part"] for m in queued] == [1, 2, 3]
    status = job_status(app.storage, message["job_id"])
    assert (status is not None and status.status == "pending") or status.status == "running"
    assert status.expected == 55 and status.progress == 0.0
    for shard in reversed(queued):  # any order, any worker
        run_job_part(app, shard, enqueue=queued.append)
    assert len(queued) == 3  # shards do not plan
    assert _received(app) == {f"conn-{i:06d}=": 1 for i in range(55)}
    status = job_status(app.storage, message["job_id"])
    assert status is not None and status.status == "done"
    assert status.counts == JobCounts(recipients=55, delivered=55)
    assert [p.expected for p in status.parts] == [0, 20, 20, 15]


def test_small_and_single_targets_are_not_sharded() -> None:
    app = _app(5, job_shard_size=20)
    app.storage.create_session(
        Session(
            connection_id="user-conn-0001=",
            channel_name="x",
            user_id="7",
            connected_at=datetime.now(UTC),
        )
    )
    queued: list[dict[str, Any]] = []
    for target in ({"channel": "room"}, {"user_id": "7"}, {"connection_id": "conn-000001="}):
        message = create_job(app.storage, b"hi", target)
        part = run_job_part(app, message, enqueue=queued.append)
        assert part is not None and part.status == "done"
    assert queued == []
    received = _received(app)
    assert received["conn-000001="] == 2 and received["user-conn-0001="] == 1


def test_configuration_error_marks_the_job_failed() -> None:
    app = WebSocketApp(storage=MemoryStorage(), config=Config(secret="s", job_rate_limit=None))
    app.storage.create_session(_session("conn-000001="))
    message = create_job(app.storage, b"hi", {"everyone": True})
    part = run_job_part(app, message)  # no management endpoint configured
    assert part is not None and part.status == "failed"
    status = app.job_status(message["job_id"])
    assert status is not None and status.status == "failed"
    assert status.first_error is not None and "ConfigurationError" in status.first_error


def test_fail_job_part_and_handle_wait() -> None:
    app = _app(1)
    message = create_job(app.storage, b"hi", {"everyone": True})
    handle = JobHandle(message["job_id"], app.storage)
    with pytest.raises(TimeoutError):
        handle.wait(timeout=0.05, poll=0.01)
    assert fail_job_part(app.storage, message["job_id"], 0, "RuntimeError: gave up")
    status = handle.wait(timeout=1)
    assert status.status == "failed" and status.first_error == "RuntimeError: gave up"
    assert not fail_job_part(app.storage, message["job_id"], 0, "again")


def test_bad_messages_are_refused() -> None:
    app = _app(1)
    with pytest.raises(ValueError):
        run_job_part(app, {"job_id": "x", "part": 0})
    assert run_job_part(app, {"v": 1, "job_id": "nope", "part": 0, "payload_b64": ""}) is None


def test_jobs_are_cleaned_up_after_keep_seconds() -> None:
    app = _app(2)
    message = create_job(app.storage, b"hi", {"everyone": True})
    run_job_part(app, message)
    later = datetime.now(UTC) + timedelta(seconds=app.config.job_keep_seconds + 1)
    assert app.storage.delete_jobs(later - timedelta(seconds=app.config.job_keep_seconds)) == 1
    assert app.job_status(message["job_id"]) is None


def test_local_rate_cap_spaces_calls() -> None:
    cap = LocalRateCap(1000)
    start = time.monotonic()
    for _ in range(5):
        cap.acquire(50)
    assert time.monotonic() - start >= 0.2  # 250 calls at 1000/s, the first 50 free
    with pytest.raises(ValueError):
        LocalRateCap(0)


def test_job_config_is_checked() -> None:
    with pytest.raises(ConfigurationError):
        Config.from_mapping({"job_batch_size": 0})


def test_job_target_exclude_attributes_and_history() -> None:
    storage = MemoryStorage()
    for i in range(6):
        storage.create_session(
            Session(
                connection_id=f"conn-{i:06d}=",
                channel_name="room",
                connected_at=datetime.now(UTC),
                attributes={"device": "mobile" if i % 2 else "desktop"},
            )
        )
    config = Config(
        secret="s",
        job_batch_size=2,
        job_rate_limit=None,
        history=[{"pattern": "room", "size": 10}],
    )
    app = WebSocketApp(storage=storage, transport=RecordingTransport(), config=config)
    from apigw_ws_core.fanout import SendJob

    job = SendJob(
        payload=b'{"n":1}',
        channel="room",
        exclude=("conn-000001=",),
        attributes={"device": "mobile"},
    )
    message = create_job(storage, app.prepare_payload(job.payload, job.channel), job.target)
    run_job_part(app, message)
    assert set(_received(app)) == {"conn-000003=", "conn-000005="}
    transport = app.transport
    assert isinstance(transport, RecordingTransport)
    assert json.loads(transport.sent[0].data)["offset"] == 1  # one append, in the envelope
    assert storage.read_history("room", datetime.now(UTC)).offset == 1
    single = create_job(
        storage, b"x", {"connection_id": "conn-000001=", "exclude": ["conn-000001="]}
    )
    part = run_job_part(app, single)
    assert part is not None and part.status == "done" and part.counts.recipients == 0


@pytest.mark.redis
def test_redis_rate_cap_is_shared_by_every_worker() -> None:
    import os
    import threading
    import uuid

    url = os.environ.get("APIGW_WS_TEST_REDIS_URL")
    if not url:
        pytest.skip("APIGW_WS_TEST_REDIS_URL not set")
    from apigw_ws_core.jobs import RedisRateCap

    key = f"apigw_ws:test-rate:{uuid.uuid4().hex}"
    caps = [RedisRateCap.from_url(url, 100, key=key) for _ in range(4)]  # four "workers"
    seconds: list[int] = []
    lock = threading.Lock()

    def worker(cap: RedisRateCap) -> None:
        cap.acquire(50)
        second = int(cap.client.time()[0])
        with lock:
            seconds.append(second)

    threads = [threading.Thread(target=worker, args=(c,)) for c in caps]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    # 200 calls at 100/s for the fleet: at most 100 (two workers) in any one second
    assert len(seconds) == 4
    assert max(seconds.count(s) for s in set(seconds)) <= 2
    assert len(set(seconds)) >= 2
