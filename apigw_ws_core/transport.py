"""Transports deliver bytes to one connection through API Gateway's Management API.

* :class:`Transport` is the one-method contract (``post``; optional ``delete``/``get``).
* :class:`AsyncTransport` adds a coroutine ``apost`` running on the transport's own event
  loop; :func:`~apigw_ws_core.fanout.fanout` drives thousands of those concurrently from
  one thread instead of a thread pool.
* :class:`ManagementApiTransport` talks to ``@connections`` over pooled, kept-alive
  HTTP/1.1 (TLS verified against botocore's CA bundle), signed with SigV4 from botocore's
  credential chain.
* :class:`RecordingTransport` keeps what was sent, for tests.

Why a small asyncio HTTP/1.1 client instead of urllib3: the Management API has no bulk
call, so a broadcast is one signed request per recipient. On a 2-core machine boto3 costs
about 0.9 ms of CPU per post and a urllib3 thread pool (with the same cached signer) about
0.3 ms, GIL-bound either way; this client about 0.05 ms, driving every call of a send as
coroutines on one event-loop thread. ``docs/scaling.rst`` and ``benchmarks/fanout.py`` have
the measurements. The client speaks exactly what the Management API needs (one request at a
time per kept-alive connection, ``Content-Length``, chunked or close-delimited bodies) and
nothing more; stdlib only (asyncio streams, ssl).
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import hmac
import json
import logging
import os
import re
import ssl
import threading
import time
from collections import defaultdict
from collections.abc import Coroutine, Iterable
from concurrent.futures import Future
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import attrs
import botocore.session
from botocore.credentials import Credentials, ReadOnlyCredentials
from botocore.httpsession import get_cert_path
from botocore.utils import normalize_url_path

from apigw_ws_core.discovery import is_loopback
from apigw_ws_core.errors import (
    ConfigurationError,
    GoneError,
    PayloadTooLarge,
    ThrottledError,
    TransportError,
)
from apigw_ws_core.events import MAX_BODY_BYTES

__all__ = [
    "AsyncTransport",
    "ManagementApiTransport",
    "Payload",
    "RecordingTransport",
    "SentMessage",
    "SigV4Signer",
    "Transport",
    "region_from_endpoint",
]

log = logging.getLogger("apigw_ws.transport")

T = TypeVar("T")

_SERVICE = "execute-api"
_USER_AGENT = "apigw-ws"


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


def region_from_endpoint(endpoint: str) -> str | None:
    """``https://abc.execute-api.eu-west-1.amazonaws.com/prod`` → ``eu-west-1``."""
    host = urlsplit(endpoint).hostname or ""
    parts = host.split(".")
    if "execute-api" in parts:
        idx = parts.index("execute-api")
        if idx + 1 < len(parts):
            return parts[idx + 1]
    return None


# --- SigV4 -------------------------------------------------------------------------


