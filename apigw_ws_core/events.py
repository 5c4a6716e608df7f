"""Typed, frozen events: what API Gateway told us, whatever the entry point.

Adapters turn a Django/Flask/WSGI request (``from_http``) or an AWS Lambda WebSocket proxy
event (``from_lambda``) into one of :class:`ConnectEvent`, :class:`MessageEvent` or
:class:`DisconnectEvent`. The pipeline (:mod:`apigw_ws_core.app`) sees nothing else.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import parse_qsl

import attrs

from apigw_ws_core.errors import BadRequest, BodyTooLarge, InvalidConnectionId

__all__ = [
    "CONNECTION_ID_RE",
    "HEADER_API_ID",
    "HEADER_AUTHORIZER_PREFIX",
    "HEADER_AUTHORIZER_PRINCIPAL",
    "HEADER_CONNECTION_ID",
    "HEADER_EVENT_TYPE",
    "HEADER_LEGACY_CONNECTION_ID",
    "HEADER_REQUEST_ID",
    "HEADER_ROUTE_KEY",
    "HEADER_SECRET",
    "HEADER_SOURCE_IP",
    "HEADER_STAGE",
    "MAX_BODY_BYTES",
    "BaseEvent",
    "ConnectEvent",
    "DisconnectEvent",
    "Event",
    "MessageEvent",
    "authorizer_request_parameters",
    "clean_ip",
    "from_http",
    "from_lambda",
    "is_authorizer_event",
]

#: API Gateway's message size limit (the Management API's ``Data`` max, 128 KiB).
MAX_BODY_BYTES = 131072

#: API Gateway connection ids: base64 of random bytes (16 chars with ``=`` padding in
#: practice). We accept a little more than AWS emits, never anything that could smuggle.
CONNECTION_ID_RE = re.compile(r"\A[A-Za-z0-9+/=_-]{8,128}\Z")

HEADER_CONNECTION_ID = "x-apigw-ws-connection-id"
HEADER_LEGACY_CONNECTION_ID = "connectionid"
HEADER_ROUTE_KEY = "x-apigw-ws-route-key"
HEADER_EVENT_TYPE = "x-apigw-ws-event-type"
HEADER_REQUEST_ID = "x-apigw-ws-request-id"
HEADER_STAGE = "x-apigw-ws-stage"
HEADER_SOURCE_IP = "x-apigw-ws-source-ip"
HEADER_SECRET = "x-apigw-ws-secret"
HEADER_API_ID = "x-amzn-apigateway-api-id"
#: The wire contract's authorizer headers: the principal of a Lambda REQUEST authorizer on
#: ``$connect`` and, one header per declared key, its context (see
#: :func:`authorizer_request_parameters`).
HEADER_AUTHORIZER_PRINCIPAL = "x-apigw-ws-authorizer-principal-id"
HEADER_AUTHORIZER_PREFIX = "x-apigw-ws-authorizer-"

_CONTEXT_KEY_RE = re.compile(r"\A[A-Za-z0-9_]{1,64}\Z")


def authorizer_request_parameters(context_keys: Iterable[str] = ()) -> dict[str, str]:
    """The request parameter mappings that pass an authorizer's result to an HTTP backend.

    ``X-Apigw-Ws-Authorizer-Principal-Id`` carries ``context.authorizer.principalId``; each
    key ``k`` of ``context_keys`` gets ``X-Apigw-Ws-Authorizer-k`` from
    ``context.authorizer.k``. API Gateway evaluates them on every route of a connection whose
    ``$connect`` ran the authorizer. Provisioning and the local gateway both use this.
    """
    params = {
        "integration.request.header.X-Apigw-Ws-Authorizer-Principal-Id": (
            "context.authorizer.principalId"
        )
    }
    for key in context_keys:
        if not _CONTEXT_KEY_RE.match(key) or key.lower() == "principal-id":
            raise ValueError(f"authorizer context key {key!r}: use 1-64 of A-Z a-z 0-9 _")
        params[f"integration.request.header.X-Apigw-Ws-Authorizer-{key}"] = (
            f"context.authorizer.{key}"
        )
    return params


EventType = Literal["CONNECT", "MESSAGE", "DISCONNECT"]
Source = Literal["http", "lambda", "direct"]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _freeze_headers(headers: Mapping[str, str]) -> Mapping[str, str]:
    return {k.lower(): v for k, v in headers.items()}


#: Header and query keys whose values never appear in ``repr()`` (and so in tracebacks or
#: error reports that render local variables).
_SENSITIVE_WORDS = (
    "secret",
    "token",
    "cookie",
    "authorization",
    "api-key",
    "apikey",
    "password",
    "sec-websocket-protocol",  # may carry the connection token
)


def _redacted(mapping: Mapping[str, str]) -> str:
    """``repr`` of a header or query mapping with sensitive values replaced by ``'***'``."""
    shown = {
        k: "***" if any(w in k.lower() for w in _SENSITIVE_WORDS) else v for k, v in mapping.items()
    }
    return repr(shown)


def clean_ip(value: str) -> str:
    """``value`` as a normalised IP address, or ``""`` when it is not one.

    Keeps odd header content (long strings, control characters, ``host:port``) out of
    rate-limit keys, logs and storage columns.
    """
    try:
        addr = ipaddress.ip_address(value.strip())
    except ValueError:
        return ""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


@attrs.frozen(kw_only=True)
class BaseEvent:
    """Fields every event carries.

    ``headers`` are lower-cased. ``secret`` is the shared secret the caller presented
    (``None`` when absent). ``source`` says how the event arrived: over HTTP (must prove
    itself with the secret) or as a Lambda invocation (AWS IAM already proved it).
    """

    connection_id: str
    route_key: str = ""
    request_id: str = ""
    stage: str = ""
    api_id: str = ""
    source_ip: str = ""
    user_agent: str = ""
    headers: Mapping[str, str] = attrs.field(
        factory=dict, converter=_freeze_headers, repr=_redacted
    )
    secret: str | None = attrs.field(default=None, repr=False)
    #: What a Lambda REQUEST authorizer on ``$connect`` returned: ``principalId`` and its
    #: ``context`` (from ``requestContext.authorizer`` on Lambda; from the
    #: ``X-Apigw-Ws-Authorizer-*`` headers over HTTP, keys lower-cased). Empty without one.
    authorizer: Mapping[str, str] = attrs.field(factory=dict, repr=_redacted)
    source: Source = "http"
    received_at: datetime = attrs.field(factory=_utcnow)

    event_type: EventType = attrs.field(init=False, default="MESSAGE")


@attrs.frozen(kw_only=True)
class ConnectEvent(BaseEvent):
    """``$connect``: a client asks to open a WebSocket. ``query`` is the client's query
    string (single values; the last one wins), ``origin`` its ``Origin`` header.
    ``repeated_params`` names the query keys that appeared more than once (the pipeline
    refuses a repeated token or channel parameter)."""

    query: Mapping[str, str] = attrs.field(factory=dict, repr=_redacted)
    origin: str | None = None
    repeated_params: frozenset[str] = frozenset()
    event_type: EventType = attrs.field(init=False, default="CONNECT")


@attrs.frozen(kw_only=True)
class MessageEvent(BaseEvent):
    """A client message on ``$default`` or a custom route; ``body`` is the raw frame."""

    body: bytes = b""
    message_id: str = ""
    event_type: EventType = attrs.field(init=False, default="MESSAGE")


@attrs.frozen(kw_only=True)
class DisconnectEvent(BaseEvent):
    """``$disconnect``: best effort, may arrive late, twice, or never."""

    status_code: int | None = None
    reason: str = ""
    event_type: EventType = attrs.field(init=False, default="DISCONNECT")


Event = ConnectEvent | MessageEvent | DisconnectEvent


def _check_connection_id(value: str | None) -> str:
    if not value or not CONNECTION_ID_RE.match(value):
        raise InvalidConnectionId()
    return value


def _connection_id_header(h: Mapping[str, str]) -> str:
    """The connection id from our mapped header or the legacy ``connectionId`` one.

    On ``$connect`` API Gateway forwards the client's own headers, so a client can add
    whichever of the two the deployment does not map. Two different values mean one was
    forged: refuse rather than guess.
    """
    primary = h.get(HEADER_CONNECTION_ID)
    legacy = h.get(HEADER_LEGACY_CONNECTION_ID)
    if primary and legacy and primary != legacy:
        raise InvalidConnectionId("Conflicting connection id headers.")
    return _check_connection_id(primary or legacy)


def _check_body(body: bytes, max_body: int) -> bytes:
    if len(body) > max_body:
        raise BodyTooLarge(f"Message body exceeds {max_body} bytes.")
    return body


def from_http(
    route: str,
    headers: Mapping[str, str],
    query_string: str = "",
    body: bytes = b"",
    *,
    max_body: int = MAX_BODY_BYTES,
) -> Event:
    """Build an event from an HTTP_PROXY integration request.

    ``route`` is the last path segment we provisioned (``connect``, ``disconnect``,
    ``default`` or a custom route slug). Raises :class:`~apigw_ws_core.errors.RequestError`
    subclasses for malformed calls; never touches storage.
    """
    h = _freeze_headers(headers)
    connection_id = _connection_id_header(h)
    declared = h.get(HEADER_EVENT_TYPE, "").upper()
    kind: EventType = (
        "CONNECT" if route == "connect" else "DISCONNECT" if route == "disconnect" else "MESSAGE"
    )
    if declared and declared != kind:
        raise BadRequest("Event type header does not match the route.")
    common: dict[str, Any] = {
        "connection_id": connection_id,
        "request_id": h.get(HEADER_REQUEST_ID, ""),
        "stage": h.get(HEADER_STAGE, ""),
        "api_id": h.get(HEADER_API_ID, ""),
        "source_ip": clean_ip(
            h.get(HEADER_SOURCE_IP) or _first_forwarded(h.get("x-forwarded-for", ""))
        ),
        "user_agent": h.get("user-agent", ""),
        "headers": {k: v for k, v in h.items() if k != HEADER_SECRET},
        "secret": h.get(HEADER_SECRET),
        "authorizer": _authorizer_from_headers(h),
        "source": "http",
    }
    if kind == "CONNECT":
        pairs = parse_qsl(query_string, keep_blank_values=True)
        query = dict(pairs)
        return ConnectEvent(
            route_key=h.get(HEADER_ROUTE_KEY, "$connect"),
            query=query,
            repeated_params=_repeated(k for k, _ in pairs),
            origin=h.get("origin"),
            **common,
        )
    if kind == "DISCONNECT":
        return DisconnectEvent(route_key=h.get(HEADER_ROUTE_KEY, "$disconnect"), **common)
    route_key = h.get(HEADER_ROUTE_KEY) or ("$default" if route == "default" else route)
    return MessageEvent(route_key=route_key, body=_check_body(body, max_body), **common)


def _authorizer_from_headers(h: Mapping[str, str]) -> dict[str, str]:
    """The authorizer result carried by the wire contract's ``X-Apigw-Ws-Authorizer-*`` headers."""
    found: dict[str, str] = {}
    for name, value in h.items():
        if name == HEADER_AUTHORIZER_PRINCIPAL:
            found["principalId"] = value
        elif name.startswith(HEADER_AUTHORIZER_PREFIX) and value:
            found[name[len(HEADER_AUTHORIZER_PREFIX) :]] = value
    return found


