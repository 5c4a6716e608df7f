"""Handlers: only explicitly registered names are reachable from the wire. Framework
methods, private and dunder names, inherited helpers and non-string values are 400."""

from __future__ import annotations

import json
from typing import Any

import pytest

from apigw_ws_core.errors import ConfigurationError
from apigw_ws_core.handlers import WebSocketView, handler

from .support import connect, make_app, message, snapshot, status_and_code


class ChatView(WebSocketView):
    """A view with one marked method and plenty of unmarked ones."""

    calls: list[str] = []

    @handler
    def post_message(self, ctx: Any, message: dict[str, Any]) -> Any:
        ChatView.calls.append("post_message")
        return {"ok": True}

    @handler(name="renamed")
    def _internal_name(self, ctx: Any, message: dict[str, Any]) -> Any:
        ChatView.calls.append("renamed")
        return {"ok": True}

    def delete_everything(self, ctx: Any, message: dict[str, Any]) -> Any:
        ChatView.calls.append("delete_everything")

    def _private(self, ctx: Any, message: dict[str, Any]) -> Any:
        ChatView.calls.append("_private")


FRAMEWORK_NAMES = [
    *sorted(name for name in dir(ChatView) if name not in ("post_message", "renamed")),
    *["context", "websocket_session", "invoke", "handler_methods", "app", "self", "mro"],
]


@pytest.fixture
def view_app():
    ChatView.calls = []
    app = make_app(require_token=False)
    app.register_view(ChatView)
    _, cid = connect(app)
    return app, cid


@pytest.mark.parametrize("name", FRAMEWORK_NAMES)
@pytest.mark.parametrize("key", ["action", "handler"])
def test_framework_private_and_dunder_names_are_400(view_app, name, key):
    app, cid = view_app
    before = snapshot(app.storage)
    reply = message(app, cid, json.dumps({key: name}))
    assert reply.status == 400
    assert status_and_code(reply)[1] in ("invalid_handler_name", "unknown_handler")
    assert ChatView.calls == []
    assert snapshot(app.storage) == before
    assert app.transport.sent == []


@pytest.mark.parametrize(
    "value",
    [
        None,
        0,
        1,
        -1,
        1.5,
        True,
        False,
        [],
        ["post_message"],
        {},
        {"name": "post_message"},
        "",
        " post_message",
        "post_message ",
        "post_message\n",
        "post_message\x00",
        "Post_Message",
        "POST_MESSAGE",
        "post-message",
        "post.message",
        "post_message()",
        "p\u043est_message",  # Cyrillic o
        "\uff50\uff4f\uff53\uff54_message",  # fullwidth
        "_internal_name",  # the method behind "renamed"
        "__class__",
        "__init__",
        "__getattribute__",
        "__dict__",
        "_private",
        "delete_everything",
        "a" * 65,
        "x" * 1000,
        "1chat",
        "subscribe",  # built-ins are off unless enabled
    ],
    ids=repr,
)
def test_non_handler_values_are_400_and_reach_nothing(view_app, value):
    app, cid = view_app
    reply = message(app, cid, json.dumps({"action": value}))
    status, code = status_and_code(reply)
    assert status in (400, 413), value
    assert code in ("invalid_handler_name", "unknown_handler", "body_too_large"), value
    assert ChatView.calls == []


def test_registered_names_work(view_app):
    app, cid = view_app
    assert message(app, cid, '{"action": "post_message"}').status == 200
    assert message(app, cid, '{"action": "renamed"}').status == 200
    assert ChatView.calls == ["post_message", "renamed"]


def test_an_unmarked_override_removes_an_inherited_handler():
    """Marked in a base view, overridden without the mark in a subclass ⇒ not reachable
    (it used to stay registered and then call the unmarked override)."""

    class Base(WebSocketView):
        @handler
        def admin_action(self, ctx: Any, message: dict[str, Any]) -> Any:
            return "base"

        @handler
        def ping(self, ctx: Any, message: dict[str, Any]) -> Any:
            return "pong"

    class Child(Base):
        def admin_action(self, ctx: Any, message: dict[str, Any]) -> Any:  # not marked
            return "child"

    class Disabled(Base):
        admin_action = None  # type: ignore[assignment]

    for view in (Child, Disabled):
        app = make_app(require_token=False)
        assert app.register_view(view) == ["ping"]
        _, cid = connect(app)
        reply = message(app, cid, '{"action": "admin_action"}')
        assert status_and_code(reply) == (400, "unknown_handler")


def test_marked_methods_inherited_unchanged_stay_registered():
    class Base(WebSocketView):
        @handler
        def ping(self, ctx: Any, message: dict[str, Any]) -> Any:
            return "pong"

    class Child(Base):
        pass

    app = make_app(require_token=False)
    assert app.register_view(Child) == ["ping"]


@pytest.mark.parametrize(
    "name",
    ["invoke", "websocket_session", "handler_methods", "__init__", "_x", "1a", "a-b", "a" * 65],
)
def test_framework_names_cannot_be_registered(name):
    app = make_app()
    with pytest.raises(ConfigurationError):
        app.add_handler(name, lambda ctx, m: None)
    with pytest.raises(ConfigurationError):
        app.add_handler("", lambda ctx, m: None)

    class Bad(WebSocketView):
        @handler(name=name)
        def method(self, ctx: Any, message: dict[str, Any]) -> Any:
            return None

    with pytest.raises(ConfigurationError):
        make_app().register_view(Bad)


def test_a_view_overriding_a_framework_method_as_handler_is_refused():
    class Sneaky(WebSocketView):
        @handler
        def invoke(self, method_name: str, message: dict[str, Any]) -> Any:  # type: ignore[override]
            return None

    with pytest.raises(ConfigurationError):
        make_app().register_view(Sneaky)


def test_handler_key_must_be_top_level_and_first_key_wins():
    app = make_app(require_token=False)
    _, cid = connect(app)
    nested = message(app, cid, '{"data": {"action": "echo"}}')
    assert status_and_code(nested) == (400, "invalid_message")
    # "handler" is tried before "action"; an invalid "handler" is not skipped over
    reply = message(app, cid, '{"handler": "__init__", "action": "echo"}')
    assert status_and_code(reply) == (400, "invalid_handler_name")


def test_permission_denied_is_403_and_runs_nothing():
    app = make_app(require_token=False)
    ran: list[bool] = []
    app.add_handler("admin", lambda ctx, m: ran.append(True), permission=lambda ctx: False)
    _, cid = connect(app)
    assert status_and_code(message(app, cid, '{"action": "admin"}')) == (403, "handler_forbidden")
    assert ran == []
