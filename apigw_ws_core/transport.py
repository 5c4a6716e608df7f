"""The transport contract: how bytes reach one connection through API Gateway.

* :class:`Transport` is the one-method contract (``post``; optional ``delete``/``get``).
* :class:`AsyncTransport` adds a coroutine ``apost`` running on the transport's own event
  loop; :func:`~apigw_ws_core.fanout.fanout` drives thousands of those concurrently from
  one thread instead of a thread pool.
* :class:`Payload` is a message prepared once (bytes and SHA-256) for many recipients.
* :class:`RecordingTransport` keeps what was sent, for tests.

The real transport, :class:`~apigw_ws_core.http1.ManagementApiTransport` (the Management
API over kept-alive HTTP/1.1), lives in :mod:`apigw_ws_core.http1`; its request signing in
:mod:`apigw_ws_core.signer`. Both names are still importable from here.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import json
import logging
import os
import threading
from collections import defaultdict
from collections.abc import Coroutine, Iterable
from concurrent.futures import Future
from typing import Any, TypeVar

import attrs

from apigw_ws_core.errors import (
    GoneError,
    PayloadTooLarge,
    ThrottledError,
    TransportError,
)
from apigw_ws_core.events import MAX_BODY_BYTES

__all__ = [
    "AsyncTransport",
    "Payload",
    "RecordingTransport",
    "SentMessage",
    "Transport",
]

log = logging.getLogger("apigw_ws.transport")

T = TypeVar("T")


@attrs.frozen
class Payload:
    """A message prepared once for many recipients: the bytes and their SHA-256.

    Fan-out builds one per message, so neither the size check nor the payload hash that
    SigV4 needs is repeated per recipient.
    """

    data: bytes
    sha256: str

    @classmethod
    def of(cls, data: bytes) -> Payload:
        """Hash ``data`` (no size check: see :func:`apigw_ws_core.fanout.check_size`)."""
        return cls(data, hashlib.sha256(data).hexdigest())


class Transport(abc.ABC):
    """Sends one message to one connection.

    Contract for :meth:`post`: deliver ``data`` (at most 131072 bytes, already checked by
    the caller) or raise :class:`~apigw_ws_core.errors.GoneError` (410, do not retry),
    :class:`~apigw_ws_core.errors.ThrottledError` (429, retry later) or
    :class:`~apigw_ws_core.errors.TransportError` (``status`` 5xx or ``None`` for network
    errors: retry; other 4xx: do not). Implementations must be thread-safe: fan-out calls
    ``post`` from several threads at once.
    """

    @abc.abstractmethod
    def post(self, connection_id: str, data: bytes) -> None:
        """Deliver ``data`` to ``connection_id`` as one text frame."""

    def delete(self, connection_id: str) -> None:
        """Close the connection (API Gateway answers 204; 410 if already gone)."""
        raise NotImplementedError

    def get(self, connection_id: str) -> dict[str, Any]:
        """Connection info: ``connectedAt``, ``lastActiveAt``, ``identity``."""
        raise NotImplementedError

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release pooled connections."""

    def unwrap(self) -> Transport:
        """The transport that does the work. A wrapper that only forwards (to share one
        pool between apps, or to swap it in tests) returns the transport it forwards to,
        so that fan-out can use that one's async engine. Default: ``self``."""
        return self


