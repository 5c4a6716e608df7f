"""Presence events: who joins and leaves a channel, per user, not per connection.

On a channel matching ``Config.presence_channels`` the channel's members receive::

    {"type": "member_added", "channel": "presence-room", "user_id": "42"}
    {"type": "member_removed", "channel": "presence-room", "user_id": "42"}

when a signed-in user's **first** connection joins it (at ``$connect`` or by ``subscribe``)
and when their **last** one leaves it (``$disconnect`` or ``unsubscribe``). Anonymous
connections are not members: they get events and count in ``connections``, but are never
announced.

The joiner itself is never posted to during its own ``$connect`` (API Gateway answers 410
until the handshake completes): once open, it asks for the member list with the reserved
message ``{"action": "$presence", "channel": "presence-room"}`` and receives
``{"type": "$presence", "channel": ..., "members": [...], "connections": n}``. Anything
that changes after that read arrives as an event, so the list plus the events is complete.

Events are never kept in a channel's history (they are sent ``ephemeral``), even on a history
channel. Events are at least once: a user whose two connections join at the same instant may be
announced twice (each connection sees the other only after both are stored; the earliest
one always announces). Clients keep members as a set, which makes duplicates harmless.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from apigw_ws_core.storage import Session

if TYPE_CHECKING:
    from apigw_ws_core.app import WebSocketApp

__all__ = ["MAX_MEMBERS", "announce_join", "announce_leave", "member_list"]

#: Most user ids a ``$presence`` reply lists (``"truncated": true`` beyond).
MAX_MEMBERS = 1000


def _earlier(a: Session, b: Session) -> bool:
    return (a.connected_at, a.connection_id) < (b.connected_at, b.connection_id)


def announce_join(app: WebSocketApp, session: Session, channel: str) -> bool:
    """After ``session`` joined ``channel``: send ``member_added`` unless the user already
    had an earlier connection there. One query (the user's sessions in the channel), plus
    the send. Returns whether it announced."""
    uid = session.user_id
    if uid is None or not app.config.has_presence(channel):
        return False
    others = app.storage.user_sessions(uid, channel=channel)
    if any(o.connection_id != session.connection_id and _earlier(o, session) for o in others):
        return False
    app.send(
        {"type": "member_added", "channel": channel, "user_id": uid},
        channel=channel,
        exclude=session.connection_id,
        ephemeral=True,
    )
    return True


def announce_leave(app: WebSocketApp, user_id: str | None, channel: str) -> bool:
    """After a connection of ``user_id`` left ``channel``: send ``member_removed`` if the
    user has no connection left there. One query plus the send."""
    if user_id is None or not app.config.has_presence(channel):
        return False
    if app.storage.user_sessions(user_id, channel=channel, limit=1):
        return False
    app.send(
        {"type": "member_removed", "channel": channel, "user_id": user_id},
        channel=channel,
        ephemeral=True,
    )
    return True


def member_list(app: WebSocketApp, channel: str) -> dict[str, Any]:
    """The ``$presence`` reply for ``channel`` (one grouped query)."""
    presence = app.storage.presence(channel)
    members = sorted(presence.user_ids)
    reply: dict[str, Any] = {
        "type": "$presence",
        "channel": channel,
        "members": members[:MAX_MEMBERS],
        "connections": presence.connection_count,
    }
    if len(members) > MAX_MEMBERS:
        reply["truncated"] = True
    return reply
