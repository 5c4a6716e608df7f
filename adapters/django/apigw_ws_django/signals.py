"""Django signals for the WebSocket lifecycle, fed by the core's hooks.

Receivers get ``sender`` (the view class, or :class:`~apigw_ws_core.app.WebSocketApp` for
the default app) and ``app``, plus:

* :data:`websocket_connected` - ``session`` (the core
  :class:`~apigw_ws_core.storage.Session` just stored), ``event`` (the ``ConnectEvent``),
  ``request`` (the Django request from API Gateway, or ``None`` outside HTTP);
* :data:`websocket_message` - ``context`` (the
  :class:`~apigw_ws_core.context.HandlerContext`, before the handler runs), ``message``
  (the decoded JSON object), ``request``;
* :data:`websocket_disconnected` - ``connection_id``, ``event`` (the
  ``DisconnectEvent``), ``request``. Sent once per connection, when the session changes
  from connected to disconnected (a repeated ``$disconnect`` sends nothing).

Receivers run inside the request from API Gateway: keep them short, or hand work to a task
queue. An exception in a receiver fails the request (use ``send_robust`` semantics by
catching in the receiver if that matters to you).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from django.dispatch import Signal

if TYPE_CHECKING:
    from django.http import HttpRequest

    from apigw_ws_core.app import WebSocketApp
    from apigw_ws_core.context import HandlerContext
    from apigw_ws_core.events import ConnectEvent, DisconnectEvent
    from apigw_ws_core.handlers import WebSocketView
    from apigw_ws_core.storage import Session

__all__ = [
    "connect_app",
    "current_request",
    "websocket_connected",
    "websocket_disconnected",
    "websocket_message",
]

websocket_connected = Signal()
websocket_message = Signal()
websocket_disconnected = Signal()

#: The Django request being handled by an endpoint view (set only during ``app.handle``).
_current_request: ContextVar[HttpRequest | None] = ContextVar(
    "apigw_ws_current_request", default=None
)


def current_request() -> HttpRequest | None:
    """The request from API Gateway being handled in this thread/context, if any."""
    return _current_request.get()


def connect_app(app: WebSocketApp, view: type[WebSocketView] | None) -> None:
    """Send the Django signals from ``app``'s core hooks (``sender`` is ``view``)."""
    sender: Any = view if view is not None else type(app)

    def on_connect(session: Session, event: ConnectEvent) -> None:
        websocket_connected.send(
            sender=sender, app=app, session=session, event=event, request=current_request()
        )

    def on_message(context: HandlerContext) -> None:
        websocket_message.send(
            sender=sender,
            app=app,
            context=context,
            message=context.body,
            request=current_request(),
        )

    def on_disconnect(connection_id: str, event: DisconnectEvent) -> None:
        websocket_disconnected.send(
            sender=sender,
            app=app,
            connection_id=connection_id,
            event=event,
            request=current_request(),
        )

    app.on_connect(on_connect)
    app.on_message(on_message)
    app.on_disconnect(on_disconnect)
