"""The local API Gateway: one aiohttp application on one port.

It serves, like an API Gateway WebSocket API stage:

* the WebSocket endpoint, ``GET /{stage}`` (and ``GET /``, like a custom
  domain mapped at the root), calling the ``$connect``, message and
  ``$disconnect`` integrations;
* the management API, ``POST|GET|DELETE /{stage}/@connections/{id}`` and the
  bare ``/@connections/{id}``, answering boto3's ``apigatewaymanagementapi``
  client exactly as AWS does;
* local-only inspection endpoints and test hooks under ``/_local/`` (not an
  AWS feature; disable with ``GatewayOptions(local_endpoints=False)``).

Use :class:`Gateway` directly with your own aiohttp runner, or through
:func:`start_gateway`, the CLI, or :mod:`apigw_ws_core.local.testing`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import ssl
import time
from collections import deque
from collections.abc import Coroutine
from typing import Any

import attrs
from aiohttp import WSMsgType, web
from aiohttp.http_websocket import WebSocketError

from .config import CONNECT, DEFAULT, DISCONNECT, ApiConfig, GatewayOptions
from .connection import Connection, Invocation, iso_ms
from .frames import LimitedWebSocketResponse
from .ids import is_valid_connection_id, new_connection_id, new_request_id
from .integrations import IntegrationResult, IntegrationRunner
from .mapping import select_route_key
from .sigv4 import verify_sigv4
from .throttle import TokenBucket

__all__ = ["Gateway", "start_gateway"]

logger = logging.getLogger("apigw_ws_core.local")

_SIGV4 = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=[^/\s,]+/\d{8}/[^/\s,]+/execute-api/aws4_request\s*,"
    r"\s*SignedHeaders=[A-Za-z0-9;\-]+\s*,\s*Signature=[0-9a-f]{64}\s*"
)
_GOING_AWAY = "Going away"
_CLOSED_NORMALLY = "Connection Closed Normally"
_RESERVED_CLOSE_CODES = frozenset({1004, 1005, 1006, 1015})
#: What AWS reports for a client close frame without a status code.
_NO_STATUS = (1005, "Client-side close frame status not set")
_AUTHORIZER_MESSAGES = {401: "Unauthorized", 403: "Forbidden", 500: "Internal server error"}


def _rss_bytes() -> int | None:
    """Resident set size of this process from ``/proc/self/statm`` (Linux), else ``None``."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            resident_pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def _aws_error(status: int, error_type: str, message: str) -> web.Response:
    """An error response shaped like AWS's: ``x-amzn-ErrorType`` header, JSON ``message``."""
    return web.json_response(
        {"message": message},
        status=status,
        headers={"x-amzn-ErrorType": error_type, "x-amzn-RequestId": new_request_id()},
    )


def _gone(connection_id: str) -> web.Response:
    """410 for an id that is unknown, closed, closing or still in ``$connect``."""
    return _aws_error(
        410,
        "GoneException",
        f"Connection {connection_id} is gone (unknown, closed, or its $connect is still running)",
    )


