"""A pure ASGI application over :mod:`apigw_ws_core.http`, for any ASGI server.

::

    asgi_app = apigw_ws_core.asgi.make_asgi_app(app, prefix="/ws")   # uvicorn module:asgi_app

Only translation happens here, as in :mod:`apigw_ws_core.wsgi`: the ASGI scope and its
``receive`` channel become an :class:`~apigw_ws_core.http.HttpRequest`, the
:class:`~apigw_ws_core.reply.Reply` ASGI response messages. The synchronous intake and
pipeline run in a worker thread (storage and rate limiters block), never on the event loop;
``async def`` handlers and hooks run back on the server's event loop
(:mod:`apigw_ws_core.asyncsupport`). No Starlette or other framework import: the
FastAPI/Starlette integration (:mod:`apigw_ws_fastapi`) builds on
:func:`serve_http`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from apigw_ws_core.app import WebSocketApp
from apigw_ws_core.asyncsupport import run_off_loop
from apigw_ws_core.errors import NotFound
from apigw_ws_core.http import HttpRequest, handle_http, route_from_path
from apigw_ws_core.reply import Reply

__all__ = ["ASGIApp", "ReceiveReader", "asgi_headers", "make_asgi_app", "send_reply", "serve_http"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def asgi_headers(scope: Scope) -> dict[str, str]:
    """The request headers of an HTTP scope, lower-cased; repeated ones joined by ``,``."""
    out: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", ()):
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        out[name] = f"{out[name]},{value}" if name in out else value
    return out


class ReceiveReader:
    """``read(n)`` over ASGI ``http.request`` messages, for a worker thread (the core reads
    bodies synchronously, never more than it needs): each message is awaited on ``loop``.
    ``http.disconnect`` ends the body (a short body is then refused by the intake)."""

    def __init__(self, receive: Receive, loop: asyncio.AbstractEventLoop):
        self.receive = receive
        self.loop = loop
        self.buffer = bytearray()
        self.done = False

    def read(self, size: int) -> bytes:
        while len(self.buffer) < size and not self.done:
            message = asyncio.run_coroutine_threadsafe(self._next(), self.loop).result()
            if message.get("type") == "http.request":
                self.buffer += message.get("body", b"")
                self.done = not message.get("more_body", False)
            else:
                self.done = True
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    async def _next(self) -> Message:
        return await self.receive()


async def serve_http(
    app: WebSocketApp,
    *,
    method: str,
    route: str | None,
    headers: dict[str, str],
    query_string: str,
    receive: Receive,
) -> Reply:
    """Answer one integration request whose body arrives on ``receive`` (an ASGI receive
    callable): :func:`apigw_ws_core.http.handle_http` in a worker thread."""
    reader = ReceiveReader(receive, asyncio.get_running_loop())
    request = HttpRequest(
        method=method,
        route=route,
        headers=headers,
        query_string=query_string,
        read=reader.read,
        input_terminated=True,  # ASGI servers de-chunk and say where the body ends
    )
    return await run_off_loop(handle_http, app, request)


async def send_reply(reply: Reply, send: Send) -> None:
    """Send ``reply`` as ASGI ``http.response.start`` and ``http.response.body``."""
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers]
    headers.append((b"content-length", str(len(reply.body)).encode("ascii")))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


def make_asgi_app(app: WebSocketApp, prefix: str = "") -> ASGIApp:
    """An ASGI callable serving API Gateway's HTTP_PROXY integration calls for ``app``:
    ``POST {prefix}/connect``, ``/disconnect``, ``/default`` and ``/<custom route>``."""

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":  # API Gateway calls us over HTTP only
            await send({"type": "websocket.close", "code": 1008})
            return
        path, root = scope.get("path", ""), scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        try:
            route: str | None = route_from_path(path, prefix)
        except NotFound:
            route = None  # answered by handle_http, after the method check
        reply = await serve_http(
            app,
            method=scope.get("method", ""),
            route=route,
            headers=asgi_headers(scope),
            query_string=scope.get("query_string", b"").decode("latin-1"),
            receive=receive,
        )
        await send_reply(reply, send)

    return asgi


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
