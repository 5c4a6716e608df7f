"""Fan-out: deliver one payload to many connections through a :class:`Transport`.

API Gateway has no bulk send: a broadcast is one signed ``POST @connections/{id}`` per
recipient. :func:`fanout` makes that fast and complete:

* the size check and the payload hash happen once per message, not per recipient;
* recipients are streamed from storage in batches (never all loaded at once), in the
  calling thread (database connections are usually bound to it);
* at most ``concurrency`` calls are in flight: coroutines on the transport's event loop
  for an :class:`~apigw_ws_core.transport.AsyncTransport` (the Management API transport),
  a thread pool for any other :class:`~apigw_ws_core.transport.Transport`;
* each call has its own timeout (``call_timeout``, a few seconds), separate from the
  send's ``deadline``: a call that never answers costs one call timeout, not the send;
* 429, 5xx and network errors are retried with jittered exponential backoff while the
  overall ``deadline`` allows; 410 is never retried: those ids are collected and marked
  disconnected in **one** storage call at the end; 401/403 stop the send (every other
  call would fail the same way);
* a retry after an *ambiguous* outcome (a 5xx answer, or a timeout or broken connection
  after the request went out) may deliver the message twice: such recipients are listed
  in :attr:`SendReport.ambiguous`;
* the result is a :class:`SendReport` (delivered, gone, failed, ambiguous, retried, timing).

Delivery is therefore *at least once* to live connections: every recipient that may have
been sent the message twice is reported, none is silently lost.

Large sends belong off the request path (a handler has at most 29 s): see
:class:`SendJob` and :meth:`apigw_ws_core.app.WebSocketApp.send_in_background`.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from apigw_ws_core.errors import (
    ConfigurationError,
    GoneError,
    PayloadTooLarge,
    ThrottledError,
    TransportError,
)
from apigw_ws_core.events import MAX_BODY_BYTES
from apigw_ws_core.observability import observe_send
from apigw_ws_core.storage import Storage
from apigw_ws_core.transport import AsyncTransport, Payload, Transport

__all__ = ["RetryPolicy", "SendJob", "SendReport", "check_size", "fanout"]

log = logging.getLogger("apigw_ws.fanout")

#: Statuses after which no other recipient can succeed either: the send stops.
_FATAL_STATUSES = frozenset({401, 403})


@attrs.frozen
class SendReport:
    """What a send did: counts, the ids that were gone or failed, and timing.

    :ivar delivered: recipients the Management API accepted the message for.
    :ivar gone: ids answered 410 (closed connections), marked disconnected.
    :ivar failed: ids not delivered: errors that are not retried, retries exhausted, or
        not attempted before the deadline (or after a 401/403 stopped the send).
    :ivar retried: calls repeated after a 429, 5xx or network error.
    :ivar attempted: recipients that got at least one call.
    :ivar elapsed: seconds from start to the last answer (storage marking included).
    :ivar marked_disconnected: sessions the bulk storage call changed.
    :ivar throttled: 429 answers received.
    :ivar recipients: ids read from the target.
    :ivar first_error: the first non-410 error, as text (``None`` if none).
    :ivar ambiguous: ids that may have received the message **twice**: a call with an
        ambiguous outcome (5xx, or a timeout or broken connection after the request went
        out: API Gateway may have delivered it) was followed by another call that went
        out. They are also counted in ``delivered`` or ``failed``.
    :ivar offset: on a history channel, the offset the message got (``None`` otherwise).
    :ivar epoch: on a history channel, the channel's epoch.
    """

    delivered: int = 0
    gone: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    retried: int = 0
    attempted: int = 0
    elapsed: float = 0.0
    marked_disconnected: int = 0
    throttled: int = 0
    recipients: int = 0
    first_error: str | None = None
    ambiguous: tuple[str, ...] = ()
    offset: int | None = None
    epoch: str | None = None

    @property
    def ok(self) -> bool:
        """No recipient failed (gone recipients are not failures)."""
        return not self.failed

    @property
    def calls(self) -> int:
        """Management API calls made (first attempts plus retries)."""
        return self.attempted + self.retried

    @property
    def rate(self) -> float:
        """Recipients handled per second (delivered + gone)."""
        done = self.delivered + len(self.gone)
        return done / self.elapsed if self.elapsed > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly summary (counts only)."""
        return {
            "recipients": self.recipients,
            "delivered": self.delivered,
            "gone": len(self.gone),
            "failed": len(self.failed),
            "retried": self.retried,
            "throttled": self.throttled,
            "ambiguous": len(self.ambiguous),
            "elapsed": round(self.elapsed, 4),
            "first_error": self.first_error,
        }


