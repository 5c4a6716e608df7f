"""A Flask app with WebSockets through API Gateway: the whole quickstart in one file.

Run it:  flask --app app apigw-ws local      (then open http://127.0.0.1:5000/?name=alice)
"""

import os

from flask import Flask, render_template_string, request, session
from sqlalchemy.orm import sessionmaker

from apigw_ws_core import HandlerContext
from apigw_ws_flask import ApigwWebSocket
from apigw_ws_storage.sqla import SqlaStorage, create_bounded_engine

app = Flask(__name__)
app.config.update(
    SECRET_KEY=os.environ.get("SECRET_KEY", "dev-only-change-me"),
    # The value API Gateway sends in the X-Apigw-Ws-Secret header of every call: provisioning
    # generates one; locally, `flask apigw-ws local` hands this one to the gateway.
    APIGW_WS_SECRET=os.environ.get("APIGW_WS_SECRET", "dev-secret-change-me-0123456789abcdef"),
)

# Storage: SQLAlchemy 2.x. create_tables() is for trying things out; use Alembic in a project.
# create_bounded_engine: create_engine with every wait on the database bounded (2 s).
engine = create_bounded_engine(os.environ.get("DATABASE_URL", "sqlite:///chat.sqlite3"))
storage = SqlaStorage(sessionmaker(engine))
storage.create_tables()

# Adds POST /ws/connect, /ws/disconnect, /ws/default, /ws/<route> for API Gateway, POST
# /ws/token for browsers, /apigw-ws/apigw-ws.js (the browser client) and `flask apigw-ws`.
ws = ApigwWebSocket(app, storage=storage)


@ws.current_user_loader
def current_user() -> str | None:
    """Who may fetch a connection token. Use Flask-Login instead if you have it."""
    return session.get("user")


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


PAGE = """<!doctype html>
<title>apigw-ws chat</title>
<meta name="csrf-token" content="{{ csrf_token() if csrf_token is defined else '' }}">
<ul id="lines"></ul>
<form id="form"><input id="text" autocomplete="off"> <button>Send</button></form>
<script type="module">
  import { ApigwWsClient } from "{{ url_for('apigw_ws_client.asset', filename='apigw-ws.js') }}";
  const ws = new ApigwWsClient({
    url: "ws://127.0.0.1:8001/local",  // the local gateway; in production your wss:// URL
    tokenUrl: "{{ url_for('apigw_ws_token.token') }}",
    channel: "general",
  });
  ws.onMessage("chat_message", (m) => {
    const li = document.createElement("li");
    li.textContent = `${m.user}: ${m.text}`;
    document.getElementById("lines").append(li);
  });
  ws.connect();
  document.getElementById("form").onsubmit = (event) => {
    event.preventDefault();
    ws.send("chat_message", { text: document.getElementById("text").value });
    document.getElementById("text").value = "";
  };
</script>
"""


@app.get("/")
def index() -> str:
    """The chat page. ?name=... logs you in (a stand-in for your real login)."""
    if request.args.get("name"):
        session["user"] = request.args["name"][:64]
    return render_template_string(PAGE)
