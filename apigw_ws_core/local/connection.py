"""Per-connection state and the per-call description of an integration invocation.

A :class:`Connection` lives from the moment a client starts the handshake
(state ``CONNECTING``, while ``$connect`` runs) until it is closed. An
:class:`Invocation` describes one integration call (``$connect``, a message,
or ``$disconnect``) and yields the context variables API Gateway exposes for
it (``context.connectionId``, ``context.identity.sourceIp``, ...).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web

from .ids import new_request_id

__all__ = [
    "Connection",
    "ConnectionState",
    "EventType",
    "Invocation",
    "clf_time",
    "iso_ms",
]

ConnectionState = Literal["CONNECTING", "OPEN", "CLOSING", "CLOSED"]
EventType = Literal["CONNECT", "MESSAGE", "DISCONNECT"]

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def iso_ms(epoch_ms: int) -> str:
    """Format epoch milliseconds as ISO 8601 with milliseconds and ``Z`` (AWS style)."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


def clf_time(epoch_ms: int) -> str:
    """Format epoch milliseconds like ``context.requestTime``: ``20/Jan/2024:11:55:00 +0000``."""
    t = time.gmtime(epoch_ms / 1000)
    return (
        f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    )


def now_ms() -> int:
    """Return the wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


class Connection:
    """One client connection as the gateway tracks it.

    Slots keep the per-connection footprint small (the gateway is expected to
    hold tens of thousands of idle connections).
    """

    __slots__ = (
        "authorizer",
        "close_code",
        "close_reason",
        "closer",
        "connected_at_ms",
        "connected_mono",
        "disconnected",
        "domain_name",
        "forwarded_port",
        "forwarded_proto",
        "headers",
        "id",
        "inflight",
        "last_active_mono",
        "last_active_ms",
        "messages",
        "messages_in",
        "messages_out",
        "query",
        "raw_query",
        "source_ip",
        "state",
        "subprotocol",
        "transport",
        "user_agent",
        "ws",
    )

    def __init__(
        self,
        connection_id: str,
        *,
        source_ip: str,
        user_agent: str,
        domain_name: str,
        headers: Sequence[tuple[str, str]],
        query: Sequence[tuple[str, str]],
        raw_query: str,
        forwarded_port: str,
        forwarded_proto: str,
    ) -> None:
        """Create a connection record in state ``CONNECTING``."""
        self.id = connection_id
        self.state: ConnectionState = "CONNECTING"
        self.connected_at_ms = now_ms()
        self.connected_mono = time.monotonic()
        self.last_active_ms = self.connected_at_ms
        self.last_active_mono = self.connected_mono
        self.source_ip = source_ip
        self.user_agent = user_agent
        self.domain_name = domain_name
        self.headers = headers
        self.query = query
        self.raw_query = raw_query
        self.forwarded_port = forwarded_port
        self.forwarded_proto = forwarded_proto
        self.subprotocol: str | None = None
        #: What the ``$connect`` authorizer returned: ``principalId`` plus its context.
        self.authorizer: dict[str, Any] | None = None
        self.ws: web.WebSocketResponse | None = None
        self.transport: asyncio.Transport | None = None
        #: Close code/reason when the gateway (not the client) closes the connection.
        self.close_code: int | None = None
        self.close_reason = ""
        #: The task running a gateway-initiated close, awaited before ``$disconnect``.
        self.closer: asyncio.Task[Any] | None = None
        self.disconnected = False
        self.messages: deque[dict[str, Any]] | None = None
        self.inflight: asyncio.Semaphore | None = None
        self.messages_in = 0
        self.messages_out = 0

    def touch(self) -> None:
        """Record activity (a data frame in either direction)."""
        self.last_active_mono = time.monotonic()
        self.last_active_ms = now_ms()

    def log_message(self, data: str, source: str, limit: int) -> None:
        """Remember a message delivered to the client (bounded by ``limit``)."""
        self.messages_out += 1
        if limit <= 0:
            return
        if self.messages is None:
            self.messages = deque(maxlen=limit)
        self.messages.append({"at": iso_ms(now_ms()), "source": source, "data": data})

    def write_buffer_size(self) -> int:
        """Bytes queued in the transport towards the client."""
        transport = self.transport
        return 0 if transport is None else transport.get_write_buffer_size()

    def summary(self) -> dict[str, Any]:
        """Return a JSON-able description for the ``/_local/`` endpoints."""
        return {
            "connectionId": self.id,
            "state": self.state,
            "connectedAt": iso_ms(self.connected_at_ms),
            "lastActiveAt": iso_ms(self.last_active_ms),
            "sourceIp": self.source_ip,
            "userAgent": self.user_agent,
            "query": [list(pair) for pair in self.query],
            "subprotocol": self.subprotocol,
            "messagesReceived": self.messages_in,
            "messagesDelivered": self.messages_out,
            "closeCode": self.close_code,
            "closeReason": self.close_reason or None,
        }


class Invocation:
    """One integration call: what happened, on which connection, with which ids."""

    __slots__ = (
        "body",
        "connection",
        "disconnect_reason",
        "disconnect_status_code",
        "event_type",
        "message_id",
        "request_id",
        "request_time_ms",
        "route_key",
    )

    def __init__(
        self,
        event_type: EventType,
        route_key: str,
        connection: Connection,
        *,
        body: str | None = None,
        disconnect_status_code: int | None = None,
        disconnect_reason: str | None = None,
    ) -> None:
        """Describe a call; request id, message id and time are generated here."""
        self.event_type: EventType = event_type
        self.route_key = route_key
        self.connection = connection
        self.body = body
        self.request_id = new_request_id()
        self.message_id = new_request_id() if event_type == "MESSAGE" else None
        self.request_time_ms = now_ms()
        self.disconnect_status_code = disconnect_status_code
        self.disconnect_reason = disconnect_reason

    def context(self, api_id: str, stage: str) -> dict[str, Any]:
        """Return the context variables, flattened with dotted keys (``identity.sourceIp``).

        Variables that do not apply to this event (``messageId`` outside
        messages, the disconnect status outside ``$disconnect``) are absent.
        """
        conn = self.connection
        context: dict[str, Any] = {
            "apiId": api_id,
            "connectedAt": conn.connected_at_ms,
            "connectionId": conn.id,
            "domainName": conn.domain_name,
            "eventType": self.event_type,
            "extendedRequestId": self.request_id,
            "requestId": self.request_id,
            "requestTime": clf_time(self.request_time_ms),
            "requestTimeEpoch": self.request_time_ms,
            "routeKey": self.route_key,
            "stage": stage,
            "messageDirection": "IN",
            "identity.sourceIp": conn.source_ip,
        }
        if conn.user_agent:
            context["identity.userAgent"] = conn.user_agent
        if self.message_id is not None:
            context["messageId"] = self.message_id
        if self.event_type == "DISCONNECT":
            context["disconnectStatusCode"] = self.disconnect_status_code
            context["disconnectReason"] = self.disconnect_reason or ""
        for key, value in (conn.authorizer or {}).items():
            context[f"authorizer.{key}"] = value
        return context

    def request_context(self, api_id: str, stage: str) -> dict[str, Any]:
        """Return the Lambda ``requestContext`` for this call (facts §1.3 shapes)."""
        conn = self.connection
        identity = {"sourceIp": conn.source_ip}
        if conn.user_agent:
            # AWS leaves userAgent out when the client sent no User-Agent.
            identity["userAgent"] = conn.user_agent
        ctx: dict[str, Any] = {"routeKey": self.route_key}
        if self.event_type == "MESSAGE":
            ctx["messageId"] = self.message_id
        elif self.event_type == "DISCONNECT":
            ctx["disconnectStatusCode"] = self.disconnect_status_code
        if conn.authorizer is not None:
            ctx["authorizer"] = dict(conn.authorizer)
        ctx.update(
            {
                "eventType": self.event_type,
                "extendedRequestId": self.request_id,
                "requestTime": clf_time(self.request_time_ms),
                "messageDirection": "IN",
            }
        )
        if self.event_type == "DISCONNECT":
            ctx["disconnectReason"] = self.disconnect_reason or ""
        ctx.update(
            {
                "stage": stage,
                "connectedAt": conn.connected_at_ms,
                "requestTimeEpoch": self.request_time_ms,
                "identity": identity,
                "requestId": self.request_id,
                "domainName": conn.domain_name,
                "connectionId": conn.id,
                "apiId": api_id,
            }
        )
        return ctx
