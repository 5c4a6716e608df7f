"""FastAPI (and Starlette) integration: a router and a dependency. Needs ``[asgi]``.

::

    from fastapi import Depends, FastAPI
    from apigw_ws_fastapi import ApigwWs

    ws = ApigwWs(app, current_user_id=get_user_id)   # app: your WebSocketApp
    api = FastAPI()
    api.include_router(ws.router)                   # /ws/connect, /ws/default, ..., /ws/token

    @api.post("/announce")
    def announce(text: str, app: WebSocketApp = Depends(ws.dependency)):
        return app.send({"text": text}, everyone=True).as_dict()

The router's endpoints only translate, like every adapter: the integration calls are
:func:`apigw_ws_core.asgi.serve_http` (the core's HTTP intake, in a worker thread), the token
endpoint is :func:`apigw_ws_core.tokens.token_endpoint`. A plain Starlette app mounts the
pure ASGI app instead: ``Mount("/ws", app=make_asgi_app(app))``.
"""

# No ``from __future__ import annotations``: FastAPI reads the token endpoint's
# ``Depends(current_user_id)`` from its real annotation (a closure variable).

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from apigw_ws_core.app import WebSocketApp
from apigw_ws_core.asgi import ReceiveReader, asgi_headers, serve_http
from apigw_ws_core.asyncsupport import run_off_loop
from apigw_ws_core.reply import Reply
from apigw_ws_core.tokens import TokenRequest, token_endpoint

__all__ = ["GATEWAY_METHODS", "ApigwWs", "to_response"]

#: Methods the routes answer themselves (``405 method_not_allowed`` for all but ``POST``,
#: after the secret-first check on the integration routes).
GATEWAY_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]


def to_response(reply: Reply) -> Response:
    """A core :class:`~apigw_ws_core.reply.Reply` as a Starlette response."""
    response = Response(reply.body, status_code=reply.status)
    for name, value in reply.headers:
        response.headers[name] = value
    return response


class ApigwWs:
    """The integration endpoints (and the token endpoint) of ``app`` as a FastAPI router.

    :param app: the :class:`~apigw_ws_core.app.WebSocketApp`.
    :param prefix: where API Gateway's integrations point (``{prefix}/connect`` ...).
    :param current_user_id: a FastAPI dependency returning the logged-in user's id (or
        ``None``); with it, ``POST {token_path}`` issues connection tokens. If your users
        authenticate with cookies, protect that route against cross-site requests as you
        do your other state-changing routes (the token is bound to the request's
        ``Origin`` either way).
    :param token_path: the token endpoint's path (default ``{prefix}/token``).
    """

    def __init__(
        self,
        app: WebSocketApp,
        *,
        prefix: str = "/ws",
        current_user_id: Callable[..., Any] | None = None,
        token_path: str | None = None,
    ) -> None:
        self.app = app
        prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.router = APIRouter()
        if current_user_id is not None:
            self.router.add_api_route(
                token_path or f"{prefix}/token",
                self._token_endpoint(current_user_id),
                methods=GATEWAY_METHODS,
                include_in_schema=False,
            )
        self.router.add_api_route(
            prefix + "/{route}", self._gateway, methods=GATEWAY_METHODS, include_in_schema=False
        )

    def dependency(self) -> WebSocketApp:
        """``Depends(ws.dependency)``: the app, for your own endpoints."""
        return self.app

    async def _gateway(self, request: Request, route: str) -> Response:
        reply = await serve_http(
            self.app,
            method=request.method,
            route=route,
            headers=asgi_headers(request.scope),
            query_string=request.scope.get("query_string", b"").decode("latin-1"),
            receive=request.receive,
        )
        return to_response(reply)

    def _token_endpoint(self, current_user_id: Callable[..., Any]) -> Callable[..., Any]:
        app = self.app

        async def token(
            request: Request,
            user_id: Annotated[Any, Depends(current_user_id)],
        ) -> Response:
            token_request = TokenRequest(
                user_id=user_id,
                method=request.method,
                headers=asgi_headers(request.scope),
                read=ReceiveReader(request.receive, asyncio.get_running_loop()).read,
            )
            return to_response(await run_off_loop(token_endpoint, app, token_request))

        return token
