"""A FastAPI backend for API Gateway WebSockets, with ``async def`` handlers.

Run it with any ASGI server::

    APIGW_WS_SECRET=dev-secret uvicorn app:api --port 8000
    apigw-ws local --backend http://127.0.0.1:8000/ws/ --secret dev-secret
"""

import os
from typing import Any

from fastapi import Depends, FastAPI, Request

from apigw_ws_core import Config, HandlerContext, MemoryStorage, Storage, Transport, WebSocketApp
from apigw_ws_fastapi import ApigwWs


def current_user_id(request: Request) -> str | None:
    """Who is logged in. Stand-in for your own authentication dependency (a session
    cookie, an OAuth2 bearer token ...): here a header set by a trusted proxy."""
    return request.headers.get("x-user")


def build(
    storage: Storage, *, secret: str, transport: Transport | None = None, **settings: Any
) -> tuple[WebSocketApp, FastAPI]:
    """The WebSocket app with its handlers, and the FastAPI app serving it under /ws."""
    ws = WebSocketApp(
        storage=storage, transport=transport, config=Config(secret=secret, **settings)
    )

    @ws.handler("say")
    async def say(ctx: HandlerContext, message: dict[str, Any]) -> Any:
        """Tell the room (await: the event loop keeps serving meanwhile), answer the sender."""
        text = str(message.get("text", ""))[:500]
        await ctx.asend({"type": "said", "by": ctx.user_id, "text": text}, channel="lobby")
        return {"type": "ok", "text": text}

    integration = ApigwWs(ws, prefix="/ws", current_user_id=current_user_id)
    api = FastAPI()
    api.include_router(integration.router)  # /ws/connect, /ws/default, ..., /ws/token

    @api.post("/announce")
    def announce(text: str, app: WebSocketApp = Depends(integration.dependency)) -> Any:  # noqa: B008
        """Your own endpoint, sending through the app the dependency gives it."""
        return app.send({"type": "news", "text": text}, everyone=True).as_dict()

    return ws, api


ws, api = build(
    MemoryStorage(),  # one process only; use SqlaStorage for more (see docs/wsgi.rst)
    secret=os.environ.get("APIGW_WS_SECRET", "dev-secret"),
    management_endpoint=os.environ.get("APIGW_WS_MANAGEMENT_ENDPOINT"),
)
