"""fanout(): completeness, retries, 410 marking, deadline, concurrency, streaming.

Every behaviour runs on both engines: the async one (ManagementApiTransport, coroutines on
its loop) and the thread one (any plain Transport; here a sync wrapper over the same HTTP
transport, so both talk to the same scripted server).
"""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime

import pytest

import apigw_ws_core.fanout as fanout_mod
from apigw_ws_core.errors import ConfigurationError, PayloadTooLarge
from apigw_ws_core.events import MAX_BODY_BYTES
from apigw_ws_core.fanout import RetryPolicy, SendReport, fanout
from apigw_ws_core.memory import MemoryStorage
from apigw_ws_core.storage import Session
from apigw_ws_core.transport import (
    ManagementApiTransport,
    Payload,
    RecordingTransport,
    Transport,
)

from .server import ScriptedServer, gone, make_handler, status


class SyncOnly(Transport):
    """A plain (thread-engine) Transport delegating to the HTTP transport's sync post."""

    def __init__(self, inner: ManagementApiTransport):
        self.inner = inner

    def post(self, connection_id: str, data: bytes) -> None:
        self.inner.post(connection_id, data)


class CountingStorage(MemoryStorage):
    """Counts bulk mark_disconnected calls."""

    def __init__(self) -> None:
        super().__init__()
        self.mark_calls: list[list[str]] = []

    def mark_disconnected(self, connection_ids, at):
        ids = list(connection_ids)
        self.mark_calls.append(ids)
        return super().mark_disconnected(ids, at)


def ids(n: int, prefix: str = "c") -> list[str]:
    return [f"{prefix}{i:04d}AAAAAAAAA=" for i in range(n)]


@pytest.fixture(params=["async", "threads"])
def engine(request, transport):
    return transport if request.param == "async" else SyncOnly(transport)


def fill(storage: MemoryStorage, cids: list[str]) -> None:
    now = datetime.now(UTC)
    for cid in cids:
        storage.create_session(Session(connection_id=cid, channel_name="all", connected_at=now))


def delivered_once(server: ScriptedServer) -> dict[str, int]:
    """connection id -> number of requests the server answered 200 (tracked by handler)."""
    return dict(server.ok_counts)  # type: ignore[attr-defined]


def scripted(server: ScriptedServer, script: dict[str, list]) -> None:
    """Install a per-id script; count 200s per id."""
    server.ok_counts = {}  # type: ignore[attr-defined]
    lock = threading.Lock()
    inner = make_handler(script)

    def handler(req):
        reply = inner(req)
        if isinstance(reply, tuple) and reply[0] == 200:
            with lock:
                server.ok_counts[req.connection_id] = server.ok_counts.get(req.connection_id, 0) + 1
        return reply

    server.handler = handler


def test_complete_delivery_with_gone_throttled_and_5xx(server, engine):
    rng = random.Random(1)
    everyone = ids(200)
    gone_ids = set(rng.sample(everyone, 20))
    script: dict[str, list] = {cid: [gone(None)] * 10 for cid in gone_ids}
    live = [c for c in everyone if c not in gone_ids]
    throttled = rng.sample(live, 10)
    for cid in throttled:
        script[cid] = [status(429, {"x-amzn-ErrorType": "LimitExceededException"})] * rng.choice(
            [1, 2]
        )
    for cid in rng.sample([c for c in live if c not in throttled], 5):
        script[cid] = [status(503), "close"]  # a 5xx, then a dropped connection
    scripted(server, script)
    storage = CountingStorage()
    fill(storage, everyone)
    batches = (everyone[i : i + 50] for i in range(0, 200, 50))
    report = fanout(engine, b'{"m":1}', batches, storage=storage, concurrency=16, base_delay=0.01)

    assert report.delivered == 180 and report.ok
    assert set(report.gone) == gone_ids and len(report.gone) == 20
    assert delivered_once(server) == dict.fromkeys(live, 1)  # every live id exactly once
    per = server.per_id()
    assert all(per[cid] == 1 for cid in gone_ids)  # 410 is never retried
    assert report.throttled >= 10
    # every 429 and 503 was retried; a connection dropped without an answer is re-sent
    # either as a counted retry or, on a reused kept-alive connection, transparently once
    assert report.throttled + 5 <= report.retried <= sum(per.values()) - 200
    assert report.recipients == 200 and report.attempted == 200
    assert storage.mark_calls == [sorted(gone_ids)] or (
        len(storage.mark_calls) == 1 and set(storage.mark_calls[0]) == gone_ids
    )
    assert report.marked_disconnected == 20
    assert all(not storage.get_session(c).connected for c in gone_ids)
    assert all(storage.get_session(c).connected for c in live)