def check_size(data: bytes) -> bytes:
    """Refuse payloads over API Gateway's 128 KiB before any call."""
    if len(data) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"message is {len(data)} bytes; API Gateway allows {MAX_BODY_BYTES}")
    return data


@attrs.frozen
class RetryPolicy:
    """Which failures are retried and how long to wait.

    The wait before retry ``n`` (1-based) is "equal jitter": half of
    ``min(max_delay, base_delay * 2 ** (n - 1))`` plus a random part up to the other
    half, and at least a 429's ``Retry-After``. A retry is only made if it can start
    before the send's deadline.

    :ivar max_attempts: calls per recipient at most after 5xx or network errors.
    :ivar max_throttled_attempts: calls per recipient at most while answered 429. Higher,
        because a 429 says "not now" (the account is over its request rate, and the async
        engine is already slowing down for it), not "this will not work"; a client whose
        buffer stays full still gives up after about ten seconds.
    """

    max_attempts: int = 5
    base_delay: float = 0.05
    max_delay: float = 2.0
    max_throttled_attempts: int = 10

    def allows(self, attempt: int, exc: TransportError) -> bool:
        """Whether another call may follow failed attempt number ``attempt``."""
        if isinstance(exc, ThrottledError):
            return attempt < max(self.max_attempts, self.max_throttled_attempts)
        return attempt < self.max_attempts

    @staticmethod
    def retryable(exc: TransportError) -> bool:
        """429, 5xx and network errors (no status) are retried; 410 and other 4xx not."""
        if isinstance(exc, GoneError):
            return False
        return isinstance(exc, ThrottledError) or exc.status is None or exc.status >= 500

    def delay(self, attempt: int, exc: TransportError) -> float:
        """Seconds to wait after failed attempt number ``attempt``."""
        cap = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        wait_for = cap / 2 + random.uniform(0, cap / 2)
        if isinstance(exc, ThrottledError) and exc.retry_after:
            wait_for = max(wait_for, float(exc.retry_after))
        return wait_for


class _Pacer:
    """Spaces calls at least ``1 / rate`` seconds apart (thread-safe)."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate
        self._next = 0.0
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take the next slot; return how long to wait for it."""
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
            return slot - now


