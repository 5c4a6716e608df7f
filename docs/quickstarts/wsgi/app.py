"""A plain WSGI backend for API Gateway WebSockets: no web framework, SQLAlchemy storage.

Serve it with any WSGI server: `gunicorn app:application`, or `python app.py` to try it out.
"""

import os

from sqlalchemy.orm import sessionmaker

from apigw_ws_core import Config, HandlerContext, WebSocketApp
from apigw_ws_core.wsgi import make_wsgi_app
from apigw_ws_storage.sqla import SqlaStorage, create_bounded_engine

# create_bounded_engine: create_engine with every wait on the database bounded (2 s).
engine = create_bounded_engine(os.environ.get("DATABASE_URL", "sqlite:///chat.sqlite3"))
storage = SqlaStorage(sessionmaker(engine))
storage.create_tables()  # for trying things out; in a project, Alembic creates the tables

ws = WebSocketApp(
    storage=storage,
    config=Config(
        # The value API Gateway sends in the X-Apigw-Ws-Secret header of every call:
        # provisioning generates one; locally, pass the same value to `apigw-ws local --secret`.
        secret=os.environ.get("APIGW_WS_SECRET", "dev-secret-change-me-0123456789abcdef"),
        # Where sends go: your API's https://{api-id}.execute-api.{region}.amazonaws.com/{stage}.
        # Unset, the running local gateway is found by itself.
        management_endpoint=os.environ.get("APIGW_WS_MANAGEMENT_ENDPOINT"),
    ),
)


@ws.handler("chat_message")
def chat_message(ctx: HandlerContext, message: dict) -> None:
    """{"action": "chat_message", "text": ...}: send the line to the sender's channel."""
    text = str(message.get("text", "")).strip()[:500]
    if text:
        ctx.send(
            {"type": "chat_message", "user": ctx.user_id, "text": text},
            channel=ctx.session.channel_name,  # chosen at connect: ?channel=...
        )


@ws.handler("whoami")
def whoami(ctx: HandlerContext, message: dict) -> dict:
    """A returned dict is the reply to the sender (on two-way routes, like $default)."""
    return {"type": "whoami", "user": ctx.user_id}


# API Gateway's integrations POST to /ws/connect, /ws/disconnect, /ws/default, /ws/<route>.
application = make_wsgi_app(ws, prefix="/ws")

if __name__ == "__main__":
    from wsgiref.simple_server import make_server

    port = int(os.environ.get("PORT", "8000"))
    with make_server("127.0.0.1", port, application) as server:
        print(f"serving http://127.0.0.1:{port}/ws/ (Ctrl-C stops)", flush=True)
        server.serve_forever()
