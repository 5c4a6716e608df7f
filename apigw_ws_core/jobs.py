"""Durable send jobs: big sends that survive the worker running them.

A job is a send (payload + target) with an id, run by a task queue worker (Celery through
:mod:`apigw_ws_celery`, or any queue: see *The job contract* below). Its progress lives
in storage as :class:`~apigw_ws_core.storage.JobPart` rows:

* recipients are read in keyset pages of ``config.job_batch_size``; after each page has
  been sent, the part's cursor and counts are checkpointed in one compare-and-set write;
* a worker that dies mid-page loses nothing: the queue delivers the task again (late ack)
  and the part resumes after its last checkpoint. Only the interrupted page is sent again,
  and its recipients are counted as ``ambiguous`` (they may get the message twice);
* a target bigger than ``config.job_shard_size`` (a channel, everyone) is split into
  shards, keyset ranges each run by its own task, so that many workers send at once; the
  job's status adds up its shards;
* all jobs share one rate cap (``config.job_rate_limit`` calls/s, through Redis when
  ``config.job_rate_redis_url`` is set), keeping the fleet under a share of the account's
  API Gateway quota.

The job contract (for RQ, Dramatiq, a cron script ...)
------------------------------------------------------

1. In the web process, :func:`create_job` stores part ``0`` and returns a *message*, a
   small JSON-serialisable dict (``{"v": 1, "job_id", "part", "payload_b64"}``).
2. Enqueue the message. Deliver it at least once: acknowledge it only after the task
   returns (a lost worker must lead to redelivery).
3. The worker calls :func:`run_job_part` ``(app, message, enqueue=...)``; ``enqueue`` puts
   a shard's message on the queue the same way (without it, a big target is sent by this
   one task). Running the same message twice, or at the same time in two workers, is safe:
   a finished part does nothing, and of two runners one stops at its next checkpoint.
4. On an exception, retry the message later; a configuration error
   (:class:`~apigw_ws_core.errors.ConfigurationError`) is recorded as ``failed`` and not
   raised. Call :func:`fail_job_part` when you give up on a message.

:func:`job_status` (``app.job_status(job_id)``) reads the aggregated status.
"""

from __future__ import annotations

import base64
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, cast

import attrs

from apigw_ws_core.errors import ConfigurationError
from apigw_ws_core.fanout import SendReport, check_size
from apigw_ws_core.storage import (
    JOB_DONE,
    JOB_FAILED,
    JOB_FINISHED,
    JOB_PENDING,
    JOB_RUNNING,
    JobCounts,
    JobPart,
    Storage,
)

if TYPE_CHECKING:
    from apigw_ws_core.app import WebSocketApp

__all__ = [
    "JobHandle",
    "JobStatus",
    "LocalRateCap",
    "RateCap",
    "RedisRateCap",
    "build_runner",
    "create_job",
    "describe",
    "fail_job_part",
    "follow",
    "job_status",
    "run_job_part",
]

log = logging.getLogger("apigw_ws.jobs")

#: Version of the message format.
MESSAGE_VERSION = 1
#: Ids per rate-cap acquisition (a page is sent in chunks of this many).
RATE_CHUNK = 50
#: Targets that may be sharded (a user's or one connection's are always small).
_SHARDABLE = ("channel", "everyone")


def _utcnow() -> datetime:
    return datetime.now(UTC)


