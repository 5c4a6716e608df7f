"""Channel history: which channels keep it, the envelope their messages travel in, and
recovery of what a client missed.

A channel matching a :class:`HistoryRule` (``Config.history``) keeps its recent messages in
storage under an **offset** that grows by one per message, within an **epoch** (a random
string that changes when the history is reset, e.g. :meth:`Storage.reset_history`, or a new
in-memory storage). Every message sent to such a channel reaches its members in the
envelope::

    {"channel": "room-1", "offset": 42, "epoch": "Xk3v_9aQ", "data": <the message>}

A client remembers ``(epoch, offset)`` per channel, drops a message whose offset it has
seen, and after a reconnect (or a gap in offsets) sends the reserved message::

    {"action": "$recover", "channels": {"room-1": {"epoch": "Xk3v_9aQ", "offset": 41}}}

and receives, per channel, one or more frames::

    {"type": "$recovered", "channel": "room-1", "epoch": "Xk3v_9aQ", "offset": 45,
     "recovered": true, "messages": [<envelope 42>, ..., <envelope 45>], "final": true}

``recovered: false`` with a ``reason`` (``epoch_changed``, ``history_expired``) means the
history no longer reaches back: the application must reload its state; ``epoch`` and
``offset`` are then the position to continue from. A channel with no position in the request
(``null``, a client's first connection) gets its current position plus the messages sent since
this connection opened (one second of margin for clocks): those sent while its ``$connect``
was running could not be delivered. See ``docs/history.rst``.

Sending costs one storage unit of work per send (:meth:`Storage.append_history`), never one
per recipient.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import attrs

from apigw_ws_core.errors import ConfigurationError, InvalidMessage
from apigw_ws_core.storage import HistoryMessage, HistoryPage

__all__ = [
    "ENVELOPE_OVERHEAD",
    "HistoryRule",
    "RecoveryRequest",
    "envelope",
    "history_data",
    "parse_recover_request",
    "recovery_frames",
]

#: Upper bound of the bytes the envelope adds to a message (channel <= 100, epoch <= 16,
#: offset <= 20 digits, keys and punctuation).
ENVELOPE_OVERHEAD = 200
#: Most channels one ``$recover`` message may name.
MAX_RECOVER_CHANNELS = 32
#: Longest history a rule may keep, in messages / seconds.
MAX_HISTORY_SIZE = 100_000
MAX_HISTORY_TTL = 30 * 86400


def _positive(name: str, upper: int) -> Any:
    def check(instance: Any, attribute: Any, value: int | None) -> None:
        if value is None:
            return
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= upper:
            raise ConfigurationError(
                f"history {name} must be whole numbers from 1 to {upper}, not {value!r}"
            )

    return check


@attrs.frozen
class HistoryRule:
    """Channels matching the glob ``pattern`` (case-insensitive, like channel rules) keep
    their last ``size`` messages and/or those younger than ``ttl`` seconds."""

    pattern: str
    size: int | None = attrs.field(default=None, validator=_positive("size", MAX_HISTORY_SIZE))
    ttl: int | None = attrs.field(default=None, validator=_positive("ttl", MAX_HISTORY_TTL))

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.pattern, str) or not self.pattern:
            raise ConfigurationError("a history rule needs a channel name pattern")
        if self.size is None and self.ttl is None:
            raise ConfigurationError(
                f"history rule {self.pattern!r} needs a size (messages) and/or a ttl (seconds)"
            )

    def matches(self, channel: str) -> bool:
        """Whether ``channel`` keeps history under this rule."""
        return fnmatch.fnmatchcase(channel.lower(), self.pattern.lower())

    @classmethod
    def coerce(cls, value: HistoryRule | Mapping[str, Any] | str) -> HistoryRule:
        """A rule from a settings value: a rule, ``{"pattern": ..., "size": ...,
        "ttl": ...}``, or ``"pattern"`` alone is refused (it needs a bound)."""
        if isinstance(value, HistoryRule):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {"pattern", "size", "ttl"}
            if unknown:
                raise ConfigurationError(f"unknown history rule keys: {sorted(unknown)}")
            return cls(value.get("pattern", ""), value.get("size"), value.get("ttl"))
        raise ConfigurationError(
            f"history rules are mappings like {{'pattern': 'room-*', 'size': 100}}, not {value!r}"
        )


def history_rules(value: Iterable[HistoryRule | Mapping[str, Any]]) -> tuple[HistoryRule, ...]:
    """``Config.history`` converter."""
    if isinstance(value, (str, Mapping)):
        raise ConfigurationError("history must be a list of rules")
    return tuple(HistoryRule.coerce(v) for v in value)


def history_data(payload: bytes) -> bytes:
    """The JSON value a history message carries as ``data``: the payload itself when it is
    JSON (what ``app.send`` makes of dicts and lists), else the payload as a JSON string.

    Raises ``ValueError`` for bytes that are not UTF-8 (the envelope is JSON text)."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError("messages to history channels must be JSON or UTF-8 text") from exc
    try:
        json.loads(text)
    except ValueError:
        return json.dumps(text, ensure_ascii=False).encode()
    return payload


