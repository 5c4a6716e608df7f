"""A small Flask chat on API Gateway WebSockets: rooms, presence, a few demo users.

Run it locally (SQLite, the local gateway in front of ``flask run``)::

    cd examples/flask_chat
    flask --app chat apigw-ws local        # then open http://127.0.0.1:5000/ (alice / demo)
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, abort, redirect, render_template, request, url_for
from flask_login import LoginManager, UserMixin, current_user, login_required, login_user
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from apigw_ws_core import HandlerContext
from apigw_ws_core.channels import AUTHENTICATED, ChannelPolicy, ChannelRule
from apigw_ws_core.events import DisconnectEvent
from apigw_ws_flask import ApigwWebSocket
from apigw_ws_storage.sqla import SqlaStorage

ROOMS = ["general", "random", "help"]
DEMO_PASSWORD = "demo"  # demo only: every demo user has this password


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
    )
    app.config.from_prefixed_env()  # FLASK_APIGW_WS_MANAGEMENT_ENDPOINT from `apigw-ws local`
    app.config.update(config or {})
    os.makedirs(app.instance_path, exist_ok=True)

    # --- storage: SQLAlchemy, tables created on start for the demo -------------------
    engine = create_engine(app.config["DATABASE_URL"])
    storage = SqlaStorage(sessionmaker(engine))
    storage.create_tables()

    # --- login (Flask-Login) and CSRF (Flask-WTF) ------------------------------------
    login = LoginManager(app)
    login.login_view = "login"
    login.user_loader(USERS.get)
    CSRFProtect(app)  # the gateway endpoints are exempt; the token endpoint is protected

    # --- WebSockets: only rooms are joinable, and only when logged in ----------------
    policy = ChannelPolicy([ChannelRule(f"room-{name}", AUTHENTICATED) for name in ROOMS])
    ws = ApigwWebSocket(app, storage=storage, policy=policy, transport=app.config.get("TRANSPORT"))

    def presence_update(channel: str) -> None:
        people = sorted(ws.presence(channel).user_ids)
        ws.send({"type": "presence", "room": channel, "users": people}, channel=channel)

    @ws.on_disconnect
    def left(connection_id: str, event: DisconnectEvent) -> None:
        session = storage.get_session(connection_id)
        if session is not None:
            presence_update(session.channel_name)

    @ws.handler("chat_message")
    def chat_message(ctx: HandlerContext, message: dict[str, Any]) -> None:
        text = str(message.get("text", "")).strip()[:500]
        if text:
            ctx.send(
                {"type": "chat", "user": ctx.user_id, "text": text},
                channel=ctx.session.channel_name,
            )

    @ws.handler("join")
    def join(ctx: HandlerContext, message: dict[str, Any]) -> None:
        # Sent by the page once the socket is open. (Not from an on_connect hook: during
        # $connect API Gateway cannot deliver to the new connection yet and answers 410.)
        presence_update(ctx.session.channel_name)

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

    @app.get("/")
    @login_required
    def chat_page() -> Any:
        room = request.args.get("room", ROOMS[0])
        if room not in ROOMS:
            abort(404)
        return render_template(
            "chat.html",
            user=current_user.id,
            room=room,
            rooms=ROOMS,
            ws_url=app.config["CHAT_WS_URL"],
        )

    return app
