"""Flask-SQLAlchemy and apigw-ws on one database: shared notes, pushed to a channel.

The apigw-ws tables live on the app's own ``db.metadata`` (so ``db.create_all()``, Alembic
and Flask-Migrate see them with ``User`` and ``Note``) and the storage takes Flask-SQLAlchemy's
``db.session``. Run it locally (SQLite in ``instance/``, the local gateway in front)::

    cd examples/flask_sqlalchemy
    flask --app notes apigw-ws local
"""

from __future__ import annotations

from typing import Any

from flask import Flask, abort, request, session
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import ForeignKey, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from apigw_ws_core import HandlerContext
from apigw_ws_flask import ApigwWebSocket
from apigw_ws_storage.sqla import SqlaStorage, make_models


# --- models
class Base(DeclarativeBase):
    """The app's declarative base."""


db = SQLAlchemy(model_class=Base)


class User(db.Model):
    """The app's users (a demo: no passwords)."""

    __tablename__ = "user_account"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)


class Note(db.Model):
    """A note, saved by the ``note`` handler."""

    __tablename__ = "note"
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"))
    text: Mapped[str] = mapped_column(String(500))


# The five apigw-ws tables on the app's metadata, declared once at import time.
ws_models = make_models(db.metadata, prefix="apigw_ws_")

# --- storage
# Each storage call is a short transaction of its own on a new session from db.session's
# factory: it never commits (or rolls back) what the request has pending in db.session.
storage = SqlaStorage(db.session, models=ws_models)
ws = ApigwWebSocket(storage=storage, user_loader=lambda uid: db.session.get(User, int(uid)))
# --- end storage


@ws.current_user_loader
def current_user() -> Any:
    """Who may fetch a connection token from ``POST /ws/token``: the logged-in user id."""
    return session.get("user_id")


@ws.handler("note")
def add_note(ctx: HandlerContext, message: dict[str, Any]) -> None:
    """Save a note in the app's own transaction, then push it to the sender's channel."""
    note = Note(author_id=ctx.user.id, text=str(message.get("text", ""))[:500])
    db.session.add(note)
    db.session.commit()  # commit before sending (SQLite has one writer at a time)
    ctx.send(
        {"type": "note", "id": note.id, "author": ctx.user.name, "text": note.text},
        channel=ctx.session.channel_name,
    )


# --- app
def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The app. ``config`` overrides the defaults (tests pass their own)."""
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="dev-only-change-me",
        SQLALCHEMY_DATABASE_URI="sqlite:///notes.sqlite3",  # in app.instance_path
        APIGW_WS_SECRET="dev-secret-change-me",
    )
    app.config.from_prefixed_env()  # FLASK_APIGW_WS_MANAGEMENT_ENDPOINT from `apigw-ws local`
    app.config.update(config or {})
    db.init_app(app)
    ws.init_app(app)

    @app.post("/login")
    def login() -> dict[str, Any]:
        """Demo login by name (the user is created on first use)."""
        name = str((request.get_json(silent=True) or {}).get("name", "")).strip()[:64]
        if not name:
            abort(400)
        user = db.session.scalar(select(User).where(User.name == name))
        if user is None:
            user = User(name=name)
            db.session.add(user)
            db.session.commit()
        session["user_id"] = user.id
        return {"id": user.id, "name": user.name}

    with app.app_context():
        db.create_all()  # a demo; in production let Alembic create the tables
    return app
