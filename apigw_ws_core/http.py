"""HTTP intake: the one place where an API Gateway integration request becomes an event.

Every HTTP adapter (:mod:`apigw_ws_core.wsgi`, :mod:`apigw_ws_core.asgi`, the Django and
Flask views) translates its framework's request into an :class:`HttpRequest` and calls
:func:`handle_http`; it turns the :class:`~apigw_ws_core.reply.Reply` back into a response.
Everything else happens here, once, in this order:

1. **method** - integrations always ``POST``; anything else is ``405 method_not_allowed``;
2. **length** - a ``Content-Length`` above ``config.max_body_bytes`` is ``413`` before a
   byte is read; a malformed one is ``400``;
3. **body** - exactly ``Content-Length`` bytes are read; a body that ends early (the caller
   hung up) is ``400 incomplete_body`` and nothing runs. A chunked body (no length) is read
   at most ``limit + 1`` bytes when the server says where it ends
   (:attr:`HttpRequest.input_terminated`), else refused with ``400``;
4. **event** - :func:`~apigw_ws_core.events.from_http` builds the event;
5. **pipeline** - :meth:`WebSocketApp.handle <apigw_ws_core.app.WebSocketApp.handle>`.

Any refusal in steps 1-4 goes through :meth:`WebSocketApp.reject
<apigw_ws_core.app.WebSocketApp.reject>`, which answers ``403 forbidden`` first to a caller
without the gateway secret, whatever else was wrong ("secret-first").

Hook points for cross-cutting concerns (dependency failures, logging, tracing) are
:func:`handle_http` for HTTP and :meth:`WebSocketApp.handle` for every entry point.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import attrs

from apigw_ws_core.errors import (
    BadRequest,
    BodyTooLarge,
    IncompleteBody,
    MethodNotAllowed,
    NotFound,
    RequestError,
)
from apigw_ws_core.events import from_http

if TYPE_CHECKING:
    from apigw_ws_core.app import WebSocketApp
    from apigw_ws_core.reply import Reply

__all__ = [
    "BodyReader",
    "HttpRequest",
    "content_length",
    "handle_http",
    "lower_keys",
    "no_body",
    "read_body",
    "read_bounded",
    "read_exactly",
    "route_from_path",
]

#: ``read(n)``: up to ``n`` bytes of the request body, ``b""`` at its end.
BodyReader = Callable[[int], bytes]


def no_body(size: int) -> bytes:
    """The :data:`BodyReader` of a request without a body."""
    return b""


def lower_keys(headers: Mapping[str, str]) -> Mapping[str, str]:
    """``headers`` with lower-cased names."""
    return {k.lower(): v for k, v in headers.items()}


@attrs.frozen(kw_only=True)
class HttpRequest:
    """An integration request as an adapter sees it, before anything is checked.

    :param method: the HTTP method (``"POST"``).
    :param route: the route slug: the last path segment (``connect``, ``default``, ...);
        ``None`` when the path matched no route (answered ``404 not_found``).
    :param headers: every request header including ``Content-Length`` and
        ``Transfer-Encoding`` (names in any case; stored lower-cased).
    :param query_string: the raw query string, without ``?``.
    :param read: reads the body; see :data:`BodyReader`. Never called for more than the
        declared length, or more than ``limit + 1`` bytes of a chunked body.
    :param input_terminated: the server delivers an end of input after a chunked body
        (WSGI's ``wsgi.input_terminated``; ASGI always does).
    """

    method: str
    route: str | None
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=lower_keys)
    query_string: str = ""
    read: BodyReader = no_body
    input_terminated: bool = False


def route_from_path(path: str, prefix: str) -> str:
    """The route slug of ``path`` under ``prefix`` (``/ws/connect`` -> ``connect``);
    raises :class:`~apigw_ws_core.errors.NotFound` for anything else."""
    prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
    if prefix and not (path == prefix or path.startswith(prefix + "/")):
        raise NotFound()
    slug = path[len(prefix) :].strip("/")
    if not slug or "/" in slug:
        raise NotFound()
    return slug


def read_bounded(read: BodyReader, limit: int) -> bytes:
    """Read a body of unknown length through ``read(n)`` until EOF, but never more than
    ``limit + 1`` bytes: a longer body is refused with 413 without being held in memory."""
    data = bytearray()
    while len(data) <= limit:
        chunk = read(limit + 1 - len(data))
        if not chunk:
            break
        data += chunk
    if len(data) > limit:
        raise BodyTooLarge(f"Message body exceeds {limit} bytes.")
    return bytes(data)


def read_exactly(read: BodyReader, length: int) -> bytes:
    """Read exactly ``length`` bytes; raise :class:`~apigw_ws_core.errors.IncompleteBody`
    if the body ends before (servers return short reads when the client hangs up)."""
    data = bytearray()
    while len(data) < length:
        chunk = read(length - len(data))
        if not chunk:
            raise IncompleteBody()
        data += chunk
    return bytes(data)


def content_length(headers: Mapping[str, str]) -> int | None:
    """The declared ``Content-Length`` (``None`` when absent); 400 when malformed."""
    raw = headers.get("content-length", "").strip()
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit()):  # int() takes "+5", "5_0", non-ASCII digits
        raise BadRequest("Bad Content-Length.")
    return int(raw)


def read_body(request: HttpRequest, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes (413 beyond, before reading when the
    length is declared). See the module docstring for short and chunked bodies."""
    length = content_length(request.headers)
    if length is None:
        if "chunked" in request.headers.get("transfer-encoding", "").lower():
            if request.input_terminated:
                return read_bounded(request.read, limit)
            raise BadRequest("Content-Length is required.")
        return b""
    if length > limit:
        raise BodyTooLarge(f"Message body exceeds {limit} bytes.")
    return read_exactly(request.read, length)


def handle_http(app: WebSocketApp, request: HttpRequest) -> Reply:
    """Answer one integration request: intake checks, then the pipeline."""
    try:
        if request.method != "POST":
            raise MethodNotAllowed()
        if request.route is None:
            raise NotFound()
        limit = app.config.max_body_bytes
        body = read_body(request, limit)
        event = from_http(
            request.route, request.headers, request.query_string, body, max_body=limit
        )
    except RequestError as error:
        return app.reject(error, request.headers)
    return app.handle(event)