class _State:
    """Counters of one send. The async engine mutates it from one thread only; the
    thread engine holds ``lock``."""

    def __init__(
        self,
        end: float,
        policy: RetryPolicy,
        pacer: _Pacer | None,
        progress: Callable[[int], None] | None = None,
        call_timeout: float = 5.0,
    ):
        self.lock = threading.Lock()
        self.progress = progress
        self.end = end
        self.call_timeout = call_timeout
        #: GET instead of POST (healing): nothing is delivered, so nothing is ambiguous
        self.probe = False
        #: ids with a call whose outcome is unknown (it may have been delivered)
        self.unsure: set[str] = set()
        #: ids of ``unsure`` that got another call that went out: maybe delivered twice
        self.ambiguous: list[str] = []
        self.twice: set[str] = set()
        self.policy = policy
        self.pacer = pacer
        self.delivered = 0
        self.retried = 0
        self.throttled = 0
        self.attempted = 0
        self.recipients = 0
        self.gone: list[str] = []
        self.failed: list[str] = []
        self.first_error: str | None = None
        self.fatal: BaseException | None = None
        #: ids the async engine never called (deadline or a fatal error came first)
        self.not_attempted: list[str] = []

    def note_error(self, exc: BaseException) -> None:
        if self.first_error is None:
            self.first_error = f"{type(exc).__name__}: {exc}"

    def outcome(self, cid: str, exc: BaseException | None, attempt: int, now: float) -> float:
        """Record a finished call. Returns a retry delay, or ``-1`` when ``cid`` is done."""
        if self.probe:
            pass  # a GET delivers nothing: asking twice is harmless
        elif exc is None or (isinstance(exc, TransportError) and exc.ambiguous):
            # this call may have delivered; so may an earlier one with an unknown outcome
            if cid in self.unsure and cid not in self.twice:
                self.twice.add(cid)
                self.ambiguous.append(cid)
            if exc is not None:
                self.unsure.add(cid)
        if exc is None:
            self.delivered += 1
            self.attempted += 1
            self.advance()
            return -1
        if isinstance(exc, GoneError):
            self.gone.append(cid)
            self.attempted += 1
            self.advance()
            return -1
        if isinstance(exc, ThrottledError):
            self.throttled += 1
        if isinstance(exc, TransportError) and self.policy.retryable(exc):
            delay = self.policy.delay(attempt, exc)
            if self.policy.allows(attempt, exc) and now + delay < self.end and not self.fatal:
                self.retried += 1
                return delay
        self.note_error(exc)
        fatal = isinstance(exc, ConfigurationError) or (
            isinstance(exc, TransportError) and exc.status in _FATAL_STATUSES
        )
        if fatal and self.fatal is None:
            self.fatal = exc
        self.failed.append(cid)
        self.attempted += 1
        self.advance()
        return -1

    def advance(self, count: int = 1) -> None:
        """Tell the ``progress`` callback that ``count`` more recipients are done."""
        if self.progress is not None:
            try:
                self.progress(count)
            except Exception:
                log.exception("fan-out progress callback failed")

    def stopped(self, now: float) -> bool:
        return self.fatal is not None or now >= self.end

    def attempt_timeout(self, now: float) -> float:
        """Per-call timeout: ``call_timeout``, or less when the deadline is nearer (but
        at least one second, so that a call started just before it can still finish)."""
        return min(self.call_timeout, max(1.0, self.end - now))


class _Gate:
    """Bounds calls in flight, adapting to throttling (async engine, one event loop).

    As TCP does. The limit starts at ``initial`` (the configured concurrency) and, while no
    429 has come back, every success adds one (*slow start*: the limit doubles each round
    trip) up to ``ceiling``: with more latency, more calls are in flight, and a broadcast
    runs near the network's rate instead of ``initial / round trip``. While 429s are a real
    share of the answers (over ``THRESHOLD`` of the recent ones), a 429 halves the limit
    (at most once per round trip, so one burst counts once) and growth turns additive:
    every success adds ``1 / limit`` (about one per round trip). A throttled account thus
    gets calls at about the rate it accepts instead of a storm of retries, while the odd
    429 (one client's full buffer) does not slow a broadcast down. Calls held back by the
    ``max_rate`` pacer do not make the limit grow: the rate cap, not the window, is then
    what bounds the send. Nor do calls that took more than ``QUEUEING`` times the fastest
    round trip seen (as TCP Vegas does): more calls in flight would then only wait in a
    queue (a busy CPU here or at the other end) instead of going faster.
    """

    #: Share of recent answers that must be 429 before the limit is cut.
    THRESHOLD = 0.2
    #: Weight of the newest answer in that share (about the last 20 answers count).
    WEIGHT = 0.05
    #: Round trips this many times the fastest one mean calls are queueing: stop growing.
    QUEUEING = 2.0

    def __init__(self, initial: int, ceiling: int | None = None):
        self.ceiling = max(initial, ceiling or initial)
        self.limit = float(initial)
        self.peak = float(initial)
        self.base_rtt = float("inf")
        self.inflight = 0
        self.rtt = 0.05
        self._last_cut = 0.0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.cuts = 0
        self.share = 0.0

    async def acquire(self) -> None:
        while self.inflight >= max(1, int(self.limit)):
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if not waiter.cancelled() and waiter.done():
                    self._wake()  # pass the turn on
                raise
        self.inflight += 1

    def release(self) -> None:
        self.inflight -= 1
        self._wake()

    def _wake(self) -> None:
        free = max(1, int(self.limit)) - self.inflight
        while free > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1

    def succeeded(self, seconds: float, grow: bool = True) -> None:
        self.rtt = 0.8 * self.rtt + 0.2 * seconds
        self.share *= 1 - self.WEIGHT
        self.base_rtt = min(self.base_rtt, seconds)
        queueing = seconds > self.QUEUEING * self.base_rtt
        if grow and not queueing and self.limit < self.ceiling:
            step = 1.0 if self.cuts == 0 else 1.0 / self.limit
            self.limit = min(float(self.ceiling), self.limit + step)
            self.peak = max(self.peak, self.limit)
            self._wake()

    def throttled(self, now: float) -> None:
        self.share = self.share * (1 - self.WEIGHT) + self.WEIGHT
        if self.share > self.THRESHOLD and now - self._last_cut >= max(0.01, self.rtt):
            self.limit = max(1.0, self.limit / 2)
            self._last_cut = now
            self.cuts += 1