def envelope(channel: str, offset: int, epoch: str, data: bytes) -> bytes:
    """The envelope of a history channel message (``data`` from :func:`history_data`)."""
    head = json.dumps({"channel": channel, "offset": offset, "epoch": epoch})
    return head[:-1].encode() + b',"data":' + data + b"}"


@attrs.frozen
class RecoveryRequest:
    """One channel of a ``$recover`` message: the client's last position, if any."""

    channel: str
    epoch: str | None = None
    offset: int | None = None


def parse_recover_request(body: Mapping[str, Any]) -> list[RecoveryRequest]:
    """The channels and positions of a ``$recover`` message (``InvalidMessage`` if it is
    malformed)."""
    channels = body.get("channels")
    if not isinstance(channels, dict) or not 1 <= len(channels) <= MAX_RECOVER_CHANNELS:
        raise InvalidMessage(
            f"$recover needs 'channels': an object of 1-{MAX_RECOVER_CHANNELS} channel names"
        )
    out = []
    for name, position in channels.items():
        if position is None:
            out.append(RecoveryRequest(name))
            continue
        if not isinstance(position, dict):
            raise InvalidMessage("a $recover position is {'epoch': str, 'offset': int} or null")
        epoch, offset = position.get("epoch"), position.get("offset")
        if (
            not isinstance(epoch, str)
            or len(epoch) > 16
            or not isinstance(offset, int)
            or isinstance(offset, bool)
            or not 0 <= offset < 2**63
        ):
            raise InvalidMessage("a $recover position is {'epoch': str, 'offset': int} or null")
        out.append(RecoveryRequest(name, epoch, offset))
    return out


def outcome(request: RecoveryRequest, page: HistoryPage) -> tuple[bool, str | None]:
    """Whether ``page`` (read with ``since=request.offset``) recovers everything after the
    client's position: ``(True, None)`` or ``(False, reason)``."""
    if request.offset is None:
        return True, None
    fresh = request.epoch == "" and request.offset == 0  # the client saw no message yet
    if not fresh and request.epoch != page.epoch:
        return False, "epoch_changed"
    if page.offset < request.offset:
        return False, "epoch_changed"
    if page.offset == request.offset:
        return True, None
    if not page.messages or page.messages[0].offset != request.offset + 1:
        return False, "history_expired"
    return True, None


def recovery_frames(
    request: RecoveryRequest, page: HistoryPage, *, max_bytes: int
) -> Iterator[dict[str, Any] | bytes]:
    """The ``$recovered`` frames answering one channel of a ``$recover``, each at most
    ``max_bytes`` once encoded. Messages are split over frames in offset order; the last
    frame has ``"final": true``."""
    ok, reason = outcome(request, page)
    head: dict[str, Any] = {
        "type": "$recovered",
        "channel": page.channel,
        "epoch": page.epoch,
        "offset": page.offset,
        "recovered": ok,
    }
    if reason is not None:
        head["reason"] = reason
    messages: list[HistoryMessage] = list(page.messages) if ok else []
    if messages:
        head["more"] = messages[-1].offset < page.offset
    prefix = json.dumps(head)[:-1].encode() + b',"messages":['
    batch: list[bytes] = []
    size = len(prefix) + 32
    for msg in messages:
        item = envelope(msg.channel, msg.offset, msg.epoch, msg.payload)
        if batch and size + len(item) + 1 > max_bytes:
            yield prefix + b",".join(batch) + b'],"final":false}'
            batch, size = [], len(prefix) + 32
        batch.append(item)
        size += len(item) + 1
    yield prefix + b",".join(batch) + b'],"final":true}'