def test_no_storage_call_without_gone(server, engine):
    storage = CountingStorage()
    report = fanout(engine, b"x", [ids(10)], storage=storage)
    assert report.delivered == 10 and storage.mark_calls == []


def test_403_stops_the_send(server, engine):
    server.handler = lambda r: status(403, {"x-amzn-ErrorType": "ForbiddenException"})
    report = fanout(engine, b"x", [ids(500)], concurrency=4)
    assert report.delivered == 0 and len(report.failed) == 500
    assert len(server.requests) < 50  # stopped early, not 500 doomed calls
    assert "403" in (report.first_error or "")


def test_retries_are_bounded_by_max_attempts(server, engine):
    server.handler = lambda r: status(500)
    report = fanout(engine, b"x", [ids(5)], max_attempts=3, base_delay=0.001)
    assert report.failed and report.delivered == 0
    assert set(server.per_id().values()) == {3}
    assert report.retried == 10


def test_deadline_bounds_the_send(server, engine):
    server.delay = 0.2
    start = time.monotonic()
    report = fanout(engine, b"x", [ids(100)], concurrency=2, deadline=0.5)
    elapsed = time.monotonic() - start
    assert elapsed < 2.0
    assert 0 < report.delivered < 100
    assert report.delivered + len(report.failed) == 100
    assert report.attempted < 100  # the rest was never tried


def test_retry_stops_at_the_deadline(server, engine):
    server.handler = lambda r: status(429)
    start = time.monotonic()
    report = fanout(engine, b"x", [ids(3)], deadline=0.4, max_attempts=1000, base_delay=0.02)
    assert time.monotonic() - start < 1.5
    assert len(report.failed) == 3 and report.throttled >= 3


def test_retry_after_is_honoured(server, engine):
    scripted(server, {"c0000AAAAAAAAA=": [status(429, {"Retry-After": "0.3"})]})
    start = time.monotonic()
    report = fanout(engine, b"x", [ids(1)], base_delay=0.001)
    assert report.delivered == 1 and time.monotonic() - start >= 0.3


def test_concurrency_is_bounded(server, engine):
    server.delay = 0.02
    report = fanout(engine, b"x", [ids(60)], concurrency=5)
    assert report.delivered == 60
    assert server.max_inflight <= 5


def test_recipients_are_streamed(server, engine):
    seen_when_pulled: list[int] = []

    def batches():
        for b in range(20):
            seen_when_pulled.append(len(server.requests))
            yield ids(10, prefix=f"b{b:02d}")

    report = fanout(engine, b"x", batches(), concurrency=2)
    assert report.delivered == 200
    assert seen_when_pulled[0] == 0
    assert seen_when_pulled[-1] >= 140  # the last batch is read only near the end


def test_size_check_and_hash_once_per_message(server, transport, monkeypatch):
    calls = {"check": 0, "hash": 0}
    real_check, real_of = fanout_mod.check_size, Payload.of.__func__

    def check(data):
        calls["check"] += 1
        return real_check(data)

    def of(cls, data):
        calls["hash"] += 1
        return real_of(cls, data)

    monkeypatch.setattr(fanout_mod, "check_size", check)
    monkeypatch.setattr(Payload, "of", classmethod(of))
    report = fanout(transport, b"x" * 1000, [ids(100)])
    assert report.delivered == 100 and calls == {"check": 1, "hash": 1}