class SigV4Signer:
    """SigV4 for ``execute-api``, producing exactly botocore's ``SigV4Auth`` headers.

    botocore re-derives the signing key (four HMACs) and re-parses the URL on every
    request; here the key is cached per (secret, day) and the payload hash comes
    precomputed with the :class:`Payload`, so a signature costs one SHA-256 and one
    HMAC. The canonical path uses botocore's own normalisation and quoting.
    """

    def __init__(self, region: str, host: str, service: str = _SERVICE):
        self.region = region
        self.service = service
        self.host = host
        self._keys: dict[tuple[str, str], bytes] = {}
        self._stamp_second = -1
        self._stamp = ""

    def _signing_key(self, secret: str, day: str) -> bytes:
        key = self._keys.get((secret, day))
        if key is None:
            k = hmac.new(f"AWS4{secret}".encode(), day.encode(), hashlib.sha256).digest()
            for part in (self.region, self.service, "aws4_request"):
                k = hmac.new(k, part.encode(), hashlib.sha256).digest()
            if len(self._keys) > 8:
                self._keys.clear()
            self._keys[(secret, day)] = key = k
        return key

    def _timestamp(self, now: float) -> str:
        second = int(now)
        if second != self._stamp_second:
            self._stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))
            self._stamp_second = second
        return self._stamp

    def sign(
        self,
        method: str,
        path: str,
        payload_sha256: str,
        credentials: ReadOnlyCredentials,
        now: float | None = None,
        canonical_path: str | None = None,
    ) -> list[tuple[str, str]]:
        """Headers to add for ``method path`` (``path`` as sent, already %-encoded).

        ``canonical_path`` may be passed precomputed (botocore's: the normalised path
        percent-encoded once more, ``safe="/~"``)."""
        stamp, token, authorization = self._sign(
            method, path, payload_sha256, credentials, now, canonical_path
        )
        headers = [("X-Amz-Date", stamp)]
        if token:
            headers.append(("X-Amz-Security-Token", token))
        headers.append(("Authorization", authorization))
        return headers

    def header_lines(
        self,
        method: str,
        path: str,
        payload_sha256: str,
        credentials: ReadOnlyCredentials,
        now: float | None = None,
        canonical_path: str | None = None,
    ) -> str:
        """:meth:`sign` as HTTP/1.1 header lines, each ending in CRLF."""
        stamp, token, authorization = self._sign(
            method, path, payload_sha256, credentials, now, canonical_path
        )
        if token:
            return (
                f"X-Amz-Date: {stamp}\r\nX-Amz-Security-Token: {token}\r\n"
                f"Authorization: {authorization}\r\n"
            )
        return f"X-Amz-Date: {stamp}\r\nAuthorization: {authorization}\r\n"

    def _sign(
        self,
        method: str,
        path: str,
        payload_sha256: str,
        credentials: ReadOnlyCredentials,
        now: float | None,
        canonical_path: str | None,
    ) -> tuple[str, str | None, str]:
        stamp = self._timestamp(time.time() if now is None else now)
        day = stamp[:8]
        token = credentials.token
        if token:
            canonical_headers = (
                f"host:{self.host}\nx-amz-date:{stamp}\nx-amz-security-token:{token}\n"
            )
            signed = "host;x-amz-date;x-amz-security-token"
        else:
            canonical_headers = f"host:{self.host}\nx-amz-date:{stamp}\n"
            signed = "host;x-amz-date"
        if canonical_path is None:
            canonical_path = quote(normalize_url_path(path), safe="/~")
        canonical = f"{method}\n{canonical_path}\n\n{canonical_headers}\n{signed}\n{payload_sha256}"
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        to_sign = (
            f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n"
            f"{hashlib.sha256(canonical.encode('utf-8')).hexdigest()}"
        )
        key = self._signing_key(credentials.secret_key or "", day)
        signature = hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
        authorization = (
            f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}"
        )
        return stamp, token, authorization


# --- a small asyncio HTTP/1.1 client ------------------------------------------------

_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_BASE64_ID = re.compile(r"[A-Za-z0-9+/=_-]+")
_MAX_RESPONSE_BODY = 1 << 20
#: How often in-flight requests are checked against their deadline (seconds).
_WATCHDOG_INTERVAL = 0.1


class _Response:
    """One response: status, the head as received (and lower-cased), the body."""

    __slots__ = ("body", "head", "lower", "status")

    def __init__(self, status: int, head: bytes, lower: bytes, body: bytes):
        self.status = status
        self.head = head
        self.lower = lower
        self.body = body

    def header(self, name: str) -> str | None:
        """The (last) value of header ``name``, or ``None``."""
        return _header(self.head, self.lower, name.lower().encode("latin-1"))


def _header(head: bytes, lower: bytes, name: bytes) -> str | None:
    """Find ``name:`` in a response head (``lower`` is ``head.lower()``)."""
    start = lower.rfind(b"\r\n" + name + b":")
    if start < 0:
        return None
    start += len(name) + 3
    end = lower.find(b"\r\n", start)
    return head[start:end].strip().decode("latin-1")


