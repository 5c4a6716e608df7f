"""A small Flask chat on API Gateway WebSockets: rooms, presence, a staff-only room, demo users.

Rooms are history channels (the recent lines live in apigw-ws's channel history: no table of
our own), presence comes from apigw-ws's ``member_added`` / ``member_removed`` events, a line
goes to everyone in the room but its sender, and each connection's ``device`` attribute
(declared below) travels with its lines.

The page is the shared chat UI in ``examples/chat_ui`` on the apigw-ws browser client, which
the ``apigw_ws_client`` blueprint serves from the installed package.

Run it locally (SQLite, the local gateway in front of ``flask run``)::

    cd examples/flask_chat
    flask --app chat apigw-ws local        # then open http://127.0.0.1:5000/ (alice / demo)
"""

from __future__ import annotations

import json
import os
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, abort, redirect, render_template, request, url_for
from flask_login import (
    LoginManager,
    UserMixin,
    current_user,
    login_required,
    login_user,
    logout_user,
)
from flask_wtf.csrf import CSRFProtect, generate_csrf
from sqlalchemy.orm import sessionmaker

from apigw_ws_core import HandlerContext
from apigw_ws_core.channels import AUTHENTICATED, AUTHORIZED, ChannelPolicy, ChannelRule
from apigw_ws_flask import ApigwWebSocket
from apigw_ws_storage.sqla import SqlaStorage, create_bounded_engine

#: room -> (title, description, private). Channels are named ``room-<room>``.
ROOM_INFO = {
    "general": ("General", "Everyone is welcome.", False),
    "random": ("Random", "Anything goes.", False),
    "help": ("Help", "Questions and answers.", False),
    "staff": ("Staff", "Staff only: alice may come in, bob and carol may not.", True),
}
ROOMS = list(ROOM_INFO)
STAFF = {"alice"}
#: The page's JavaScript and CSS, shared with the Django example.
CHAT_UI_STATIC = Path(__file__).resolve().parent.parent / "chat_ui" / "static"
DEMO_PASSWORD = "demo"  # demo only: every demo user has this password
#: What a page-made line id may look like (a UUID, or the page's fallback).
LINE_ID = re.compile(r"\A[A-Za-z0-9-]{8,64}\Z")


class User(UserMixin):
    """A demo user; a real app would load users from its database."""

    def __init__(self, name: str):
        self.id = name