# --- status ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class JobStatus:
    """The status of a durable send job: its parts added up.

    :ivar status: ``pending`` (no worker has started it), ``running``, ``done`` (every
        part finished; recipients may still have ``failed``) or ``failed`` (a part was
        given up: configuration error or retries exhausted).
    :ivar counts: the sum of every part's counts.
    :ivar parts: the job's parts (part 0 plans a sharded job and sends nothing then).
    :ivar expected: recipients the job was planned with (``0`` until known).
    """

    job_id: str
    status: str
    target: dict[str, Any]
    counts: JobCounts
    parts: tuple[JobPart, ...]
    expected: int
    first_error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        """The job will not send anything more."""
        return self.status in JOB_FINISHED

    @property
    def handled(self) -> int:
        """Recipients that got an answer (delivered, gone or failed)."""
        c = self.counts
        return c.delivered + c.gone + c.failed

    @property
    def progress(self) -> float | None:
        """Share of the expected recipients handled, 0 to 1 (``None`` while unknown)."""
        if self.finished:
            return 1.0
        if not self.expected:
            return None
        return min(1.0, self.handled / self.expected)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly summary."""
        return {
            "job_id": self.job_id,
            "status": self.status,
            "target": self.target,
            "expected": self.expected,
            **self.counts.as_dict(),
            "parts": len(self.parts),
            "parts_done": sum(p.status in JOB_FINISHED for p in self.parts),
            "first_error": self.first_error,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "finished_at": None if self.finished_at is None else self.finished_at.isoformat(),
        }


def job_status(storage: Storage, job_id: str) -> JobStatus | None:
    """The aggregated status of a job (``None`` if unknown or already cleaned up)."""
    parts = storage.get_job_parts(job_id)
    if not parts:
        return None
    counts = JobCounts()
    for p in parts:
        counts = counts + p.counts
    statuses = {p.status for p in parts}
    if statuses <= JOB_FINISHED:
        status = JOB_FAILED if JOB_FAILED in statuses else JOB_DONE
    elif statuses == {JOB_PENDING}:
        status = JOB_PENDING
    else:
        status = JOB_RUNNING
    finished = [p.finished_at for p in parts if p.finished_at is not None]
    errors = [p.first_error for p in parts if p.first_error]
    return JobStatus(
        job_id=job_id,
        status=status,
        target=parts[0].target,
        counts=counts,
        parts=tuple(parts),
        expected=sum(p.expected for p in parts),
        first_error=errors[0] if errors else None,
        created_at=min(p.created_at for p in parts),
        updated_at=max(p.updated_at for p in parts),
        finished_at=max(finished) if status in JOB_FINISHED and finished else None,
    )


def describe(status: JobStatus) -> str:
    """One line for CLIs: status, counts, parts, first error."""
    c = status.counts
    parts = status.as_dict()
    line = (
        f"job {status.job_id}: {status.status}; {c.delivered} delivered, {c.gone} gone, "
        f"{c.failed} failed, {c.ambiguous} ambiguous, {c.retried} retried of "
        f"{status.expected or c.recipients} recipient(s); "
        f"parts {parts['parts_done']}/{parts['parts']}"
    )
    if status.first_error:
        line += f"; first error: {status.first_error}"
    return line


def follow(
    storage: Storage,
    job_id: str,
    on_update: Callable[[JobStatus], Any],
    *,
    poll: float = 0.5,
    timeout: float | None = None,
) -> JobStatus | None:
    """Poll a job until it finishes, calling ``on_update`` with each status (progress
    bars); return the final status (``None`` if the job is unknown)."""
    end = None if timeout is None else time.monotonic() + timeout
    while True:
        status = job_status(storage, job_id)
        if status is None:
            return None
        on_update(status)
        if status.finished:
            return status
        if end is not None and time.monotonic() >= end:
            raise TimeoutError(f"job {job_id} not finished after {timeout} s")
        time.sleep(poll)


@attrs.frozen
class JobHandle:
    """What a durable background send returns: the job id, and a way to follow it."""

    job_id: str
    storage: Storage = attrs.field(eq=False, repr=False)

    def status(self) -> JobStatus | None:
        """The job's current status."""
        return job_status(self.storage, self.job_id)

    def wait(self, timeout: float = 60.0, poll: float = 0.2) -> JobStatus:
        """Block until the job has finished; raise ``TimeoutError`` after ``timeout``."""
        end = time.monotonic() + timeout
        while True:
            status = self.status()
            if status is not None and status.finished:
                return status
            if time.monotonic() >= end:
                raise TimeoutError(f"job {self.job_id} not finished after {timeout} s: {status}")
            time.sleep(poll)


# --- rate caps --------------------------------------------------------------------------


class RateCap(Protocol):
    """Calls per second for durable jobs: ``acquire(n)`` blocks until ``n`` calls may go."""

    def acquire(self, n: int) -> None:
        """Wait until ``n`` more calls are allowed."""