def _authorizer_from_context(value: object) -> dict[str, str]:
    """``requestContext.authorizer`` of a Lambda event as strings (scalars only)."""
    if not isinstance(value, Mapping):
        return {}
    return {
        str(k): (("true" if v else "false") if isinstance(v, bool) else str(v))
        for k, v in value.items()
        if isinstance(v, str | int | float | bool)
    }


def is_authorizer_event(event: Mapping[str, Any]) -> bool:
    """Whether ``event`` is a Lambda authorizer request (``type`` + ``methodArn``).

    Such an event also carries a ``$connect`` request context; it must never be taken for a
    ``$connect`` (that would open a session before API Gateway has authorised the client).
    """
    return "methodArn" in event and str(event.get("type", "")).upper() in ("REQUEST", "TOKEN")


def _first_forwarded(value: str) -> str:
    return value.split(",")[0].strip()


def _repeated(keys: Iterable[str]) -> frozenset[str]:
    seen: set[str] = set()
    twice: set[str] = set()
    for key in keys:
        (twice if key in seen else seen).add(key)
    return frozenset(twice)


def from_lambda(event: Mapping[str, Any], *, max_body: int = MAX_BODY_BYTES) -> Event:
    """Build an event from an AWS Lambda WebSocket proxy event (CONNECT/MESSAGE/DISCONNECT).

    The invocation itself was authorised by AWS IAM, so ``source`` is ``"lambda"``.
    """
    if not isinstance(event, Mapping):
        raise BadRequest("Lambda event must be an object.")
    if is_authorizer_event(event):
        raise BadRequest(
            "This is a Lambda authorizer request (type/methodArn), not a WebSocket event; "
            "wire the authorizer to its own function."
        )
    ctx = event.get("requestContext")
    if not isinstance(ctx, Mapping):
        raise BadRequest("Lambda event has no requestContext.")
    kind = str(ctx.get("eventType", "")).upper()
    identity = ctx.get("identity") if isinstance(ctx.get("identity"), Mapping) else {}
    raw_headers = event.get("headers") if isinstance(event.get("headers"), Mapping) else {}
    headers = {str(k): str(v) for k, v in (raw_headers or {}).items() if v is not None}
    h = _freeze_headers(headers)
    common: dict[str, Any] = {
        "connection_id": _check_connection_id(_str_or_none(ctx.get("connectionId"))),
        "route_key": str(ctx.get("routeKey") or ""),
        "request_id": str(ctx.get("requestId") or ""),
        "stage": str(ctx.get("stage") or ""),
        "api_id": str(ctx.get("apiId") or ""),
        "source_ip": clean_ip(str((identity or {}).get("sourceIp") or "")),
        "user_agent": str((identity or {}).get("userAgent") or h.get("user-agent", "")),
        "headers": {k: v for k, v in h.items() if k != HEADER_SECRET},
        "secret": h.get(HEADER_SECRET),
        "authorizer": _authorizer_from_context(ctx.get("authorizer")),
        "source": "lambda",
    }
    if kind == "CONNECT":
        qs = event.get("queryStringParameters")
        query = (
            {str(k): str(v) for k, v in qs.items() if v is not None}
            if isinstance(qs, Mapping)
            else {}
        )
        multi = event.get("multiValueQueryStringParameters")
        repeated = (
            frozenset(
                str(k) for k, v in multi.items() if isinstance(v, list | tuple) and len(v) > 1
            )
            if isinstance(multi, Mapping)
            else frozenset()
        )
        return ConnectEvent(query=query, repeated_params=repeated, origin=h.get("origin"), **common)
    if kind == "DISCONNECT":
        code = ctx.get("disconnectStatusCode")
        return DisconnectEvent(
            status_code=code if isinstance(code, int) else None,
            reason=str(ctx.get("disconnectReason") or ""),
            **common,
        )
    if kind == "MESSAGE":
        raw = event.get("body")
        if raw is None:
            body = b""
        elif not isinstance(raw, str):
            raise BadRequest("Lambda event body must be a string.")
        elif event.get("isBase64Encoded"):
            try:
                body = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise BadRequest("Body is not valid base64.") from exc
        else:
            body = raw.encode("utf-8", "surrogatepass")
        return MessageEvent(
            body=_check_body(body, max_body),
            message_id=str(ctx.get("messageId") or ""),
            **common,
        )
    raise BadRequest("Unknown Lambda eventType.")


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
