"""The API Gateway Management API client: :class:`ManagementApiTransport`.

It talks to ``@connections`` over pooled, kept-alive HTTP/1.1 (TLS verified against
botocore's CA bundle), signed with SigV4 (:mod:`apigw_ws_core.signer`) from botocore's
credential chain.

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

import asyncio
import hashlib
import json
import logging
import re
import ssl
import threading
import time
from typing import Any
from urllib.parse import quote, urlsplit

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
from apigw_ws_core.signer import SigV4Signer, region_from_endpoint
from apigw_ws_core.transport import AsyncTransport, Payload

__all__ = ["ManagementApiTransport"]

log = logging.getLogger("apigw_ws.transport")

_USER_AGENT = "apigw-ws"

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
    are verified against the CA bundle botocore would use (``AWS_CA_BUNDLE`` or the profile's
    ``ca_bundle``, else ``certifi``'s) unless ``verify`` is ``False`` or a CA bundle path
    (the local gateway's ``--tls`` bundle, for instance). HTTP proxies are not supported.

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
        except Exception as exc:  # pragma: no cover - a broken profile must not break construction
            log.warning("could not read the AWS region from the profile: %r", exc)
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
        cafile = self.verify if isinstance(self.verify, str) else self._configured_ca_bundle()
        return ssl.create_default_context(cafile=cafile)

    def _configured_ca_bundle(self) -> str:
        """The CA bundle botocore would use: ``AWS_CA_BUNDLE`` / the profile's ``ca_bundle``,
        else its default (``certifi``'s when installed)."""
        try:
            session = self._session or botocore.session.get_session()
            configured = session.get_config_variable("ca_bundle")
        except Exception as exc:  # pragma: no cover - a broken profile must not break sending
            log.warning("could not read ca_bundle from the AWS profile; default CA bundle: %r", exc)
            configured = None
        return str(configured) if configured else str(get_cert_path(True))

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

    async def aget(self, connection_id: str, *, timeout: float | None = None) -> dict[str, Any]:
        """``GET @connections/{id}``."""
        resp = await self.arequest("GET", connection_id, timeout=timeout)
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
