"""A plain WSGI backend for API Gateway WebSockets: no web framework, SQLAlchemy storage.

Give a WSGI server a module-level callable (a ``wsgi.py`` with ``ws, application =
from_environment()``, then ``gunicorn wsgi:application``) or, for a try-out::

    APIGW_WS_SECRET=dev-secret python app.py          # serves http://127.0.0.1:8000/ws/...
    apigw-ws local --backend http://127.0.0.1:8000/ws/ --secret dev-secret
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy.orm import sessionmaker

from apigw_ws_core import Config, HandlerContext, Storage, Transport, WebSocketApp
from apigw_ws_core.wsgi import WSGIApp, make_wsgi_app
from apigw_ws_storage.sqla import SqlaStorage, create_bounded_engine


def build(
    storage: Storage, *, secret: str, transport: Transport | None = None, **settings: Any
) -> tuple[WebSocketApp, WSGIApp]:
    """The WebSocket app with its handlers, and the WSGI callable serving it under /ws."""
    ws = WebSocketApp(
        storage=storage,
        transport=transport,
        config=Config(secret=secret, enable_subscribe=True, **settings),
    )

    @ws.handler("echo")
    def echo(ctx: HandlerContext, message: dict[str, Any]) -> Any:
        """Answer the sender (the return value is the reply on two-way routes)."""
        return {"type": "echo", "text": message.get("text", "")}

    @ws.handler("say")
    def say(ctx: HandlerContext, message: dict[str, Any]) -> None:
        """Send to everyone in the channel the sender joined at $connect."""
        ctx.send(
            {"type": "said", "by": ctx.user_id, "text": str(message.get("text", ""))[:500]},
            channel=ctx.session.channel_name,
        )

    return ws, make_wsgi_app(ws, prefix="/ws")


def from_environment() -> tuple[WebSocketApp, WSGIApp]:
    """Configuration from environment variables (``DATABASE_URL``, ``APIGW_WS_SECRET``,
    ``APIGW_WS_MANAGEMENT_ENDPOINT``)."""
    # pool_pre_ping and bounded connect/read timeouts: a hung database costs a request
    # about 2 s, not API Gateway's 29 s (docs/security.rst, "When a dependency fails")
    engine = create_bounded_engine(os.environ.get("DATABASE_URL", "sqlite:///wsgi_demo.sqlite3"))
    storage = SqlaStorage(sessionmaker(engine))
    storage.create_tables()  # in production: Alembic (see docs/wsgi.rst)
    return build(
        storage,
        secret=os.environ["APIGW_WS_SECRET"],
        management_endpoint=os.environ.get("APIGW_WS_MANAGEMENT_ENDPOINT"),
        # No login system in this tiny app: let anonymous browsers connect.
        require_token=False,
    )


if __name__ == "__main__":
    from wsgiref.simple_server import make_server

    ws, application = from_environment()
    with make_server("127.0.0.1", 8000, application) as server:
        print("serving http://127.0.0.1:8000/ws/ (Ctrl-C stops)")
        server.serve_forever()