class LocalRateCap:
    """A per-process cap: calls spaced so that at most ``rate`` go per second."""

    def __init__(self, rate: float):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self, n: int) -> None:
        """See :class:`RateCap`."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + n / self.rate
        if start > now:
            time.sleep(start - now)


#: Take ``n`` tokens from the current one-second window if they fit; else return the
#: milliseconds until the next window.
_REDIS_TAKE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local n = tonumber(ARGV[1])
if used + n <= tonumber(ARGV[2]) then
  redis.call('INCRBY', KEYS[1], n)
  redis.call('PEXPIRE', KEYS[1], 2000)
  return 0
end
local t = redis.call('TIME')
return 1000 - math.floor(tonumber(t[2]) / 1000)
"""


class RedisRateCap:
    """One cap shared by every worker: fixed one-second windows counted in Redis (one Lua
    call per :data:`RATE_CHUNK` ids), windows taken from the Redis server's clock."""

    def __init__(self, client: Any, rate: float, key: str = "apigw_ws:job-rate"):
        if rate < 1:
            raise ValueError("rate must be at least 1 per second")
        self.client = client
        self.rate = int(rate)
        self.key = key
        self._script = client.register_script(_REDIS_TAKE)

    @classmethod
    def from_url(cls, url: str, rate: float, key: str = "apigw_ws:job-rate") -> RedisRateCap:
        """Connect with the ``redis`` package (the ``[redis]`` extra)."""
        import redis

        return cls(redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5), rate, key)

    def acquire(self, n: int) -> None:
        """See :class:`RateCap`."""
        n = min(n, self.rate)
        while True:
            second = int(self.client.time()[0])
            wait_ms = int(self._script(keys=[f"{self.key}:{second}"], args=[n, self.rate]))
            if wait_ms <= 0:
                return
            time.sleep(max(0.001, wait_ms / 1000))


_caps: dict[tuple[str | None, float], RateCap] = {}
_caps_lock = threading.Lock()


def _rate_cap(app: WebSocketApp) -> RateCap | None:
    cfg = app.config
    if not cfg.job_rate_limit:
        return None
    key = (cfg.job_rate_redis_url, float(cfg.job_rate_limit))
    with _caps_lock:
        cap = _caps.get(key)
        if cap is None:
            if cfg.job_rate_redis_url:
                cap = RedisRateCap.from_url(cfg.job_rate_redis_url, cfg.job_rate_limit)
            else:
                cap = LocalRateCap(cfg.job_rate_limit)
            _caps[key] = cap
    return cap


# --- creating and running jobs ------------------------------------------------------


def _message(job_id: str, index: int, payload: bytes) -> dict[str, Any]:
    return {
        "v": MESSAGE_VERSION,
        "job_id": job_id,
        "part": index,
        "payload_b64": base64.b64encode(payload).decode("ascii"),
    }


def create_job(storage: Storage, payload: bytes, target: dict[str, Any]) -> dict[str, Any]:
    """Store a new job (its part 0, ``pending``) and return its first message.

    ``target`` holds the keyword arguments of
    :meth:`~apigw_ws_core.app.WebSocketApp.send` (``channel``, ``user_id``,
    ``connection_id``, ``everyone``). The payload travels in the message, not in storage.
    """
    check_size(payload)
    job_id = uuid.uuid4().hex
    now = _utcnow()
    storage.create_job_parts(
        [JobPart(job_id=job_id, index=0, target=dict(target), created_at=now, updated_at=now)]
    )
    return _message(job_id, 0, payload)


def _read_message(message: dict[str, Any]) -> tuple[str, int, bytes]:
    if not isinstance(message, dict) or message.get("v") != MESSAGE_VERSION:
        raise ValueError(f"not an apigw-ws job message (v{MESSAGE_VERSION}): {message!r}")
    return str(message["job_id"]), int(message["part"]), base64.b64decode(message["payload_b64"])


def _chunks(ids: list[str], cap: RateCap | None) -> Iterator[list[str]]:
    for i in range(0, len(ids), RATE_CHUNK):
        chunk = ids[i : i + RATE_CHUNK]
        if cap is not None:
            cap.acquire(len(chunk))
        yield chunk


def _counts(report: SendReport, ambiguous: int) -> JobCounts:
    return JobCounts(
        recipients=report.recipients,
        delivered=report.delivered,
        gone=len(report.gone),
        failed=len(report.failed),
        retried=report.retried,
        throttled=report.throttled,
        ambiguous=ambiguous + len(report.ambiguous),
    )


