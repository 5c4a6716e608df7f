"""Shared helpers for the core tests: an app on memory storage and state snapshots."""

from __future__ import annotations

import copy
from typing import Any

from apigw_ws_core import Config, MemoryStorage, WebSocketApp
from apigw_ws_core.events import from_http
from apigw_ws_core.testing import RecordingTransport, gateway_headers, new_connection_id

SECRET = "test-secret-0123456789"


def make_app(**config: Any) -> WebSocketApp:
    """A WebSocketApp on MemoryStorage and a RecordingTransport, with a chat handler."""
    config.setdefault("secret", SECRET)
    app = WebSocketApp(
        storage=MemoryStorage(), transport=RecordingTransport(), config=Config(**config)
    )

    @app.handler("chat_message")
    def chat(ctx, message):
        ctx.send(
            {"type": "chat", "text": message.get("text"), "from": ctx.user_id},
            channel=ctx.session.channel_name,
        )
        return {"ok": True}

    return app


def snapshot(storage: MemoryStorage) -> dict[str, Any]:
    """Everything a rejected request must not change (counters may change by design)."""
    return copy.deepcopy(
        {"sessions": storage.sessions, "subs": storage.subscriptions, "tokens": storage.tokens}
    )


def connect(
    app: WebSocketApp,
    cid: str | None = None,
    *,
    query: str = "",
    secret: str | None = SECRET,
    origin: str | None = None,
    **kw: Any,
):
    """Run a $connect through the pipeline; returns (reply, connection_id)."""
    cid = cid or new_connection_id()
    headers = gateway_headers("connect", cid, secret=secret, origin=origin, **kw)
    return app.handle(from_http("connect", headers, query)), cid


def message(
    app: WebSocketApp,
    cid: str,
    body: bytes | str,
    *,
    secret: str | None = SECRET,
    route: str = "default",
):
    """Run a message through the pipeline."""
    raw = body.encode() if isinstance(body, str) else body
    headers = gateway_headers(route, cid, secret=secret)
    return app.handle(from_http(route, headers, "", raw))


def disconnect(app: WebSocketApp, cid: str, *, secret: str | None = SECRET):
    """Run a $disconnect through the pipeline."""
    return app.handle(from_http("disconnect", gateway_headers("disconnect", cid, secret=secret)))
