"""A plain WSGI application over :meth:`WebSocketApp.handle`, for any WSGI server.

Mount it where API Gateway's integrations point: ``POST {prefix}/connect``,
``/disconnect``, ``/default`` and ``/<custom route>``. Only translation happens here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from apigw_ws_core.app import Reply, WebSocketApp
from apigw_ws_core.errors import BadRequest, BodyTooLarge, RequestError
from apigw_ws_core.events import from_http

__all__ = ["make_wsgi_app", "read_body", "read_bounded", "route_from_path"]

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class MethodNotAllowed(RequestError):
    """Integrations always POST."""

    status = 405
    code = "method_not_allowed"
    default_message = "Use POST."


class NotFound(RequestError):
    """No such route under the prefix."""

    status = 404
    code = "not_found"
    default_message = "No such route."


def route_from_path(path: str, prefix: str) -> str:
    """The route slug of ``path`` under ``prefix`` (``/ws/connect`` → ``connect``)."""
    prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
    if prefix and not (path == prefix or path.startswith(prefix + "/")):
        raise NotFound()
    slug = path[len(prefix) :].strip("/")
    if not slug or "/" in slug:
        raise NotFound()
    return slug


def read_bounded(read: Callable[[int], bytes], limit: int) -> bytes:
    """Read a body of unknown length through ``read(n)`` until EOF, but never more than
    ``limit + 1`` bytes: a longer body is refused with 413 without being held in memory."""
    data = bytearray()
    while len(data) <= limit:
        chunk = read(limit + 1 - len(data))
        if not chunk:
            break
        data += chunk
    if len(data) > limit:
        raise BodyTooLarge()
    return bytes(data)


def read_body(environ: dict[str, Any], limit: int) -> bytes:
    """Read at most ``limit`` bytes of the request body; refuse more with 413.

    API Gateway always sends ``Content-Length``. A chunked body is read (bounded) only when
    the server says the input ends (``wsgi.input_terminated``); otherwise it is a 400, since
    reading on would block or lose data.
    """
    raw_length = environ.get("CONTENT_LENGTH")
    if not raw_length:
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            if environ.get("wsgi.input_terminated"):
                return read_bounded(environ["wsgi.input"].read, limit)
            raise BadRequest("Content-Length is required.")
        return b""
    try:
        length = int(raw_length)
    except ValueError as exc:
        raise BadRequest("Bad Content-Length.") from exc
    if length > limit:
        raise BodyTooLarge()
    if length <= 0:
        return b""
    data: bytes = environ["wsgi.input"].read(length)
    return data


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    out = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
    if environ.get("CONTENT_TYPE"):
        out["content-type"] = environ["CONTENT_TYPE"]
    return out


def make_wsgi_app(app: WebSocketApp, prefix: str = "") -> WSGIApp:
    """A WSGI callable serving API Gateway's HTTP_PROXY integration calls for ``app``."""

    def wsgi(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        headers = _headers(environ)
        try:
            if environ.get("REQUEST_METHOD") != "POST":
                raise MethodNotAllowed()
            route = route_from_path(environ.get("PATH_INFO", ""), prefix)
            body = read_body(environ, app.config.max_body_bytes)
            event = from_http(
                route,
                headers,
                environ.get("QUERY_STRING", ""),
                body,
                max_body=app.config.max_body_bytes,
            )
        except RequestError as error:
            reply = app.reject(error, headers)
        else:
            reply = app.handle(event)
        return _respond(reply, start_response)

    return wsgi


def _respond(reply: Reply, start_response: StartResponse) -> Iterable[bytes]:
    phrase = (
        HTTPStatus(reply.status).phrase if reply.status in HTTPStatus._value2member_map_ else ""
    )
    headers = [*reply.headers, ("Content-Length", str(len(reply.body)))]
    start_response(f"{reply.status} {phrase}".strip(), headers)
    return [reply.body]