USERS = {name: User(name) for name in ("alice", "bob", "carol")}


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The chat app. ``config`` overrides the defaults (tests pass their own)."""
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="dev-only-change-me",
        DATABASE_URL="sqlite:///" + os.path.join(app.instance_path, "chat.sqlite3"),
        APIGW_WS_SECRET="dev-secret-change-me",
        # The local gateway's address; in production, your API's wss:// URL.
        CHAT_WS_URL="ws://127.0.0.1:8001/local",
        # Rooms keep their last 200 lines for a day: clients that reconnect recover what
        # they missed, and the page loads recent lines from there.
        APIGW_WS_HISTORY=[{"pattern": "room-*", "size": 200, "ttl": 86400}],
        # Rooms announce who comes and goes (per user, not per tab).
        APIGW_WS_PRESENCE_CHANNELS=["room-*"],
        # ?device=mobile|desktop from the page, validated and kept with the connection.
        APIGW_WS_CONNECTION_ATTRIBUTES=[
            {"name": "device", "choices": ["mobile", "desktop"], "default": "desktop"}
        ],
    )
    app.config.from_prefixed_env()  # FLASK_APIGW_WS_MANAGEMENT_ENDPOINT from `apigw-ws local`
    app.config.update(config or {})
    os.makedirs(app.instance_path, exist_ok=True)

    # --- storage: SQLAlchemy, tables created on start for the demo -------------------
    engine = create_bounded_engine(app.config["DATABASE_URL"])  # pre-ping, bounded timeouts
    storage = SqlaStorage(sessionmaker(engine))
    storage.create_tables()

    # --- login (Flask-Login) and CSRF (Flask-WTF) ------------------------------------
    login = LoginManager(app)
    login.login_view = "login"
    login.user_loader(USERS.get)
    CSRFProtect(app)  # the gateway endpoints are exempt; the token endpoint is protected

    # --- the page's assets: the shared chat UI (the extension serves the client) -------
    app.register_blueprint(
        Blueprint("chat_ui", __name__, static_folder=CHAT_UI_STATIC, static_url_path="/chat-ui")
    )

    # --- WebSockets: only rooms are joinable, only when logged in, staff room by staff -
    policy = ChannelPolicy(
        [
            ChannelRule("room-staff", AUTHORIZED),
            *(ChannelRule(f"room-{name}", AUTHENTICATED) for name in ROOMS),
        ],
        authorize=lambda user_id, channel: user_id in STAFF,
    )
    ws = ApigwWebSocket(app, storage=storage, policy=policy, transport=app.config.get("TRANSPORT"))

    @ws.handler("chat_message")
    def chat_message(ctx: HandlerContext, message: dict[str, Any]) -> None:
        text = str(message.get("text", "")).strip()[:500]
        if not text:
            return
        given = message.get("id")
        line_id = given if isinstance(given, str) and LINE_ID.match(given) else uuid.uuid4().hex
        # Everyone in the room but the sender, whose page shows the line already.
        ctx.broadcast(
            {
                "type": "chat",
                "id": line_id,
                "room": ctx.session.channel_name,
                "user": ctx.user_id,
                "text": text,
                "ts": datetime.now(UTC).isoformat(),
                "device": ctx.attributes.get("device"),
            }
        )

    @ws.handler("ping")
    def ping(ctx: HandlerContext, message: dict[str, Any]) -> None:
        """The browser client's keepalive (API Gateway drops idle connections)."""

    @ws.handler("join")
    def join(ctx: HandlerContext, message: dict[str, Any]) -> None:
        # Sent by the page once the socket is open (during $connect API Gateway cannot
        # deliver to the new connection yet): the room's recent lines, from its history.
        channel = ctx.session.channel_name
        recent = ws.history(channel, limit=50).messages
        ctx.reply(
            {
                "type": "history",
                "room": channel,
                "messages": [json.loads(line.payload) for line in recent],
            }
        )

    # --- pages ---------------------------------------------------------------------
    @app.route("/login", methods=["GET", "POST"], endpoint="login")
    def login_page() -> Any:
        error = None
        if request.method == "POST":
            user = USERS.get(request.form.get("username", ""))
            if user is not None and request.form.get("password") == DEMO_PASSWORD:
                login_user(user)
                return redirect(url_for("chat_page"))
            error = "Unknown user or wrong password."
        return render_template("login.html", users=sorted(USERS), error=error)

    @app.post("/logout", endpoint="logout")
    def logout_page() -> Any:
        """POST only (with the CSRF token), so that no link or image can log anyone out."""
        logout_user()
        return redirect(url_for("login"))

    @app.get("/")
    @login_required
    def chat_page() -> Any:
        room = request.args.get("room", ROOMS[0])
        if room not in ROOMS:
            abort(404)
        chat_config = {
            "user": {"id": current_user.id, "name": current_user.id},
            "wsUrl": app.config["CHAT_WS_URL"],
            "tokenUrl": url_for("apigw_ws_token.token"),
            "clientUrl": url_for("apigw_ws_client.asset", filename="apigw-ws.js"),
            "rooms": [
                {"name": f"room-{name}", "title": title, "description": text, "private": private}
                for name, (title, text, private) in ROOM_INFO.items()
            ],
            "initialRoom": f"room-{room}",
            "logout": {
                "url": url_for("logout"),
                "method": "post",
                "csrfToken": generate_csrf(),
                "csrfField": "csrf_token",
            },
        }
        return render_template("chat.html", chat_config=chat_config)

    return app
