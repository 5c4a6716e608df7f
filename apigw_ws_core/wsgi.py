"""A plain WSGI application over :mod:`apigw_ws_core.http`, for any WSGI server.

Mount it where API Gateway's integrations point: ``POST {prefix}/connect``,
``/disconnect``, ``/default`` and ``/<custom route>``. Only translation happens here: the
environ becomes an :class:`~apigw_ws_core.http.HttpRequest`, the
:class:`~apigw_ws_core.reply.Reply` a WSGI response.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from apigw_ws_core.app import WebSocketApp
from apigw_ws_core.errors import NotFound
from apigw_ws_core.http import HttpRequest, handle_http, no_body, route_from_path
from apigw_ws_core.reply import Reply

__all__ = ["environ_headers", "make_wsgi_app", "request_from_environ", "respond"]

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def environ_headers(environ: dict[str, Any]) -> dict[str, str]:
    """The request headers of a WSGI environ, lower-cased (``Content-Type`` and
    ``Content-Length`` included)."""
    out = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
    for key, name in (("CONTENT_TYPE", "content-type"), ("CONTENT_LENGTH", "content-length")):
        if environ.get(key):
            out[name] = environ[key]
    return out


def request_from_environ(environ: dict[str, Any], route: str | None) -> HttpRequest:
    """The :class:`~apigw_ws_core.http.HttpRequest` of a WSGI environ (also used by the
    Flask adapter, whose requests carry one)."""
    stream = environ.get("wsgi.input")
    return HttpRequest(
        method=environ.get("REQUEST_METHOD", ""),
        route=route,
        headers=environ_headers(environ),
        query_string=environ.get("QUERY_STRING", ""),
        read=stream.read if stream is not None else no_body,
        input_terminated=bool(environ.get("wsgi.input_terminated")),
    )


def make_wsgi_app(app: WebSocketApp, prefix: str = "") -> WSGIApp:
    """A WSGI callable serving API Gateway's HTTP_PROXY integration calls for ``app``."""

    def wsgi(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            route: str | None = route_from_path(environ.get("PATH_INFO", ""), prefix)
        except NotFound:
            route = None  # answered by handle_http, after the method check
        return respond(handle_http(app, request_from_environ(environ, route)), start_response)

    return wsgi


def respond(reply: Reply, start_response: StartResponse) -> Iterable[bytes]:
    """Start the WSGI response for ``reply`` and return its body."""
    phrase = (
        HTTPStatus(reply.status).phrase if reply.status in HTTPStatus._value2member_map_ else ""
    )
    headers = [*reply.headers, ("Content-Length", str(len(reply.body)))]
    start_response(f"{reply.status} {phrase}".strip(), headers)
    return [reply.body]
