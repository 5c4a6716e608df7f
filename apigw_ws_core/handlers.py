"""Handler registration: the only things a client message can reach.

Function handlers are registered on the app (``@app.handler("chat_message")``); class-based
views mark methods with :func:`handler` and are registered with ``app.register_view``.
Nothing else is callable from the wire: names must match :data:`HANDLER_NAME_RE`, may not
start with ``_``, and may not shadow a method of :class:`WebSocketView` itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar, overload

import attrs

from apigw_ws_core.errors import ConfigurationError, InvalidHandlerName, UnknownHandler

if TYPE_CHECKING:
    from apigw_ws_core.context import HandlerContext

__all__ = [
    "HANDLER_NAME_RE",
    "HandlerFunc",
    "HandlerRegistry",
    "HandlerSpec",
    "Permission",
    "WebSocketView",
    "handler",
]

HANDLER_NAME_RE = re.compile(r"\A[A-Za-z][A-Za-z0-9_]{0,63}\Z")

HandlerFunc = Callable[["HandlerContext", dict[str, Any]], Any]
Permission = Callable[["HandlerContext"], bool]
F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__apigw_ws_handler__"


@attrs.frozen
class HandlerSpec:
    """A registered handler: wire ``name``, the callable, and an optional permission check."""

    name: str
    func: HandlerFunc
    permission: Permission | None = None


class WebSocketView:
    """Base for class-based handlers. Mark methods with :func:`handler`.

    A new instance is made for every message; ``self.context`` is the
    :class:`~apigw_ws_core.context.HandlerContext`. Adapters subclass this to add their
    framework's request object (the Django adapter passes ``request`` to methods).
    """

    def __init__(self, context: HandlerContext):
        self.context = context

    @property
    def websocket_session(self) -> Any:
        """The session of the connection that sent the message."""
        return self.context.session

    def invoke(self, method_name: str, message: dict[str, Any]) -> Any:
        """Call the marked method; adapters override to change the signature."""
        return getattr(self, method_name)(self.context, message)

    @classmethod
    def handler_methods(cls) -> Iterator[tuple[str, str, Permission | None]]:
        """``(wire_name, method_name, permission)`` for each marked method.

        The most derived definition of a name decides: a subclass that overrides a marked
        method without marking it again (or sets it to ``None``) removes the handler.
        """
        seen: set[str] = set()
        for klass in cls.__mro__:
            for attr, value in vars(klass).items():
                if attr in seen:
                    continue
                seen.add(attr)
                mark = getattr(value, _MARK, None)
                if not isinstance(mark, dict):
                    continue
                yield mark["name"] or attr, attr, mark["permission"]


_RESERVED = frozenset(dir(WebSocketView))


@overload
def handler(func: F, /) -> F: ...
@overload
def handler(
    func: None = None, /, *, name: str | None = None, permission: Permission | None = None
) -> Callable[[F], F]: ...
def handler(
    func: F | None = None, /, *, name: str | None = None, permission: Permission | None = None
) -> F | Callable[[F], F]:
    """Mark a :class:`WebSocketView` method as reachable from the wire.

    ``name`` overrides the wire name; ``permission(context) -> bool`` denies with 403.
    """

    def mark(f: F) -> F:
        setattr(f, _MARK, {"name": name, "permission": permission})
        return f

    return mark(func) if func is not None else mark


def _acceptable(name: object) -> bool:
    """The one naming rule: an identifier, not private, not a ``WebSocketView`` attribute."""
    return isinstance(name, str) and bool(HANDLER_NAME_RE.match(name)) and name not in _RESERVED


def check_name(name: object) -> str:
    """Validate a handler name from the wire (raises ``InvalidHandlerName``)."""
    if not _acceptable(name):
        raise InvalidHandlerName()
    assert isinstance(name, str)
    return name


class HandlerRegistry:
    """Name → :class:`HandlerSpec`. Registration errors are configuration errors."""

    def __init__(self) -> None:
        self._handlers: dict[str, HandlerSpec] = {}
        self._builtins: set[str] = set()

    def add(
        self,
        name: str,
        func: HandlerFunc,
        permission: Permission | None = None,
        *,
        builtin: bool = False,
    ) -> None:
        """Register ``func`` under ``name``; refuses bad or duplicate names.

        A ``builtin`` handler (registered by the library) may be replaced once by the
        application's own handler of the same name.
        """
        if not _acceptable(name):
            raise ConfigurationError(f"invalid handler name {name!r}")
        if name in self._handlers and name not in self._builtins:
            raise ConfigurationError(f"handler {name!r} is already registered")
        self._builtins.discard(name)
        if builtin:
            self._builtins.add(name)
        self._handlers[name] = HandlerSpec(name, func, permission)

    def add_view(self, view: type[WebSocketView]) -> list[str]:
        """Register every :func:`handler`-marked method of ``view``; return the names."""
        names = []
        for wire_name, method_name, permission in view.handler_methods():

            def call(ctx: HandlerContext, message: dict[str, Any], _m: str = method_name) -> Any:
                return view(ctx).invoke(_m, message)

            self.add(wire_name, call, permission)
            names.append(wire_name)
        if not names:
            raise ConfigurationError(f"{view.__name__} has no @handler methods")
        return names

    def get(self, name: object) -> HandlerSpec:
        """The handler for a name from the wire, or ``InvalidHandlerName``/``UnknownHandler``."""
        spec = self._handlers.get(check_name(name))
        if spec is None:
            raise UnknownHandler()
        return spec

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._handlers)

    def __contains__(self, name: object) -> bool:
        return name in self._handlers