def test_oversized_refused_before_any_call(server, engine):
    with pytest.raises(PayloadTooLarge):
        fanout(engine, b"x" * (MAX_BODY_BYTES + 1), [ids(3)])
    assert server.requests == []


def test_missing_credentials_raise(server, monkeypatch, tmp_path):
    import botocore.session

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "x"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "x"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # (A loopback endpoint would sign with dummy keys: see tests/core/test_discovery.py.)
    remote = "https://abc123.execute-api.eu-west-1.amazonaws.com/prod"
    t = ManagementApiTransport(remote, session=botocore.session.Session())
    with pytest.raises(ConfigurationError):
        fanout(t, b"x", [ids(3)])
    t.close()


def test_max_rate_paces_calls(server, engine):
    start = time.monotonic()
    report = fanout(engine, b"x", [ids(21)], max_rate=100)
    assert report.delivered == 21 and time.monotonic() - start >= 0.19


def test_flat_ids_and_single_id_strings(server, engine):
    report = fanout(engine, b"x", ["a=", "b="])
    assert report.delivered == 2 and sorted(server.per_id()) == ["a=", "b="]


def test_recording_transport_inline_and_threads():
    t = RecordingTransport(gone=["g"], throttle={"t": 2}, fail={"f": 1})
    for conc in (1, 8):
        t.clear()
        report = fanout(t, b'{"a":1}', [["a", "g", "t", "f"]], concurrency=conc, base_delay=0.001)
        assert report.delivered == 3 and report.gone == ("g",)
        assert sorted(m.connection_id for m in t.sent) == ["a", "f", "t"]
        t.throttle["t"], t.fail["f"] = 2, 1


def test_report_fields():
    report = SendReport(delivered=8, gone=("a", "b"), retried=3, attempted=10, elapsed=2.0)
    assert report.ok and report.calls == 13 and report.rate == 5.0
    assert report.as_dict()["gone"] == 2
    assert not SendReport(failed=("x",)).ok


def test_retry_policy():
    policy = RetryPolicy(base_delay=0.1, max_delay=0.4)
    from apigw_ws_core.errors import GoneError, ThrottledError, TransportError

    assert policy.retryable(ThrottledError()) and policy.retryable(TransportError("x"))
    assert policy.retryable(TransportError("x", status=502))
    assert not policy.retryable(TransportError("x", status=400))
    assert not policy.retryable(GoneError("c"))
    for attempt, cap in ((1, 0.1), (2, 0.2), (3, 0.4), (9, 0.4)):
        d = policy.delay(attempt, TransportError("x"))
        assert cap / 2 <= d <= cap
    assert policy.delay(1, ThrottledError(retry_after=3)) == 3


def test_progress_counts_every_recipient(server, engine):
    scripted(server, {"c0001AAAAAAAAA=": [gone(None)], "c0002AAAAAAAAA=": [status(429)]})
    done: list[int] = []
    lock = threading.Lock()

    def progress(n: int) -> None:
        with lock:
            done.append(n)

    report = fanout(engine, b"x", [ids(30)], progress=progress, base_delay=0.001)
    assert report.delivered == 29 and len(report.gone) == 1 and sum(done) == 30

    done.clear()
    server.delay = 0.2
    report = fanout(engine, b"x", [ids(40)], concurrency=2, deadline=0.3, progress=progress)
    assert sum(done) == 40 and report.delivered + len(report.failed) == 40


def test_forwarding_wrappers_are_unwrapped(server, transport):
    class Forward(Transport):
        def __init__(self, inner):
            self.inner = inner

        def post(self, connection_id, data):  # pragma: no cover - unwrap() bypasses it
            raise AssertionError("fan-out should send through the unwrapped transport")

        def unwrap(self):
            return self.inner

    report = fanout(Forward(Forward(transport)), b"x", [ids(5)])
    assert report.delivered == 5