def _iter_ids(batches: Iterable[Sequence[str] | str]) -> Iterator[Sequence[str]]:
    for batch in batches:
        yield (batch,) if isinstance(batch, str) else batch


def fanout(
    transport: Transport,
    data: bytes,
    batches: Iterable[Sequence[str] | str],
    *,
    storage: Storage | None = None,
    concurrency: int = 64,
    deadline: float = 25.0,
    max_attempts: int = 5,
    base_delay: float = 0.05,
    max_rate: float | None = None,
    policy: RetryPolicy | None = None,
    progress: Callable[[int], None] | None = None,
    call_timeout: float = 5.0,
    max_concurrency: int | None = None,
    probe: bool = False,
    gone_grace: float = 0.0,
) -> SendReport:
    """Send ``data`` to every id in ``batches``; block until done or the deadline.

    :param batches: an iterable of id batches (what
        :meth:`~apigw_ws_core.storage.Storage.iter_connection_ids` yields), or of ids.
        It is consumed lazily in the calling thread: at most about two batches are held
        ahead of the sends.
    :param storage: where ids answered 410 are marked disconnected (one bulk call).
    :param gone_grace: seconds: a 410 for a session that connected less than this long
        ago does not mark it disconnected (API Gateway answers 410 while a connection's
        ``$connect`` is still running, in any process; its ``$disconnect`` or cleanup
        marks it if it really went). 0 marks every 410.
    :param concurrency: Management API calls in flight at first (at most, for a
        :class:`~apigw_ws_core.transport.Transport` that is not async).
    :param max_concurrency: with an ``AsyncTransport``, calls in flight grow from
        ``concurrency`` up to this many while no 429 comes back (slow start, then AIMD:
        see ``_Gate``); ``None`` keeps ``concurrency`` fixed. The transport's connection
        pool bounds it too.
    :param deadline: seconds for the whole send; retries that cannot start before it are
        not made, and ids not attempted by then are reported as failed.
    :param max_attempts: calls per recipient at most (first call included).
    :param base_delay: first backoff step in seconds (doubles per retry, jittered).
    :param max_rate: calls per second at most (``None``: unpaced). API Gateway's account
        throttle of 10,000 requests/s is shared by every API and ``@connections`` call.
    :param policy: a :class:`RetryPolicy` (overrides ``max_attempts``/``base_delay``).
    :param call_timeout: seconds one Management API call may take (connect, send, answer)
        before it counts as failed and is retried; a call in flight when the deadline
        passes still gets up to one second. Applies to an
        :class:`~apigw_ws_core.transport.AsyncTransport` (the Management API transport);
        another :class:`~apigw_ws_core.transport.Transport` bounds its own calls.
    :param progress: called with the number of recipients that just finished (delivered,
        gone or failed; not-attempted ones at the end), for progress bars. It runs on the
        sending threads (the transport's event loop for an ``AsyncTransport``): keep it
        quick and thread-safe. Prefer it to wrapping the transport, which would lose the
        async engine.
    :param probe: ask instead of send: ``GET @connections/{id}`` for each id (``data``
        is ignored). An id that answers is counted ``delivered`` (alive), a 410 ``gone``
        (and marked disconnected in ``storage``), the rest ``failed`` (unknown). Healing
        (:mod:`apigw_ws_core.heal`) uses it, with the same concurrency, rate cap and
        retries as a send.
    :raises PayloadTooLarge: before any call if ``data`` exceeds 131072 bytes.
    :raises ConfigurationError: no credentials, or TLS verification failed (after
        marking the gone ids collected so far).
    """
    check_size(data)
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if max_rate is not None and max_rate <= 0:
        raise ValueError("max_rate must be positive")
    if call_timeout <= 0:
        raise ValueError("call_timeout must be positive")
    with observe_send("probe" if probe else "send") as observed:
        started = time.monotonic()
        state = _State(
            started + deadline,
            policy or RetryPolicy(max_attempts=max_attempts, base_delay=base_delay),
            _Pacer(max_rate) if max_rate else None,
            progress,
            call_timeout,
        )
        state.probe = probe
        skipped: list[str] = []
        for _ in range(8):  # forwarding wrappers: send through what they forward to
            inner = transport.unwrap()
            if inner is transport:
                break
            transport = inner
        if isinstance(transport, AsyncTransport):
            payload = Payload.of(data)
            _run_async(
                transport,
                payload,
                _iter_ids(batches),
                state,
                concurrency,
                skipped,
                max_concurrency,
            )
        elif concurrency == 1:
            _run_inline(transport, data, _iter_ids(batches), state, skipped)
        else:
            _run_threads(transport, data, _iter_ids(batches), state, concurrency, skipped)
        if skipped:
            state.advance(len(skipped))
        marked = 0
        if state.gone and storage is not None:
            try:
                now = datetime.now(UTC)
                if gone_grace > 0:
                    marked = storage.mark_disconnected(
                        state.gone, now, connected_before=now - timedelta(seconds=gone_grace)
                    )
                else:
                    marked = storage.mark_disconnected(state.gone, now)
            except Exception:
                log.exception("could not mark %d gone connection(s) disconnected", len(state.gone))
        report = SendReport(
            delivered=state.delivered,
            gone=tuple(state.gone),
            failed=tuple(state.failed + skipped),
            retried=state.retried,
            attempted=state.attempted,
            elapsed=time.monotonic() - started,
            marked_disconnected=marked,
            throttled=state.throttled,
            recipients=state.recipients,
            first_error=state.first_error,
            ambiguous=tuple(state.ambiguous),
        )
        observed.report = report
        if isinstance(state.fatal, ConfigurationError):
            raise state.fatal
        return report