class Gateway:
    """An API Gateway WebSocket API stage, running locally.

    :param api: the API definition (routes, integrations, stage).
    :param options: local behaviour (timeouts, limits, throttling, test hooks).

    All methods must be called on the event loop the application runs on.
    """

    def __init__(
        self,
        api: ApiConfig,
        options: GatewayOptions | None = None,
        *,
        ca_bundle: str | None = None,
    ) -> None:
        """Prepare the gateway; :meth:`make_app` builds the aiohttp application.

        :param ca_bundle: with TLS, the CA bundle in-process Lambda handlers get as
            ``AWS_CA_BUNDLE`` when the environment has none.
        """
        self.api = api
        self.options = options or GatewayOptions()
        #: Connections being set up or open, by id.
        self.connections: dict[str, Connection] = {}
        #: Summaries of recently closed connections (newest last).
        self.closed: deque[dict[str, Any]] = deque(maxlen=self.options.closed_history_size)
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "connects_attempted",
                "connects_accepted",
                "connects_rejected",
                "disconnects",
                "messages_received",
                "messages_delivered",
                "management_requests",
                "management_posts",
                "management_gets",
                "management_deletes",
                "management_throttled",
                "management_gone",
                "management_injected_429",
                "management_injected_5xx",
                "management_injected_hang",
                "disconnects_dropped",
            ),
            0,
        )
        #: Answer every N-th ``POST @connections`` with 429 (0: off); see
        #: :attr:`GatewayOptions.inject_429_every`. Tests may change it at run time.
        self.inject_429_every = self.options.inject_429_every
        #: Faults after delivery and lost ``$disconnect`` calls (see :class:`GatewayOptions`);
        #: changeable at run time, also through ``POST /_local/faults``.
        self.inject_5xx_every = self.options.inject_5xx_every
        self.inject_hang_every = self.options.inject_hang_every
        self.drop_disconnect_every = self.options.drop_disconnect_every
        self._delivered_posts = 0
        self._disconnects_seen = 0
        self._release_hangs: asyncio.Event | None = None
        self.runner = IntegrationRunner(api, self.options)
        self.runner.ca_bundle = ca_bundle
        self._bucket = (
            TokenBucket(self.options.throttle_rps, self.options.throttle_burst)
            if self.options.throttle_rps
            else None
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self._posts_seen = 0
        self._sweeper: asyncio.Task[None] | None = None
        self._started = time.monotonic()
        self._shutting_down = False

    # ------------------------------------------------------------------ app wiring

    def make_app(self) -> web.Application:
        """Build the aiohttp application serving all endpoints of this gateway."""
        app = web.Application()
        if self.options.local_endpoints:
            app.router.add_get("/_local/connections", self._local_connections)
            app.router.add_get("/_local/connections/{connection_id}", self._local_connection)
            app.router.add_get("/_local/connections/{connection_id}/messages", self._local_messages)
            app.router.add_post("/_local/connections/{connection_id}/close", self._local_close)
            app.router.add_get("/_local/stats", self._local_stats)
            app.router.add_get("/_local/config", self._local_config)
            app.router.add_get("/_local/faults", self._local_faults)
            app.router.add_post("/_local/faults", self._local_faults)
        app.router.add_route("*", "/@connections/{connection_id}", self._management)
        app.router.add_route("*", "/{stage}/@connections/{connection_id}", self._management)
        app.router.add_route("*", "/@connections{tail:.*}", self._management_malformed)
        app.router.add_route("*", "/{stage}/@connections{tail:.*}", self._management_malformed)
        app.router.add_get("/", self._websocket)
        app.router.add_get("/{stage}", self._websocket)
        app.router.add_get("/{stage}/", self._websocket)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        """Open the integration client and start the timeout sweeper."""
        await self.runner.start()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _on_shutdown(self, app: web.Application) -> None:
        """Close every connection (1001) and deliver the ``$disconnect`` calls."""
        await self.shutdown()

    async def _on_cleanup(self, app: web.Application) -> None:
        """Release the integration client."""
        await self.shutdown()
        await self.runner.close()

    async def shutdown(self) -> None:
        """Close all connections with 1001 and wait (bounded) for their ``$disconnect`` calls."""
        if self._shutting_down:
            return
        self._shutting_down = True
        if self._release_hangs is not None:
            self._release_hangs.set()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self.connections.values()):
            self.close_connection(conn, 1001, _GOING_AWAY)
        deadline = time.monotonic() + self.options.shutdown_timeout
        # Handlers notice the close, finish their connections and spawn $disconnect.
        while time.monotonic() < deadline and any(
            c.state != "CONNECTING" for c in self.connections.values()
        ):
            await asyncio.sleep(0.01)
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=max(0.0, deadline - time.monotonic()))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` in the background, keeping a reference until it finishes."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        """Forget a finished background task and log its failure, if any."""
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("background task failed", exc_info=task.exception())

    # ------------------------------------------------------------------ lifecycle

    async def _sweep(self) -> None:
        """Close connections past the idle timeout or the maximum duration (1001)."""
        opts = self.options
        interval = min(1.0, max(0.01, min(opts.idle_timeout, opts.max_duration) / 10))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for conn in list(self.connections.values()):
                if conn.state != "OPEN":
                    continue
                if (
                    now - conn.connected_mono >= opts.max_duration
                    or now - conn.last_active_mono >= opts.idle_timeout
                ):
                    self.close_connection(conn, 1001, _GOING_AWAY)

    def close_connection(
        self, conn: Connection, code: int, reason: str = "", *, abort: bool = False
    ) -> bool:
        """Start a gateway-initiated close of an open connection.

        :param code: the close code sent to the client and reported to ``$disconnect``.
        :param abort: drop the TCP connection without a close frame (code 1006).
        :returns: whether the connection was open.
        """
        ws = conn.ws
        if conn.state != "OPEN" or ws is None:
            return False
        conn.state = "CLOSING"
        if abort:
            conn.close_code, conn.close_reason = 1006, reason
            transport = conn.transport
            if transport is not None:
                transport.abort()
            return True
        conn.close_code, conn.close_reason = code, reason
        conn.closer = self._spawn(self._close_ws(conn, ws, code, reason))
        return True

    async def _close_ws(
        self, conn: Connection, ws: web.WebSocketResponse, code: int, reason: str
    ) -> None:
        """Send the close frame and wait (bounded) for the client's reply."""
        try:
            await asyncio.wait_for(
                ws.close(code=code, message=reason.encode("utf-8")[:123]),
                self.options.close_timeout,
            )
        except (TimeoutError, ConnectionError, RuntimeError):
            transport = conn.transport
            if transport is not None:
                transport.abort()

    def _finish(self, conn: Connection, code: int, reason: str, *, owes_disconnect: bool) -> None:
        """Forget a connection and (once) schedule its ``$disconnect`` call."""
        if conn.disconnected:
            return
        conn.disconnected = True
        conn.state = "CLOSED"
        if self.connections.get(conn.id) is conn:
            del self.connections[conn.id]
        if not owes_disconnect:
            return
        self.counters["disconnects"] += 1
        summary = conn.summary()
        summary["closeCode"], summary["closeReason"] = code, reason
        summary["closedAt"] = iso_ms(time.time_ns() // 1_000_000)
        summary["messages"] = list(conn.messages or ())
        self.closed.append(summary)
        self._spawn(self._disconnect(conn, code, reason))

    async def _disconnect(self, conn: Connection, code: int, reason: str) -> None:
        """Wait for the close handshake, then call the ``$disconnect`` integration."""
        closer = conn.closer
        if closer is not None and not closer.done():
            await asyncio.wait({closer}, timeout=self.options.close_timeout + 1)
        conn.ws = None
        conn.transport = None
        route = self.api.routes.get(DISCONNECT)
        if route is None:
            return
        if self.drop_disconnect_every:
            self._disconnects_seen += 1
            if self._disconnects_seen % self.drop_disconnect_every == 0:
                self.counters["disconnects_dropped"] += 1
                return
        inv = Invocation(
            "DISCONNECT",
            DISCONNECT,
            conn,
            disconnect_status_code=code,
            disconnect_reason=reason,
        )
        result = await self.runner.invoke(route, inv)
        if result.error is not None:
            logger.warning("$disconnect for %s failed: %s", conn.id, result.error)

    # ------------------------------------------------------------------ WebSocket endpoint

    def _new_connection(self, request: web.Request) -> Connection:
        """Create the record of a connection being set up from its handshake request."""
        while True:
            cid = new_connection_id(special_chars=self.options.special_char_ids)
            if cid not in self.connections:
                break
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        port = str(sockname[1]) if sockname else ""
        conn = Connection(
            cid,
            source_ip=request.remote or "",
            user_agent=request.headers.get("User-Agent", ""),
            domain_name=request.host,
            headers=list(request.headers.items()),
            query=list(request.query.items()),
            raw_query=request.rel_url.raw_query_string,
            forwarded_port=port,
            forwarded_proto=request.scheme,
        )
        self.connections[cid] = conn
        return conn

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        """Handle a WebSocket handshake, then the connection until it closes."""
        stage = request.match_info.get("stage")
        if stage is not None and stage != self.api.stage:
            return web.json_response({"message": "Forbidden"}, status=403)
        # offered protocols passed in: aiohttp would otherwise warn that none overlap
        offered = request.headers.get("Sec-WebSocket-Protocol", "")
        probe = web.WebSocketResponse(protocols=[p.strip() for p in offered.split(",") if p])
        if not probe.can_prepare(request).ok:
            return web.json_response({"message": "Upgrade Required"}, status=426)
        if self._shutting_down:
            return web.json_response({"message": "Service Unavailable"}, status=503)
        self.counters["connects_attempted"] += 1
        conn = self._new_connection(request)
        owes_disconnect = False
        client_code: int | None = None
        client_reason = ""
        try:
            route = self.api.routes.get(CONNECT)
            subprotocol: str | None = None
            if route is not None:
                inv = Invocation("CONNECT", CONNECT, conn)
                if route.authorizer is not None:
                    decision = await self.runner.authorize(route.authorizer, inv)
                    if decision.status is not None:
                        logger.info(
                            "authorizer rejected %s with %d: %s",
                            conn.id,
                            decision.status,
                            decision.reason,
                        )
                        self.counters["connects_rejected"] += 1
                        return web.json_response(
                            {"message": _AUTHORIZER_MESSAGES[decision.status]},
                            status=decision.status,
                        )
                    conn.authorizer = decision.context
                result = await self.runner.invoke(route, inv)
                rejection = self._connect_rejection(result)
                if rejection is None and self._shutting_down:
                    # The backend accepted, but we are going away: it is owed a $disconnect.
                    owes_disconnect = True
                    conn.close_code, conn.close_reason = 1001, _GOING_AWAY
                    rejection = web.json_response({"message": "Service Unavailable"}, status=503)
                if rejection is not None:
                    self.counters["connects_rejected"] += 1
                    return rejection
                subprotocol = result.headers.get("Sec-WebSocket-Protocol")
            owes_disconnect = True
            opts = self.options
            ws = LimitedWebSocketResponse(
                max_frame_size=opts.max_frame_size,
                # aiohttp rejects messages of max_msg_size bytes or more.
                max_msg_size=opts.max_message_size + 1,
                protocols=(subprotocol,) if subprotocol else (),
                compress=False,
                autoping=True,
                autoclose=True,
                timeout=opts.close_timeout,
                # Never block a sender on a slow client; the management API
                # answers 429 past write_buffer_high_water instead.
                writer_limit=2**62,
            )
            try:
                await ws.prepare(request)
            except (ConnectionError, RuntimeError) as exc:
                logger.info("client %s left during the handshake: %r", conn.id, exc)
                client_code = 1006
                return ws
            conn.ws = ws
            conn.transport = request.transport
            conn.subprotocol = ws.ws_protocol
            conn.state = "OPEN"
            conn.touch()
            self.counters["connects_accepted"] += 1
            client_code, client_reason = await self._read_loop(conn, ws)
            return ws
        finally:
            if conn.close_code is not None:
                code, reason = conn.close_code, conn.close_reason
            elif client_code is not None:
                code, reason = client_code, client_reason
            else:
                code, reason = 1006, ""
            self._finish(conn, code, reason, owes_disconnect=owes_disconnect)

    @staticmethod
    def _connect_rejection(result: IntegrationResult) -> web.Response | None:
        """Map a ``$connect`` outcome to the handshake response (``None``: accept).

        Non-2xx answers are passed to the client with their status and body;
        a timeout gives 504, an unreachable backend 502, anything else 500.
        """
        if result.error == "timeout":
            return web.json_response({"message": "Endpoint request timed out"}, status=504)
        if result.error == "unreachable":
            return web.json_response({"message": "Bad Gateway"}, status=502)
        if result.error is not None:
            return web.json_response({"message": "Internal server error"}, status=500)
        if 200 <= result.status < 300:
            return None
        content_type = result.headers.get("Content-Type") or "text/plain"
        return web.Response(
            status=result.status,
            body=result.body,
            headers={"Content-Type": content_type} if result.body else None,
        )

    async def _read_loop(
        self, conn: Connection, ws: web.WebSocketResponse
    ) -> tuple[int | None, str]:
        """Read client frames until the connection ends; return the client's close code/reason."""
        while True:
            msg = await ws.receive()
            kind = msg.type
            if kind is WSMsgType.TEXT:
                conn.touch()
                conn.messages_in += 1
                self.counters["messages_received"] += 1
                await self._dispatch(conn, msg.data)
            elif kind is WSMsgType.BINARY:
                if conn.state == "OPEN":
                    conn.state = "CLOSING"
                    conn.close_code = 1003
                    conn.close_reason = "Binary frames are not supported"
                    await self._close_ws(conn, ws, 1003, conn.close_reason)
                return None, ""
            elif kind is WSMsgType.CLOSE:
                code = int(msg.data)
                if code == 0:  # an empty close frame (a browser's plain ws.close())
                    return _NO_STATUS
                return code, str(msg.extra or "")
            elif kind is WSMsgType.ERROR:
                exc = msg.data
                if isinstance(exc, WebSocketError):
                    reason = "Message too big" if exc.code == 1009 else ""
                    return int(exc.code), reason
                return 1006, ""
            elif kind in (WSMsgType.CLOSING, WSMsgType.CLOSED):
                return None, ""

    async def _dispatch(self, conn: Connection, text: str) -> None:
        """Start handling a message, waiting while too many are in flight for this connection."""
        if conn.inflight is None:
            conn.inflight = asyncio.Semaphore(self.options.max_inflight_per_connection)
        await conn.inflight.acquire()
        self._spawn(self._handle_message(conn, text, conn.inflight))

    async def _handle_message(
        self, conn: Connection, text: str, inflight: asyncio.Semaphore
    ) -> None:
        """Select the route, call its integration and send the reply or error."""
        try:
            routes = self.api.routes
            key = select_route_key(self.api.route_selection_expression, text)
            route = routes.get(key) if key not in ("", CONNECT, DISCONNECT) else None
            if route is None:
                route = routes.get(DEFAULT)
            if route is None:
                await self._deliver(
                    conn,
                    json.dumps(
                        {
                            "message": "Forbidden",
                            "connectionId": conn.id,
                            "requestId": new_request_id(),
                        }
                    ),
                    "error",
                )
                return
            inv = Invocation("MESSAGE", route.key, conn, body=text)
            result = await self.runner.invoke(route, inv)
            if result.error is not None:
                error = {
                    "message": "Internal server error",
                    "connectionId": conn.id,
                    "requestId": inv.request_id,
                }
                await self._deliver(conn, json.dumps(error), "error")
            elif route.two_way and result.body:
                await self._deliver(conn, result.body.decode("utf-8", "replace"), "reply")
        finally:
            inflight.release()

    async def _deliver(self, conn: Connection, data: str | bytes, source: str) -> bool:
        """Send a text frame to an open connection; return whether it was sent."""
        ws = conn.ws
        if ws is None or conn.state != "OPEN" or ws.closed:
            return False
        try:
            if isinstance(data, bytes):
                await ws.send_frame(data, WSMsgType.TEXT)
                text = data.decode("utf-8", "replace")
            else:
                await ws.send_str(data)
                text = data
        except (ConnectionError, RuntimeError):
            return False
        conn.touch()
        conn.log_message(text, source, self.options.message_log_size)
        self.counters["messages_delivered"] += 1
        return True

    # ------------------------------------------------------------------ management API

    async def _check_caller(self, request: web.Request) -> tuple[web.Response | None, bytes | None]:
        """Apply stage, SigV4 and throttle checks.

        :returns: an error response or ``None``, and the request body when
            strict SigV4 checking had to read it (``None`` otherwise).
        """
        stage = request.match_info.get("stage")
        if stage is not None and stage != self.api.stage:
            return _aws_error(403, "ForbiddenException", "Forbidden"), None
        body: bytes | None = None
        if self.options.require_sigv4:
            auth = request.headers.get("Authorization")
            if not auth:
                return _aws_error(403, "ForbiddenException", "Missing Authentication Token"), None
            if not _SIGV4.fullmatch(auth):
                return _aws_error(
                    403,
                    "ForbiddenException",
                    "Authorization header is not a well-formed AWS4-HMAC-SHA256 "
                    "signature for execute-api",
                ), None
            if self.options.sigv4_keys:
                body = await self._read_limited(request)
                if body is None:
                    return self._too_large(), None
                problem = verify_sigv4(
                    method=request.method,
                    raw_path=request.raw_path,
                    headers=request.headers.items(),
                    body=body,
                    keys=self.options.sigv4_keys,
                )
                if problem is not None:
                    return _aws_error(403, "ForbiddenException", problem), None
        if self._bucket is not None and not self._bucket.try_acquire():
            self.counters["management_throttled"] += 1
            return _aws_error(429, "LimitExceededException", "Too Many Requests"), None
        if self.inject_429_every and request.method == "POST":
            self._posts_seen += 1
            if self._posts_seen % self.inject_429_every == 0:
                self.counters["management_injected_429"] += 1
                return _aws_error(429, "LimitExceededException", "Too Many Requests"), None
        if request.method not in ("POST", "GET", "DELETE"):
            return _aws_error(403, "ForbiddenException", "Missing Authentication Token"), None
        return None, body

    def _too_large(self) -> web.Response:
        """413 for a ``POST @connections`` body over ``max_post_size``."""
        return _aws_error(
            413,
            "PayloadTooLargeException",
            f"Message size exceeds the limit of {self.options.max_post_size} bytes",
        )

    async def _read_limited(self, request: web.Request) -> bytes | None:
        """Read the request body; ``None`` when it exceeds ``max_post_size``."""
        limit = self.options.max_post_size
        if request.content_length is not None and request.content_length > limit:
            return None
        data = bytearray()
        async for chunk in request.content.iter_chunked(64 * 1024):
            data += chunk
            if len(data) > limit:
                return None
        return bytes(data)

    async def _management(self, request: web.Request) -> web.StreamResponse:
        """``POST|GET|DELETE @connections/{id}``, answering like AWS.

        ``management_latency_ms`` is a round trip: half of it passes before the call is
        handled (the request on its way), half after (the answer on its way). A caller
        that goes away once its request has arrived still has it carried out, as with AWS.
        """
        self.counters["management_requests"] += 1
        half = self.options.management_latency_ms / 2000
        if half > 0:
            await asyncio.sleep(half)
        response = await asyncio.shield(self._management_call(request))
        if half > 0:
            await asyncio.sleep(half)
        return response

    async def _management_call(self, request: web.Request) -> web.StreamResponse:
        """The management call itself, once the request has arrived."""
        error, read = await self._check_caller(request)
        if error is not None:
            return error
        cid = request.match_info["connection_id"]
        if not is_valid_connection_id(cid):
            return _aws_error(400, "BadRequestException", f"Invalid connectionId: {cid}")
        body = b""
        if request.method == "POST":
            if read is None:
                read = await self._read_limited(request)
            if read is None:
                return self._too_large()
            body = read
        conn = self.connections.get(cid)
        if conn is None or conn.state != "OPEN":
            self.counters["management_gone"] += 1
            return _gone(cid)
        if request.method == "GET":
            self.counters["management_gets"] += 1
            return web.json_response(
                {
                    "connectedAt": iso_ms(conn.connected_at_ms),
                    "lastActiveAt": iso_ms(conn.last_active_ms),
                    "identity": {"sourceIp": conn.source_ip, "userAgent": conn.user_agent},
                },
                headers={"x-amzn-RequestId": new_request_id()},
            )
        if request.method == "DELETE":
            self.counters["management_deletes"] += 1
            self.close_connection(conn, 1000, _CLOSED_NORMALLY)
            return web.Response(status=204, headers={"x-amzn-RequestId": new_request_id()})
        self.counters["management_posts"] += 1
        if conn.write_buffer_size() > self.options.write_buffer_high_water:
            self.counters["management_throttled"] += 1
            return _aws_error(
                429, "LimitExceededException", "The WebSocket client side buffer is full"
            )
        if not await self._deliver(conn, body, "management"):
            self.counters["management_gone"] += 1
            return _gone(cid)
        if self.inject_5xx_every or self.inject_hang_every:
            self._delivered_posts += 1
            if self.inject_5xx_every and self._delivered_posts % self.inject_5xx_every == 0:
                self.counters["management_injected_5xx"] += 1
                return _aws_error(500, "InternalServerErrorException", "Internal server error")
            if self.inject_hang_every and self._delivered_posts % self.inject_hang_every == 0:
                self.counters["management_injected_hang"] += 1
                if self._release_hangs is None:
                    self._release_hangs = asyncio.Event()
                await self._release_hangs.wait()  # until shutdown
                return _aws_error(504, "GatewayTimeoutException", "never answered")
        return web.json_response({}, headers={"x-amzn-RequestId": new_request_id()})

    async def _management_malformed(self, request: web.Request) -> web.StreamResponse:
        """Any other ``@connections`` path: an id that is empty or contains a raw ``/``."""
        error, _ = await self._check_caller(request)
        if error is not None:
            return error
        tail = request.match_info.get("tail", "")
        return _aws_error(400, "BadRequestException", f"Invalid connectionId: {tail.lstrip('/')}")

    # ------------------------------------------------------------------ /_local/ endpoints

    def _find(self, cid: str) -> dict[str, Any] | None:
        """Return the summary (with messages) of an open or recently closed connection."""
        conn = self.connections.get(cid)
        if conn is not None:
            summary = conn.summary()
            summary["messages"] = list(conn.messages or ())
            return summary
        for summary in reversed(self.closed):
            if summary["connectionId"] == cid:
                return summary
        return None

    async def _local_connections(self, request: web.Request) -> web.Response:
        """List open (and, with ``?closed=1``, recently closed) connections."""
        payload: dict[str, Any] = {"connections": [c.summary() for c in self.connections.values()]}
        if request.query.get("closed") in ("1", "true", "yes"):
            payload["closed"] = [
                {k: v for k, v in s.items() if k != "messages"} for s in self.closed
            ]
        return web.json_response(payload)

    async def _local_connection(self, request: web.Request) -> web.Response:
        """Describe one connection, including the messages delivered to it."""
        summary = self._find(request.match_info["connection_id"])
        if summary is None:
            return web.json_response({"message": "unknown connection"}, status=404)
        return web.json_response(summary)

    async def _local_messages(self, request: web.Request) -> web.Response:
        """The messages delivered to one connection (management posts, replies, errors)."""
        summary = self._find(request.match_info["connection_id"])
        if summary is None:
            return web.json_response({"message": "unknown connection"}, status=404)
        return web.json_response({"messages": summary["messages"]})

    async def _local_close(self, request: web.Request) -> web.Response:
        """Test hook: close a connection with a chosen code, or drop it (``abort``).

        Body (JSON, optional): ``{"code": 4000, "reason": "...", "abort": false}``.
        """
        try:
            spec = await request.json() if request.can_read_body else {}
        except ValueError:
            return web.json_response({"message": "body must be JSON"}, status=400)
        if not isinstance(spec, dict):
            return web.json_response({"message": "body must be a JSON object"}, status=400)
        code = spec.get("code", 1001)
        reason = str(spec.get("reason", ""))
        abort = bool(spec.get("abort", False))
        if not abort and (
            not isinstance(code, int) or not 1000 <= code <= 4999 or code in _RESERVED_CLOSE_CODES
        ):
            return web.json_response({"message": f"invalid close code {code!r}"}, status=400)
        if len(reason.encode("utf-8")) > 123:
            return web.json_response({"message": "reason longer than 123 bytes"}, status=400)
        conn = self.connections.get(request.match_info["connection_id"])
        if conn is None or not self.close_connection(conn, int(code), reason, abort=abort):
            return web.json_response({"message": "unknown or closed connection"}, status=404)
        return web.json_response({"closing": True, "code": 1006 if abort else code})

    def stats(self) -> dict[str, Any]:
        """Counters, connection counts and memory figures."""
        states: dict[str, int] = {"CONNECTING": 0, "OPEN": 0, "CLOSING": 0}
        for conn in self.connections.values():
            states[conn.state] = states.get(conn.state, 0) + 1
        return {
            "connections": {
                "open": states["OPEN"],
                "connecting": states["CONNECTING"],
                "closing": states["CLOSING"],
            },
            "rss_bytes": _rss_bytes(),
            "cpu_s": round(time.process_time(), 3),
            "uptime_s": round(time.monotonic() - self._started, 3),
            "counters": dict(self.counters),
            "integration_calls": self.runner.calls,
            "integration_failures": self.runner.failures,
            "background_tasks": len(self._tasks),
            "pid": os.getpid(),
        }

    async def _local_stats(self, request: web.Request) -> web.Response:
        """Serve :meth:`stats`."""
        return web.json_response(self.stats())

    #: Fault settings ``/_local/faults`` reads and changes.
    FAULTS = ("inject_429_every", "inject_5xx_every", "inject_hang_every", "drop_disconnect_every")

    async def _local_faults(self, request: web.Request) -> web.Response:
        """Test hook: read (GET) or change (POST a JSON object) the fault settings,
        e.g. ``{"drop_disconnect_every": 1}``; answers the settings now in force."""
        if request.method == "POST":
            try:
                spec = await request.json()
            except ValueError:
                return web.json_response({"message": "body must be JSON"}, status=400)
            if not isinstance(spec, dict) or not all(
                key in self.FAULTS and isinstance(value, int) and value >= 0
                for key, value in spec.items()
            ):
                return web.json_response(
                    {"message": f"expected an object of {', '.join(self.FAULTS)}: int >= 0"},
                    status=400,
                )
            for key, value in spec.items():
                setattr(self, key, value)
        return web.json_response({key: getattr(self, key) for key in self.FAULTS})

    async def _local_config(self, request: web.Request) -> web.Response:
        """Serve the effective API definition and options."""
        options = attrs.asdict(self.options)
        # Never serve the secrets: key ids only.
        options["sigv4_keys"] = sorted(self.options.sigv4_keys)
        return web.json_response({"api": self.api.to_dict(), "options": options})


async def start_gateway(
    gateway: Gateway,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    access_log: bool = False,
    backlog: int = 4096,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[web.AppRunner, int]:
    """Serve ``gateway`` on ``host:port`` (0: pick a free port).

    :param ssl_context: serve TLS (``wss://``, ``https://``) with it
        (see :func:`apigw_ws_core.local.tls.make_tls`).

    :returns: the runner (call ``await runner.cleanup()`` to stop) and the bound port.
    """
    app = gateway.make_app()
    runner = web.AppRunner(
        app,
        access_log=logging.getLogger("apigw_ws_core.local.access") if access_log else None,
        handle_signals=False,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=backlog, ssl_context=ssl_context)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    return runner, int(bound)