@attrs.frozen
class _Target:
    """A job's target as stored (the keyword arguments of ``WebSocketApp.send``)."""

    channel: str | None = None
    user_id: str | None = None
    connection_id: str | None = None
    everyone: bool = False
    exclude: frozenset[str] = frozenset()
    attributes: dict[str, str] | None = None

    @classmethod
    def of(cls, part: JobPart) -> _Target:
        t = part.target
        exclude = t.get("exclude") or ()
        return cls(
            channel=t.get("channel"),
            user_id=t.get("user_id"),
            connection_id=t.get("connection_id"),
            everyone=bool(t.get("everyone")),
            exclude=frozenset([exclude] if isinstance(exclude, str) else exclude),
            attributes=dict(t["attributes"]) if t.get("attributes") else None,
        )

    @property
    def query(self) -> dict[str, Any]:
        """Keyword arguments of the storage's recipient methods."""
        return {"channel": self.channel, "user_id": self.user_id, "attributes": self.attributes}

    @property
    def shardable(self) -> bool:
        return self.connection_id is None and (self.channel is not None or self.everyone)


def run_job_part(
    app: WebSocketApp,
    message: dict[str, Any],
    *,
    enqueue: Callable[[dict[str, Any]], Any] | None = None,
    rate_cap: RateCap | None = None,
) -> JobPart | None:
    """Run (or resume) the part of a job that ``message`` names; return it as stored at
    the end (``None`` if the job is unknown, e.g. cleaned up).

    :param enqueue: puts a shard's message on the queue. Part 0 of a big channel or
        everyone-send then plans shards and hands them to it; without it, part 0 sends
        the whole target itself.
    :param rate_cap: overrides the cap built from ``app.config``.
    :raises Exception: whatever storage or the transport raised (retry the message);
        configuration errors are recorded as ``failed`` instead.
    """
    job_id, index, payload = _read_message(message)
    storage = app.storage
    part = storage.start_job_part(job_id, index, _utcnow())
    if part is None:
        log.warning("job %s part %s is unknown (cleaned up?): nothing to do", job_id, index)
        return None
    if part.status in JOB_FINISHED:
        return part
    target = _Target.of(part)
    cap = rate_cap if rate_cap is not None else _rate_cap(app)
    try:
        if target.connection_id is not None:
            ids = [] if target.connection_id in target.exclude else [target.connection_id]
            return _run_single(app, part, payload, ids, cap)
        if index == 0 and part.cursor is None and enqueue is not None and target.shardable:
            planned = _plan(app, part, target, payload, enqueue)
            if planned is not None:
                return planned
        return _run_range(app, part, target, payload, cap)
    except ConfigurationError as exc:
        fail_job_part(storage, job_id, index, f"{type(exc).__name__}: {exc}")
        log.error("job %s part %s failed: %s", job_id, index, exc)
        return _get(storage, part)


def _get(storage: Storage, part: JobPart) -> JobPart | None:
    return next((p for p in storage.get_job_parts(part.job_id) if p.index == part.index), None)


def _plan(
    app: WebSocketApp,
    part: JobPart,
    target: _Target,
    payload: bytes,
    enqueue: Callable[[dict[str, Any]], Any],
) -> JobPart | None:
    """Split part 0's target into shards if it is big; ``None`` if it is not."""
    storage = app.storage
    every = app.config.job_shard_size
    cuts = storage.recipient_splits(**target.query, every=every)
    if not cuts:
        return None
    now = _utcnow()
    total = storage.count_recipients(**target.query)
    bounds: list[str | None] = [None, *cuts, None]
    shards = [
        JobPart(
            job_id=part.job_id,
            index=i,
            target=part.target,
            lower=lower,
            upper=upper,
            cursor=lower,
            expected=every if upper is not None else max(0, total - every * len(cuts)),
            created_at=now,
            updated_at=now,
        )
        for i, (lower, upper) in enumerate(itertools.pairwise(bounds), start=1)
    ]
    storage.create_job_parts(shards)
    for shard in storage.get_job_parts(part.job_id):
        if shard.index > 0 and shard.status not in JOB_FINISHED:
            enqueue(_message(part.job_id, shard.index, payload))
    _close(storage, part.job_id, 0, None, JOB_DONE)
    log.info("job %s: %d recipients in %d shards", part.job_id, total, len(shards))
    return _get(storage, part)