def _parse_status(head: bytes) -> tuple[int, bool]:
    """Status code and whether the server speaks HTTP/1.1, from a response head."""
    if head[:7] != b"HTTP/1." or head[8:9] != b" " or not head[9:12].isdigit():
        raise ValueError(f"malformed HTTP status line: {head[:80]!r}")
    return int(head[9:12]), head[7:8] == b"1"


class _StaleConnection(Exception):
    """A kept-alive connection was closed by the server before answering."""


class _Conn:
    __slots__ = ("deadline", "idle_since", "reader", "timed_out", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0
        self.deadline = 0.0
        self.timed_out = False

    def close(self) -> None:
        self.writer.close()


class _Sent:
    """Marks a network error raised after the request was written (outcome unknown)."""


class _SentTimeout(_Sent, TimeoutError):
    """No answer in time to a request that went out."""


class _SentConnectionError(_Sent, ConnectionError):
    """The connection failed after the request went out."""


#: What a broken connection or a garbled answer raises while exchanging a request.
_NETWORK_ERRORS = (OSError, EOFError, ValueError, asyncio.LimitOverrunError)


class _HttpPool:
    """Kept-alive HTTP/1.1 connections to one origin; used only on one event loop.

    At most ``max_connections`` connections exist; a request takes an idle connection
    (most recently used first) or opens one. A kept-alive connection the server closed
    while idle is detected and the request re-sent once on a fresh connection (nothing
    was received for it, so the server never answered it). Deadlines are enforced by one
    watchdog task that aborts overdue connections, not by a timer per request.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        scheme: str,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        max_connections: int,
        idle_timeout: float,
    ):
        self.loop = loop
        self.scheme = scheme
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self._idle: list[_Conn] = []
        self._busy: set[_Conn] = set()
        self._sem = asyncio.Semaphore(max_connections)
        self._watchdog: asyncio.Task[None] | None = None
        self.opened = 0

    async def _connect(self, deadline: float) -> _Conn:
        async with asyncio.timeout_at(deadline):
            reader, writer = await asyncio.open_connection(
                self.host,
                self.port,
                ssl=self.ssl_context,
                server_hostname=self.host if self.ssl_context else None,
                limit=1 << 16,
            )
        self.opened += 1
        return _Conn(reader, writer)

    def _take_idle(self) -> _Conn | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if (
                now - conn.idle_since < self.idle_timeout
                and not conn.reader.at_eof()
                and not conn.writer.is_closing()
            ):
                return conn
            conn.close()
        return None

    async def request(self, method: str, head: bytes, body: bytes, timeout: float) -> _Response:
        """Send one request (``head`` ends with the blank line) and read the response.

        :raises TimeoutError: no complete response within ``timeout`` seconds (the wait
            for a free connection is not counted).
        :raises OSError, EOFError, ValueError: network or protocol errors.
        """
        async with self._sem:
            deadline = self.loop.time() + timeout
            conn = self._take_idle()
            if conn is not None:
                try:
                    return await self._exchange(conn, method, head, body, deadline, True)
                except _StaleConnection:
                    pass
            conn = await self._connect(deadline)
            try:
                return await self._exchange(conn, method, head, body, deadline, False)
            except _StaleConnection as exc:
                raise ConnectionResetError("connection closed before a response") from exc

    async def _exchange(
        self, conn: _Conn, method: str, head: bytes, body: bytes, deadline: float, reused: bool
    ) -> _Response:
        written = False
        received = False
        ok = False
        conn.deadline = deadline
        self._busy.add(conn)
        if self._watchdog is None:
            self._watchdog = self.loop.create_task(self._watch())
        try:
            writer = conn.writer
            written = True  # from here on the server may act on the request
            if len(body) <= 16384:
                writer.write(head + body)
            else:
                writer.writelines((head, body))
            await writer.drain()
            reader = conn.reader
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                received = True
                status, http11 = _parse_status(raw)
                if status >= 200:
                    break
            lower = raw.lower()
            connection = _header(raw, lower, b"connection") or ""
            keep_alive = ("close" not in connection) if http11 else ("keep-alive" in connection)
            data = await _read_body(reader, method, status, raw, lower)
            if data is None:  # delimited by the connection closing
                data = await reader.read(_MAX_RESPONSE_BODY)
                keep_alive = False
            ok = True
        except Exception as exc:
            if conn.timed_out:
                raise (_SentTimeout if written else TimeoutError)("request timed out") from exc
            stale = isinstance(exc, (ConnectionResetError, BrokenPipeError)) or (
                isinstance(exc, asyncio.IncompleteReadError) and not exc.partial
            )
            if reused and not received and stale:
                raise _StaleConnection() from exc
            if written and isinstance(exc, _NETWORK_ERRORS):
                raise _SentConnectionError(repr(exc)) from exc
            raise
        finally:
            self._busy.discard(conn)
            if not ok:
                conn.close()
        if keep_alive and not conn.timed_out:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()
        return _Response(status, raw, lower, data)

    async def _watch(self) -> None:
        """Abort connections whose request is past its deadline; exit when none is busy."""
        try:
            while self._busy:
                await asyncio.sleep(_WATCHDOG_INTERVAL)
                now = self.loop.time()
                for conn in [c for c in self._busy if c.deadline <= now]:
                    conn.timed_out = True
                    transport = conn.writer.transport
                    transport.abort()
        finally:
            self._watchdog = None

    def close(self) -> None:
        """Close idle connections and stop the watchdog."""
        while self._idle:
            self._idle.pop().close()
        for conn in self._busy:
            conn.close()
        if self._watchdog is not None:
            self._watchdog.cancel()


async def _read_body(
    reader: asyncio.StreamReader, method: str, status: int, head: bytes, lower: bytes
) -> bytes | None:
    """The response body; ``None`` when it is delimited by the connection closing."""
    if method == "HEAD" or status in (204, 304):
        return b""
    encoding = _header(head, lower, b"transfer-encoding")
    if encoding is not None and "chunked" in encoding.lower():
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                return b"".join(chunks)
            total += size
            if total > _MAX_RESPONSE_BODY:
                raise ValueError("response body too large")
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
    length = _header(head, lower, b"content-length")
    if length is not None:
        n = int(length)
        if n < 0 or n > _MAX_RESPONSE_BODY:
            raise ValueError(f"unacceptable Content-Length {length!r}")
        return await reader.readexactly(n) if n else b""
    return None


# --- the Management API transport -----------------------------------------------------


class ManagementApiTransport(AsyncTransport):
    """The API Gateway Management API (``@connections``) over kept-alive HTTP/1.1.

    ``endpoint`` is ``https://{api_id}.execute-api.{region}.amazonaws.com/{stage}``, a
    custom domain with its base path, or the local gateway's management URL. Requests are
    signed with SigV4 (service ``execute-api``) using ``credentials`` or botocore's
    standard chain (environment, profile, SSO, container or instance role); refreshable
    credentials are re-read before every send, in the sending thread. HTTPS certificates
    are verified against botocore's CA bundle (``certifi``'s when installed) unless
    ``verify`` is ``False`` or a CA bundle path. HTTP proxies are not supported.

    Thread-safe: one instance per process serves every thread. Network I/O runs on an
    event loop in a daemon thread that the transport starts on first use (and again in a
    forked child); :meth:`close` stops it.

    :param region: signing region; default: from an ``execute-api`` host name, else the
        botocore session's region, else ``us-east-1`` (fine for the local gateway).
    :param max_connections: kept-alive connections at most (bounds concurrency).
    :param timeout: seconds for one request (connect, send and response).
    :param idle_timeout: idle connections older than this are not reused.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        region: str | None = None,
        credentials: Credentials | None = None,
        session: botocore.session.Session | None = None,
        max_connections: int = 64,
        timeout: float = 10.0,
        idle_timeout: float = 20.0,
        verify: bool | str = True,
    ):
        super().__init__()
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(f"management endpoint must be an http(s) URL: {endpoint!r}")
        if parts.query or parts.fragment:
            raise ConfigurationError(f"management endpoint has a query or fragment: {endpoint!r}")
        if max_connections < 1:
            raise ConfigurationError("max_connections must be at least 1")
        self.endpoint = endpoint.rstrip("/")
        self._session = session
        self.region = (
            region or region_from_endpoint(endpoint) or self._session_region() or "us-east-1"
        )
        self.scheme = parts.scheme
        self.hostname = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        default_port = 443 if parts.scheme == "https" else 80
        self.host_header = host if parts.port in (None, default_port) else f"{host}:{parts.port}"
        self._path_prefix = parts.path.rstrip("/") + "/@connections/"
        self._canonical_prefix = quote(normalize_url_path(self._path_prefix), safe="/~")
        self.max_connections = max_connections
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        self.verify = verify
        self._credentials = credentials
        self._frozen: ReadOnlyCredentials | None = None
        self._creds_lock = threading.Lock()
        self._signer = SigV4Signer(self.region, self.host_header)
        self._head_common = (
            f" HTTP/1.1\r\nHost: {self.host_header}\r\nUser-Agent: {_USER_AGENT}\r\n"
        )
        self._pool: _HttpPool | None = None
        self._ssl_context: ssl.SSLContext | None = None

    def __repr__(self) -> str:
        return f"<ManagementApiTransport {self.endpoint} region={self.region}>"

    def _session_region(self) -> str | None:
        try:
            session = self._session or botocore.session.get_session()
            region = session.get_config_variable("region")
        except Exception:  # pragma: no cover - a broken profile must not break construction
            return None
        return str(region) if region else None

    # --- credentials (caller thread) ------------------------------------------------

    def refresh(self) -> None:
        """Resolve (first time) and refresh credentials in the calling thread."""
        creds = self._credentials
        if creds is None:
            with self._creds_lock:
                if self._credentials is None:
                    session = self._session or botocore.session.get_session()
                    self._credentials = session.get_credentials()
                creds = self._credentials
            if creds is None and is_loopback(self.hostname):
                # The local gateway checks the shape of SigV4, not who signed (unless run
                # with --sigv4-key): loopback needs no real credentials.
                creds = self._credentials = Credentials("local", "local")
            if creds is None:
                raise ConfigurationError(
                    "no AWS credentials found for the Management API: configure them as for "
                    "the AWS CLI (environment, profile, SSO or role)"
                )
        self._frozen = creds.get_frozen_credentials()

    # --- loop side ------------------------------------------------------------------

    def _forget_loop_state(self) -> None:
        self._pool = None

    def _make_ssl_context(self) -> ssl.SSLContext:
        if self.verify is False:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        cafile = self.verify if isinstance(self.verify, str) else get_cert_path(True)
        return ssl.create_default_context(cafile=cafile)

    def _get_pool(self) -> _HttpPool:
        pool = self._pool
        loop = asyncio.get_running_loop()
        if pool is None or pool.loop is not loop:  # connections belong to one loop
            if self.scheme == "https" and self._ssl_context is None:
                self._ssl_context = self._make_ssl_context()
            pool = self._pool = _HttpPool(
                loop,
                self.scheme,
                self.hostname,
                self.port,
                self._ssl_context if self.scheme == "https" else None,
                self.max_connections,
                self.idle_timeout,
            )
        return pool

    async def _aclose(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
            await asyncio.sleep(0)  # let the cancelled watchdog finish

    def path_for(self, connection_id: str) -> tuple[str, str]:
        """The request path for a connection id (the id percent-encoded with no safe
        characters, as botocore does) and its SigV4 canonical form."""
        if _BASE64_ID.fullmatch(connection_id):  # API Gateway's ids: the fast path
            quoted = connection_id.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")
        elif not connection_id or connection_id in (".", ".."):
            raise TransportError(f"invalid connection id {connection_id!r}", status=400)
        else:
            quoted = quote(connection_id, safe="")
        # normalize(prefix + segment) == normalize(prefix) + segment for one segment that
        # is not a dot segment; the segment holds only unreserved characters and %XX.
        return self._path_prefix + quoted, self._canonical_prefix + quoted.replace("%", "%25")

    async def arequest(
        self,
        method: str,
        connection_id: str,
        payload: Payload | None = None,
        *,
        timeout: float | None = None,
    ) -> _Response:
        """One signed request to ``@connections/{id}`` (network errors → status None)."""
        path, canonical_path = self.path_for(connection_id)
        if self._frozen is None:
            self.refresh()  # first call straight on the loop: resolve here, once
        creds = self._frozen
        assert creds is not None
        body = payload.data if payload is not None else b""
        digest = payload.sha256 if payload is not None else _EMPTY_SHA256
        signed = self._signer.header_lines(
            method, path, digest, creds, canonical_path=canonical_path
        )
        length = f"Content-Length: {len(body)}\r\n" if method == "POST" or body else ""
        head = f"{method} {path}{self._head_common}{signed}{length}\r\n".encode("latin-1")
        try:
            return await self._get_pool().request(method, head, body, timeout or self.timeout)
        except TimeoutError as exc:
            raise TransportError(
                f"Management API call timed out ({method})", sent=isinstance(exc, _Sent)
            ) from exc
        except ssl.SSLCertVerificationError as exc:
            raise ConfigurationError(
                f"TLS certificate verification failed for {self.hostname}: {exc}"
            ) from exc
        except (OSError, EOFError, ValueError, asyncio.LimitOverrunError) as exc:
            raise TransportError(
                f"network error ({method}): {exc!r}", sent=isinstance(exc, _Sent)
            ) from exc

    @staticmethod
    def _raise_for(resp: _Response, connection_id: str) -> None:
        status = resp.status
        if status < 300:
            return
        if status == 410:
            raise GoneError(connection_id)
        if status == 429:
            after = resp.header("retry-after") or ""
            retry_after = float(after) if after.replace(".", "", 1).isdigit() else None
            raise ThrottledError(retry_after=retry_after)
        if status == 413:
            raise PayloadTooLarge("the Management API refused the payload as too large")
        kind = (resp.header("x-amzn-errortype") or "").split(":")[0]
        raise TransportError(f"Management API answered {status} {kind}".strip(), status=status)

    async def apost(
        self, connection_id: str, payload: Payload, *, timeout: float | None = None
    ) -> None:
        """``POST @connections/{id}`` with ``payload``."""
        resp = await self.arequest("POST", connection_id, payload, timeout=timeout)
        self._raise_for(resp, connection_id)

    async def adelete(self, connection_id: str) -> None:
        """``DELETE @connections/{id}``."""
        self._raise_for(await self.arequest("DELETE", connection_id), connection_id)

    async def aget(self, connection_id: str) -> dict[str, Any]:
        """``GET @connections/{id}``."""
        resp = await self.arequest("GET", connection_id)
        self._raise_for(resp, connection_id)
        try:
            result: dict[str, Any] = json.loads(resp.body or b"{}")
        except ValueError as exc:
            raise TransportError("Management API answered GET with invalid JSON") from exc
        return result

    def delete(self, connection_id: str) -> None:
        """Close the connection (``DELETE @connections/{id}``; 410 if already gone)."""
        self.refresh()
        self.run(self.adelete(connection_id))

    def get(self, connection_id: str) -> dict[str, Any]:
        """Connection info (``GET @connections/{id}``) as the wire JSON."""
        self.refresh()
        return self.run(self.aget(connection_id))

    @property
    def connections_opened(self) -> int:
        """How many TCP connections this transport has opened (for tests and metrics)."""
        return self._pool.opened if self._pool is not None else 0