class AsyncTransport(Transport):
    """A transport whose calls are coroutines on an event loop it owns (in its own thread).

    Contract for :meth:`apost`: the same outcomes as :meth:`Transport.post`, as a coroutine
    that only ever runs on :attr:`loop`. Fan-out calls :meth:`refresh` from the sending
    thread before each batch of recipients, so blocking work (credential refresh) never
    runs on the loop, then awaits many ``apost`` calls concurrently on the loop.

    The synchronous :meth:`post`, :meth:`delete` and :meth:`get` are thread-safe wrappers
    that run the coroutine on the loop and wait. Do not call them from the loop's own
    thread (it would deadlock); they raise ``RuntimeError`` instead.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._start_lock = threading.Lock()

    # --- the loop thread ----------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The transport's event loop, started on first use (again after ``fork``)."""
        loop = self._loop
        if loop is not None and self._pid == os.getpid() and not loop.is_closed():
            return loop
        with self._start_lock:
            if self._loop is None or self._pid != os.getpid() or self._loop.is_closed():
                self._start_loop()
            assert self._loop is not None
            return self._loop

    def _start_loop(self) -> None:
        # After a fork the parent's loop thread does not exist here: forget its state.
        self._forget_loop_state()
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        thread = threading.Thread(target=run, name="apigw-ws-transport", daemon=True)
        thread.start()
        ready.wait()
        self._loop, self._thread, self._pid = loop, thread, os.getpid()

    def _forget_loop_state(self) -> None:
        """Drop loop-bound state (connection pools) inherited from a parent process."""

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Schedule ``coro`` on the transport's loop from any other thread."""
        loop = self.loop
        if self._thread is threading.current_thread():
            coro.close()
            raise RuntimeError("blocking transport call from the transport's own event loop")
        return asyncio.run_coroutine_threadsafe(coro, loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result (from any other thread).

        On ``timeout`` the coroutine is cancelled and ``TimeoutError`` raised."""
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def stop_loop(self) -> None:
        """Stop the loop thread (it restarts on next use)."""
        with self._start_lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None or self._pid != os.getpid():
            return
        if thread is threading.current_thread():
            loop.stop()
            return
        try:
            asyncio.run_coroutine_threadsafe(self._aclose(), loop).result(5)
        except Exception:  # pragma: no cover - best effort on shutdown
            log.debug("error while closing transport connections", exc_info=True)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        if not thread.is_alive():
            loop.close()

    async def _aclose(self) -> None:
        """Close loop-bound resources (runs on the loop before it stops)."""

    # --- the contract ---------------------------------------------------------------

    def refresh(self) -> None:
        """Do blocking preparation (e.g. credential refresh) in the calling thread."""

    @abc.abstractmethod
    async def apost(
        self, connection_id: str, payload: Payload, *, timeout: float | None = None
    ) -> None:
        """Deliver ``payload`` to ``connection_id`` (runs on :attr:`loop`)."""

    async def aget(self, connection_id: str, *, timeout: float | None = None) -> dict[str, Any]:
        """``GET @connections/{id}`` (runs on :attr:`loop`): the connection's info, or
        :class:`~apigw_ws_core.errors.GoneError` when API Gateway no longer knows it.
        Optional; healing needs it."""
        raise NotImplementedError

    def post(self, connection_id: str, data: bytes) -> None:
        """Synchronous :meth:`apost` (thread-safe)."""
        self.refresh()
        self.run(self.apost(connection_id, Payload.of(data)))

    def close(self) -> None:
        """Close pooled connections and stop the loop thread."""
        self.stop_loop()


@attrs.frozen
class SentMessage:
    """One message a :class:`RecordingTransport` delivered."""

    connection_id: str
    data: bytes

    def json(self) -> Any:
        """The payload decoded as JSON."""
        return json.loads(self.data)


class RecordingTransport(Transport):
    """Test transport: records deliveries. Thread-safe.

    :param gone: ids that answer 410.
    :param throttle: ``{id: n}``: that id answers 429 ``n`` times before succeeding.
    :param fail: ``{id: n}``: that id answers 503 ``n`` times before succeeding.
    """

    def __init__(
        self,
        gone: Iterable[str] = (),
        throttle: dict[str, int] | None = None,
        fail: dict[str, int] | None = None,
    ):
        self._lock = threading.Lock()
        self.sent: list[SentMessage] = []
        self.deleted: list[str] = []
        self.gone: set[str] = set(gone)
        self.throttle: dict[str, int] = defaultdict(int, throttle or {})
        self.fail: dict[str, int] = defaultdict(int, fail or {})
        self.attempts = 0

    def post(self, connection_id: str, data: bytes) -> None:
        """Record the message (or raise as configured)."""
        if len(data) > MAX_BODY_BYTES:
            raise PayloadTooLarge("the Management API refused the payload as too large")
        with self._lock:
            self.attempts += 1
            if connection_id in self.gone:
                raise GoneError(connection_id)
            if self.throttle[connection_id] > 0:
                self.throttle[connection_id] -= 1
                raise ThrottledError()
            if self.fail[connection_id] > 0:
                self.fail[connection_id] -= 1
                raise TransportError("Management API answered 503", status=503)
            self.sent.append(SentMessage(connection_id, bytes(data)))

    def delete(self, connection_id: str) -> None:
        """Record the close; later posts to it answer 410."""
        with self._lock:
            if connection_id in self.gone:
                raise GoneError(connection_id)
            self.gone.add(connection_id)
            self.deleted.append(connection_id)

    def get(self, connection_id: str) -> dict[str, Any]:
        """Minimal info for a live id."""
        if connection_id in self.gone:
            raise GoneError(connection_id)
        return {"connectionId": connection_id}

    def messages_for(self, connection_id: str) -> list[Any]:
        """Decoded JSON payloads delivered to one connection, in order."""
        with self._lock:
            return [m.json() for m in self.sent if m.connection_id == connection_id]

    def clear(self) -> None:
        """Forget what was sent."""
        with self._lock:
            self.sent.clear()
            self.deleted.clear()


def __getattr__(name: str) -> Any:
    """Keep ``from apigw_ws_core.transport import ManagementApiTransport`` (and the
    signer's names) working: they moved to :mod:`apigw_ws_core.http1` and
    :mod:`apigw_ws_core.signer`."""
    if name == "ManagementApiTransport":
        from apigw_ws_core import http1

        return http1.ManagementApiTransport
    if name in ("SigV4Signer", "region_from_endpoint"):
        from apigw_ws_core import signer

        return getattr(signer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