def _run_single(
    app: WebSocketApp, part: JobPart, payload: bytes, ids: list[str], cap: RateCap | None
) -> JobPart | None:
    ambiguous = len(ids) if part.runs > 1 else 0
    report = app.deliver(payload, _chunks(ids, cap), concurrency=1)
    app.storage.checkpoint_job_part(
        part.job_id,
        part.index,
        expected_cursor=part.cursor,
        cursor=part.cursor,
        add=_counts(report, ambiguous),
        now=_utcnow(),
        status=JOB_DONE,
        first_error=report.first_error,
        expected=len(ids),
    )
    return _get(app.storage, part)


def _run_range(
    app: WebSocketApp, part: JobPart, target: _Target, payload: bytes, cap: RateCap | None
) -> JobPart | None:
    storage = app.storage
    cfg = app.config
    cursor = part.cursor
    # A part started before and not finished: its previous worker may have died while
    # sending the page after the checkpoint. That page goes again, counted as ambiguous.
    resumed = part.runs > 1
    expected = None
    if part.index == 0 and part.lower is None and part.upper is None:
        expected = storage.count_recipients(**target.query)
    first = True
    while True:
        ids, last = storage.recipient_page(
            **target.query, after=cursor, upto=part.upper, limit=cfg.job_batch_size
        )
        if not ids:
            break
        if target.exclude:
            ids = [cid for cid in ids if cid not in target.exclude]
        report = app.deliver(payload, _chunks(ids, cap))
        ambiguous = len(ids) if resumed and first else 0
        if not storage.checkpoint_job_part(
            part.job_id,
            part.index,
            expected_cursor=cursor,
            cursor=last,
            add=_counts(report, ambiguous),
            now=_utcnow(),
            first_error=report.first_error,
            expected=expected if first else None,
        ):
            log.warning(
                "job %s part %s: another worker moved on; stopping here", part.job_id, part.index
            )
            return _get(storage, part)
        cursor = last
        first = False
    _close(storage, part.job_id, part.index, cursor, JOB_DONE, expected=expected if first else None)
    return _get(storage, part)


def _close(
    storage: Storage,
    job_id: str,
    index: int,
    cursor: str | None,
    status: str,
    *,
    first_error: str | None = None,
    expected: int | None = None,
) -> bool:
    """Finish a part at ``cursor`` with ``status`` (done or failed), adding no counts."""
    return storage.checkpoint_job_part(
        job_id,
        index,
        expected_cursor=cursor,
        cursor=cursor,
        add=JobCounts(),
        now=_utcnow(),
        status=status,
        first_error=first_error,
        expected=expected,
    )


def fail_job_part(storage: Storage, job_id: str, index: int, error: str) -> bool:
    """Mark a part ``failed`` with ``error`` (a queue calls it when it gives up retrying)."""
    for part in storage.get_job_parts(job_id):
        if part.index == index and part.status not in JOB_FINISHED:
            if part.status != JOB_RUNNING:
                storage.start_job_part(job_id, index, _utcnow())
            return _close(storage, job_id, index, part.cursor, JOB_FAILED, first_error=error)
    return False


def build_runner(
    spec: Any, app: WebSocketApp, *, context: Callable[[], Any] | None = None
) -> Callable[..., Any] | None:
    """The ``background_runner`` named by an adapter setting (``BACKGROUND_RUNNER``):
    ``None`` (the in-process thread pool), ``"celery"`` (a
    :class:`~apigw_ws_celery.CeleryRunner`, given ``context`` to run jobs in), or a
    factory (a callable or its dotted path) called with the app."""
    if spec is None or spec == "":
        return None
    if spec == "celery":
        from apigw_ws_celery import CeleryRunner

        return CeleryRunner(app, context=context)
    if isinstance(spec, str):
        import importlib

        module, _, name = spec.rpartition(".")
        try:
            spec = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigurationError(f"cannot import background runner {spec!r}: {exc}") from exc
    if not callable(spec):
        raise ConfigurationError("BACKGROUND_RUNNER must be None, 'celery' or a factory")
    runner = spec(app)
    if not callable(runner):
        raise ConfigurationError(f"BACKGROUND_RUNNER factory {spec!r} did not return a callable")
    return cast(Callable[..., Any], runner)