# --- the async engine (AsyncTransport) ----------------------------------------------


def _run_async(
    transport: AsyncTransport,
    payload: Payload,
    batches: Iterator[Sequence[str]],
    state: _State,
    concurrency: int,
    skipped: list[str],
    max_concurrency: int | None = None,
) -> None:
    """Feed batches from this thread to an engine coroutine on the transport's loop."""
    transport.refresh()
    loop = transport.loop
    queue: asyncio.Queue[Sequence[str] | None] = asyncio.Queue()
    slots = threading.Semaphore(2)  # batches handed over but not yet dispatched
    engine = transport.submit(
        _engine(transport, payload, queue, slots, state, concurrency, max_concurrency)
    )
    try:
        for batch in batches:
            while not slots.acquire(timeout=0.5):
                if engine.done():
                    break
            if engine.done():
                break
            state.recipients += len(batch)  # only this thread writes it
            if state.stopped(time.monotonic()):
                skipped.extend(batch)
                slots.release()
                continue
            transport.refresh()  # blocking credential refresh happens here, not on the loop
            loop.call_soon_threadsafe(queue.put_nowait, batch)
    finally:
        loop.call_soon_threadsafe(queue.put_nowait, None)
        engine.result()
    skipped.extend(state.not_attempted)


async def _engine(
    transport: AsyncTransport,
    payload: Payload,
    queue: asyncio.Queue[Sequence[str] | None],
    slots: threading.Semaphore,
    state: _State,
    concurrency: int,
    max_concurrency: int | None = None,
) -> None:
    gate = _Gate(concurrency, max_concurrency)
    loop = asyncio.get_running_loop()
    outstanding = 0
    all_done = asyncio.Event()
    feeding = True
    tasks: set[asyncio.Task[None]] = set()
    not_attempted = state.not_attempted

    def finish() -> None:
        nonlocal outstanding
        outstanding -= 1
        if outstanding == 0 and not feeding:
            all_done.set()

    def spawn(cid: str, attempt: int, holding: bool) -> None:
        task = loop.create_task(call(cid, attempt, holding))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def call(cid: str, attempt: int, holding: bool) -> None:
        if not holding:
            await gate.acquire()
        try:
            now = time.monotonic()
            if state.stopped(now):
                if attempt == 1:
                    not_attempted.append(cid)
                else:  # a retry whose turn came too late
                    state.note_error(TransportError("send deadline reached before a retry"))
                    state.failed.append(cid)
                    state.attempted += 1
                    state.advance()
                finish()
                return
            paced = False
            if state.pacer is not None:
                pause = state.pacer.reserve()
                if pause > 0:
                    paced = True
                    await asyncio.sleep(pause)
            error: BaseException | None = None
            started = time.monotonic()
            try:
                if state.probe:
                    await transport.aget(cid, timeout=state.attempt_timeout(now))
                else:
                    await transport.apost(cid, payload, timeout=state.attempt_timeout(now))
            except Exception as exc:
                error = exc
            ended = time.monotonic()
            if error is None:
                gate.succeeded(ended - started, grow=not paced)
            elif isinstance(error, ThrottledError):
                gate.throttled(ended)
            delay = state.outcome(cid, error, attempt, ended)
            if delay < 0:
                finish()
            else:
                loop.call_later(delay, spawn, cid, attempt + 1, False)
        finally:
            gate.release()

    try:
        while True:
            batch = await queue.get()
            if batch is None:
                break
            slots.release()
            for cid in batch:
                if state.stopped(time.monotonic()):
                    not_attempted.append(cid)
                    continue
                await gate.acquire()
                outstanding += 1
                spawn(cid, 1, True)
        feeding = False
        if outstanding:
            await all_done.wait()
    except BaseException:
        for task in tasks:
            task.cancel()
        raise


