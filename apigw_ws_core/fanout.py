"""Fan-out: deliver one payload to many connections through a :class:`Transport`.

Bounded concurrency (a thread pool over a thread-safe transport), retries of 429 and 5xx
with jittered exponential backoff inside an overall deadline, 410s collected and marked
disconnected in one bulk storage call, and a :class:`SendReport`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime

import attrs

from apigw_ws_core.errors import GoneError, PayloadTooLarge, ThrottledError, TransportError
from apigw_ws_core.events import MAX_BODY_BYTES
from apigw_ws_core.storage import Storage
from apigw_ws_core.transport import Transport

__all__ = ["SendReport", "check_size", "fanout"]

log = logging.getLogger("apigw_ws.fanout")


@attrs.frozen
class SendReport:
    """What a send did: counts, the ids that were gone or failed, and timing."""

    delivered: int = 0
    gone: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    retried: int = 0
    attempted: int = 0
    elapsed: float = 0.0
    marked_disconnected: int = 0

    @property
    def ok(self) -> bool:
        """No recipient failed (gone recipients are not failures)."""
        return not self.failed

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly summary (counts only)."""
        return {
            "delivered": self.delivered,
            "gone": len(self.gone),
            "failed": len(self.failed),
            "retried": self.retried,
            "elapsed": round(self.elapsed, 4),
        }


def check_size(data: bytes) -> bytes:
    """Refuse payloads over API Gateway's 128 KiB before any call."""
    if len(data) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"message is {len(data)} bytes; API Gateway allows {MAX_BODY_BYTES}")
    return data


def _retryable(exc: TransportError) -> bool:
    return isinstance(exc, ThrottledError) or exc.status is None or exc.status >= 500


class _Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.delivered = 0
        self.retried = 0
        self.attempted = 0
        self.gone: list[str] = []
        self.failed: list[str] = []


def _deliver(
    transport: Transport,
    cid: str,
    data: bytes,
    counters: _Counters,
    deadline: float,
    max_attempts: int,
    base_delay: float,
) -> None:
    attempt = 0
    while True:
        attempt += 1
        try:
            transport.post(cid, data)
        except GoneError:
            with counters.lock:
                counters.attempted += 1
                counters.gone.append(cid)
            return
        except TransportError as exc:
            delay = base_delay * (2 ** (attempt - 1)) * (0.5 + random.random())
            if isinstance(exc, ThrottledError) and exc.retry_after:
                delay = max(delay, exc.retry_after)
            if _retryable(exc) and attempt < max_attempts and time.monotonic() + delay < deadline:
                with counters.lock:
                    counters.retried += 1
                time.sleep(delay)
                continue
            log.warning("send to %s failed after %d attempt(s): %s", cid, attempt, exc)
            with counters.lock:
                counters.attempted += 1
                counters.failed.append(cid)
            return
        except Exception:
            log.exception("send to %s failed", cid)
            with counters.lock:
                counters.attempted += 1
                counters.failed.append(cid)
            return
        with counters.lock:
            counters.attempted += 1
            counters.delivered += 1
        return


def fanout(
    transport: Transport,
    data: bytes,
    batches: Iterable[Sequence[str]],
    *,
    storage: Storage | None = None,
    concurrency: int = 32,
    deadline: float = 25.0,
    max_attempts: int = 5,
    base_delay: float = 0.05,
) -> SendReport:
    """Send ``data`` to every id in ``batches`` (an iterable of id batches, streamed).

    At most ``concurrency`` calls are in flight; at most ``2 * concurrency`` ids are queued,
    so recipients are pulled from storage as the send progresses. Ids not attempted before
    ``deadline`` seconds are reported as failed. Gone ids are marked disconnected in
    ``storage`` with one bulk call at the end.
    """
    check_size(data)
    started = time.monotonic()
    end = started + deadline
    counters = _Counters()
    skipped: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="apigw-ws") as pool:
        pending: set[Future[None]] = set()
        for batch in batches:
            for cid in batch:
                if time.monotonic() >= end:
                    skipped.append(cid)
                    continue
                while len(pending) >= 2 * concurrency:
                    _done, pending = wait(pending, return_when=FIRST_COMPLETED)
                pending.add(
                    pool.submit(
                        _deliver, transport, cid, data, counters, end, max_attempts, base_delay
                    )
                )
        wait(pending)
    marked = 0
    if counters.gone and storage is not None:
        marked = storage.mark_disconnected(counters.gone, datetime.now(UTC))
    if skipped:
        log.warning("send deadline reached; %d recipient(s) not attempted", len(skipped))
    return SendReport(
        delivered=counters.delivered,
        gone=tuple(counters.gone),
        failed=tuple(counters.failed + skipped),
        retried=counters.retried,
        attempted=counters.attempted,
        elapsed=time.monotonic() - started,
        marked_disconnected=marked,
    )