def test_throttling_slows_the_async_engine_down(server, transport):
    """The server throttles whenever more than 4 calls are in flight (like an account at
    its request rate): the engine halves its limit on 429s and everything arrives."""
    server.delay = 0.01

    def handler(req):
        return status(429) if server.inflight > 4 else status(200, {}, b"{}")

    server.handler = handler
    report = fanout(transport, b"x", [ids(150)], concurrency=32, base_delay=0.005)
    assert report.delivered == 150 and not report.failed
    assert report.throttled < 150  # a fixed 32 in flight would draw several 429s per id


def test_gate_aimd():
    import asyncio

    from apigw_ws_core.fanout import _Gate

    async def scenario():
        gate = _Gate(8)
        for _ in range(8):
            await gate.acquire()
        blocked = asyncio.ensure_future(gate.acquire())
        await asyncio.sleep(0)
        assert not blocked.done()
        gate.rtt = 0.05
        for i in range(4):  # the odd 429 among successes does not cut
            gate.succeeded(0.05)
            gate.throttled(90.0 + i)
        assert gate.limit == 8 and gate.cuts == 0
        for _ in range(4):  # 429s are most of the answers now
            gate.throttled(100.0)
        gate.throttled(100.01)  # the same round trip: one cut
        assert gate.limit == 4 and gate.cuts == 1
        gate.throttled(100.2)
        assert gate.limit == 2
        for _ in range(7):
            gate.release()
        await asyncio.sleep(0)
        assert blocked.done() and gate.inflight == 2
        gate.succeeded(0.05)
        assert gate.limit == 2.5
        for _ in range(100):
            gate.succeeded(0.05)
        assert gate.limit == 8

    asyncio.run(scenario())


def test_throttled_calls_may_be_retried_more_often():
    from apigw_ws_core.errors import ThrottledError, TransportError

    policy = RetryPolicy(max_attempts=3, max_throttled_attempts=10)
    assert policy.allows(2, TransportError("x", status=503))
    assert not policy.allows(3, TransportError("x", status=503))
    assert policy.allows(9, ThrottledError()) and not policy.allows(10, ThrottledError())


def test_gate_slow_start_grows_to_the_ceiling_then_aimd():
    from apigw_ws_core.fanout import _Gate

    gate = _Gate(8, 32)
    assert gate.limit == 8
    for _ in range(8):  # one round trip of successes: the limit doubles
        gate.succeeded(0.02)
    assert gate.limit == 16
    for _ in range(100):
        gate.succeeded(0.02)
    assert gate.limit == 32 == gate.peak  # never above the ceiling
    gate.rtt = 0.02
    for i in range(10):  # throttled: halve, then grow by 1/limit per success
        gate.throttled(10.0 + i)
    assert gate.limit < 32 and gate.cuts >= 1
    before = gate.limit
    gate.succeeded(0.02)
    assert gate.limit == pytest.approx(before + 1 / before)
    paced = _Gate(8, 32)
    for _ in range(20):  # held back by the rate cap: no growth
        paced.succeeded(0.02, grow=False)
    assert paced.limit == 8


def test_calls_in_flight_grow_while_no_429_comes_back(server, transport):
    """At 20 ms per call, 4 calls in flight at first grow to the ceiling of 32."""
    server.delay = 0.02
    peak = 0

    def handler(req):
        nonlocal peak
        peak = max(peak, server.inflight)
        return status(200, {}, b"{}")

    server.handler = handler
    report = fanout(transport, b"x", [ids(400)], concurrency=4, max_concurrency=32)
    assert report.delivered == 400
    assert 16 < peak <= 32
    peak = 0
    fixed = fanout(transport, b"x", [ids(100)], concurrency=4)
    assert fixed.delivered == 100 and peak <= 4