# --- the thread engine (any Transport) ------------------------------------------------


def _post_with_retries(transport: Transport, cid: str, data: bytes, state: _State) -> None:
    attempt = 0
    while True:
        attempt += 1
        if state.pacer is not None:
            pause = state.pacer.reserve()
            if pause > 0:
                time.sleep(pause)
        error: BaseException | None = None
        try:
            if state.probe:
                transport.get(cid)
            else:
                transport.post(cid, data)
        except Exception as exc:
            error = exc
        with state.lock:
            delay = state.outcome(cid, error, attempt, time.monotonic())
        if delay < 0:
            return
        time.sleep(delay)


def _run_inline(
    transport: Transport,
    data: bytes,
    batches: Iterator[Sequence[str]],
    state: _State,
    skipped: list[str],
) -> None:
    for batch in batches:
        state.recipients += len(batch)
        for cid in batch:
            if state.stopped(time.monotonic()):
                skipped.append(cid)
                continue
            _post_with_retries(transport, cid, data, state)


def _run_threads(
    transport: Transport,
    data: bytes,
    batches: Iterator[Sequence[str]],
    state: _State,
    concurrency: int,
    skipped: list[str],
) -> None:
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="apigw-ws") as pool:
        pending: set[Future[None]] = set()
        for batch in batches:
            state.recipients += len(batch)
            for cid in batch:
                if state.stopped(time.monotonic()):
                    skipped.append(cid)
                    continue
                while len(pending) >= 2 * concurrency:
                    _done, pending = wait(pending, return_when=FIRST_COMPLETED)
                pending.add(pool.submit(_post_with_retries, transport, cid, data, state))
        wait(pending)


