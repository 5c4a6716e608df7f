"""What a handler receives: the message, its session, and ways to answer."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import attrs

from apigw_ws_core.events import MessageEvent
from apigw_ws_core.storage import Session

if TYPE_CHECKING:
    from apigw_ws_core.app import WebSocketApp
    from apigw_ws_core.fanout import SendReport

__all__ = ["HandlerContext"]

_UNSET: Any = object()


@attrs.define
class HandlerContext:
    """Per-message context handed to every handler.

    ``user`` is loaded lazily through the app's ``user_loader`` (so a handler that does not
    need the user costs no query); ``user_id`` is always available.
    """

    app: WebSocketApp
    event: MessageEvent
    session: Session
    body: dict[str, Any]
    handler_name: str
    extra: dict[str, Any] = attrs.field(factory=dict)
    _user: Any = attrs.field(default=_UNSET, alias="_user")

    @property
    def connection_id(self) -> str:
        """The id of the connection that sent the message."""
        return self.session.connection_id

    @property
    def user_id(self) -> str | None:
        """The user bound at ``$connect`` by the token, or ``None`` for anonymous."""
        return self.session.user_id

    @property
    def user(self) -> Any:
        """The user object from the app's ``user_loader`` (``None`` if anonymous)."""
        if self._user is _UNSET:
            self._user = self.app.load_user(self.session.user_id)
        return self._user

    @property
    def attributes(self) -> dict[str, str]:
        """The connection attributes stored at ``$connect`` (``Config.connection_attributes``)."""
        return self.session.attributes

    def reply(self, data: Any) -> SendReport:
        """Push ``data`` to this connection now (works on one-way routes too)."""
        return self.app.send(data, connection_id=self.connection_id)

    def send(self, data: Any, **target: Any) -> SendReport:
        """``app.send`` with the same keyword targets (``channel=``, ``user_id=`` ...)."""
        return self.app.send(data, **target)

    def broadcast(self, data: Any, channel: str | None = None, **target: Any) -> SendReport:
        """Send ``data`` to everyone in ``channel`` (default: this connection's ``$connect``
        channel) **but this connection**: ``app.send(data, channel=...,
        exclude=connection_id)``. Extra keywords (``attributes=``) pass through.

        On a history channel the sender then gets ``{"type": "$skip", "channel", "offset",
        "epoch"}`` (a few bytes instead of its own message back): the browser client counts
        that offset as seen, so the sender's own message never comes back as a gap or in a
        recovery (the page shows what it sent itself)."""
        return self.app.broadcast(
            data, sender=self.connection_id, channel=channel or self.session.channel_name, **target
        )

    async def asend(self, data: Any, **target: Any) -> SendReport:
        """:meth:`send` for ``async def`` handlers: the send runs in a worker thread, so
        the event loop keeps serving other requests meanwhile."""
        return await asyncio.to_thread(self.app.send, data, **target)

    async def areply(self, data: Any) -> SendReport:
        """:meth:`reply` for ``async def`` handlers (see :meth:`asend`)."""
        return await self.asend(data, connection_id=self.connection_id)

    def subscribe(self, channel: str) -> bool:
        """Join ``channel`` through the channel policy (raises ``ChannelForbidden``)."""
        return self.app.subscribe(self.session, channel)

    def unsubscribe(self, channel: str) -> bool:
        """Leave ``channel``."""
        return self.app.unsubscribe(self.session, channel)