# --- background sends -----------------------------------------------------------------


@attrs.frozen(kw_only=True)
class SendJob:
    """A send to run later, elsewhere: the encoded payload and the target.

    ``as_dict()`` / ``from_dict()`` give a JSON-serialisable form for task queues (Celery,
    RQ, Dramatiq ...): enqueue ``job.as_dict()``, and in the worker call
    :meth:`~apigw_ws_core.app.WebSocketApp.run_send_job` with it. Calling a job made by
    :meth:`~apigw_ws_core.app.WebSocketApp.send_in_background` runs it in-process.
    """

    payload: bytes
    connection_id: str | None = None
    channel: str | None = None
    user_id: str | None = None
    everyone: bool = False
    #: Connection ids left out (e.g. the sender), and the attribute filter.
    exclude: tuple[str, ...] = ()
    attributes: dict[str, str] = attrs.field(factory=dict)
    sender: Callable[..., SendReport] | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def target(self) -> dict[str, Any]:
        """Keyword arguments for :meth:`~apigw_ws_core.app.WebSocketApp.send`."""
        target: dict[str, Any] = {}
        if self.connection_id is not None:
            target["connection_id"] = self.connection_id
        if self.channel is not None:
            target["channel"] = self.channel
        if self.user_id is not None:
            target["user_id"] = self.user_id
        if self.everyone:
            target["everyone"] = True
        if self.exclude:
            target["exclude"] = self.exclude
        if self.attributes:
            target["attributes"] = dict(self.attributes)
        return target

    def __call__(self) -> SendReport:
        """Run the send with the app that made the job."""
        if self.sender is None:
            raise RuntimeError("this SendJob is not bound to an app; use app.run_send_job(job)")
        return self.sender(self.payload, **self.target)

    def describe(self) -> str:
        """The target as text for log lines, e.g. ``channel='room-1'``."""
        return ", ".join(f"{key}={value!r}" for key, value in self.target.items()) or "nobody"

    def run_logged(self) -> SendReport:
        """Run the send (as :meth:`__call__`) and log a failure at ERROR, with the target,
        the counts and the cause, so that nothing fails unseen when no one reads the
        result (a background send's ``Future``). The report or exception is returned or
        raised unchanged."""
        try:
            report = self()
        except Exception as exc:
            log.error(
                "background send to %s (%d bytes) failed: %s: %s",
                self.describe(),
                len(self.payload),
                type(exc).__name__,
                exc,
                exc_info=exc,
            )
            raise
        if report.failed:
            log.error(
                "background send to %s: %d of %d recipient(s) failed, %d delivered "
                "(%d maybe twice), %d gone; first error: %s",
                self.describe(),
                len(report.failed),
                report.recipients,
                report.delivered,
                len(report.ambiguous),
                len(report.gone),
                report.first_error or "deadline reached",
            )
        return report

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (the payload base64-encoded)."""
        return {
            "payload_b64": base64.b64encode(self.payload).decode("ascii"),
            "connection_id": self.connection_id,
            "channel": self.channel,
            "user_id": self.user_id,
            "everyone": self.everyone,
            "exclude": list(self.exclude),
            "attributes": dict(self.attributes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SendJob:
        """Inverse of :meth:`as_dict` (unbound: run it with ``app.run_send_job``)."""
        return cls(
            payload=base64.b64decode(data["payload_b64"]),
            connection_id=data.get("connection_id"),
            channel=data.get("channel"),
            user_id=data.get("user_id"),
            everyone=bool(data.get("everyone", False)),
            exclude=tuple(str(cid) for cid in data.get("exclude") or ()),
            attributes={str(k): str(v) for k, v in (data.get("attributes") or {}).items()},
        )
