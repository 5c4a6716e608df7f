"""A thread-safe in-memory :class:`~apigw_ws_core.storage.Storage`.

For tests, demos and single-process apps. Everything is lost when the process exits.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta

import attrs

from apigw_ws_core.storage import (
    CleanupReport,
    GatewayRecord,
    Presence,
    Session,
    Storage,
    Subscription,
    Token,
)

__all__ = ["MemoryStorage"]


class MemoryStorage(Storage):
    """Dicts behind one lock. Implements the full :class:`Storage` contract."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.sessions: dict[str, Session] = {}
        self.subscriptions: dict[str, dict[str, Subscription]] = {}
        self.tokens: dict[str, Token] = {}
        self.counters: dict[tuple[str, datetime], tuple[int, datetime]] = {}
        self.gateways: dict[str, GatewayRecord] = {}

    def create_session(self, session: Session, channels: Sequence[str] = ()) -> None:
        """See :meth:`Storage.create_session`."""
        with self._lock:
            self.sessions[session.connection_id] = session
            subs = {}
            for name in dict.fromkeys([session.channel_name, *channels]):
                subs[name] = Subscription(
                    connection_id=session.connection_id,
                    channel_name=name,
                    user_id=session.user_id,
                    created_at=session.connected_at,
                )
            self.subscriptions[session.connection_id] = subs

    def get_session(self, connection_id: str) -> Session | None:
        """See :meth:`Storage.get_session`."""
        with self._lock:
            return self.sessions.get(connection_id)

    def mark_disconnected(self, connection_ids: Iterable[str], at: datetime) -> int:
        """See :meth:`Storage.mark_disconnected`."""
        changed = 0
        with self._lock:
            for cid in set(connection_ids):
                session = self.sessions.get(cid)
                if session is None or not session.connected:
                    continue
                self.sessions[cid] = attrs.evolve(session, connected=False, disconnected_at=at)
                self.subscriptions.pop(cid, None)
                changed += 1
        return changed

    def subscribe(self, connection_id: str, channel_name: str) -> bool:
        """See :meth:`Storage.subscribe`."""
        with self._lock:
            session = self.sessions.get(connection_id)
            if session is None or not session.connected:
                return False
            subs = self.subscriptions.setdefault(connection_id, {})
            if channel_name in subs:
                return False
            subs[channel_name] = Subscription(
                connection_id=connection_id,
                channel_name=channel_name,
                user_id=session.user_id,
                created_at=session.connected_at,
            )
            return True

    def unsubscribe(self, connection_id: str, channel_name: str) -> bool:
        """See :meth:`Storage.unsubscribe`."""
        with self._lock:
            return self.subscriptions.get(connection_id, {}).pop(channel_name, None) is not None

    def channels_of(self, connection_id: str) -> list[str]:
        """See :meth:`Storage.channels_of`."""
        with self._lock:
            return sorted(self.subscriptions.get(connection_id, {}))

    def iter_connection_ids(
        self,
        *,
        channel: str | None = None,
        user_id: str | None = None,
        batch_size: int = 500,
    ) -> Iterator[list[str]]:
        """See :meth:`Storage.iter_connection_ids`."""
        with self._lock:
            ids = sorted(
                cid
                for cid, s in self.sessions.items()
                if s.connected
                and (user_id is None or s.user_id == user_id)
                and (channel is None or channel in self.subscriptions.get(cid, {}))
            )
        for i in range(0, len(ids), batch_size):
            yield ids[i : i + batch_size]

    def presence(self, channel_name: str) -> Presence:
        """See :meth:`Storage.presence`."""
        with self._lock:
            members = [
                self.sessions[cid]
                for cid, subs in self.subscriptions.items()
                if channel_name in subs and self.sessions[cid].connected
            ]
        return Presence(
            channel_name=channel_name,
            user_ids=frozenset(s.user_id for s in members if s.user_id is not None),
            connection_count=len(members),
        )

    def store_token(self, token: Token) -> None:
        """See :meth:`Storage.store_token`."""
        with self._lock:
            if token.token_hash in self.tokens:
                raise ValueError("token hash exists")
            self.tokens[token.token_hash] = token

    def consume_token(self, token_hash: str, now: datetime) -> Token | None:
        """See :meth:`Storage.consume_token`."""
        with self._lock:
            token = self.tokens.pop(token_hash, None)
        if token is None or token.expires_at <= now:
            return None
        return token

    def incr_counter(self, key: str, window_start: datetime, expires_at: datetime) -> int:
        """See :meth:`Storage.incr_counter`."""
        with self._lock:
            count, _ = self.counters.get((key, window_start), (0, expires_at))
            self.counters[(key, window_start)] = (count + 1, expires_at)
            return count + 1

    def get_gateway(self, name: str) -> GatewayRecord | None:
        """See :meth:`Storage.get_gateway`."""
        with self._lock:
            return self.gateways.get(name)

    def save_gateway(self, record: GatewayRecord) -> None:
        """See :meth:`Storage.save_gateway`."""
        with self._lock:
            self.gateways[record.name] = record

    def cleanup(
        self,
        now: datetime,
        *,
        session_max_age_seconds: int = 7200,
        keep_disconnected_seconds: int = 86400,
        dry_run: bool = False,
    ) -> CleanupReport:
        """See :meth:`Storage.cleanup`."""
        with self._lock:
            tokens = [h for h, t in self.tokens.items() if t.expires_at <= now]
            counters = [k for k, (_, exp) in self.counters.items() if exp <= now]
            stale_cutoff = now - timedelta(seconds=session_max_age_seconds)
            stale = [
                cid
                for cid, s in self.sessions.items()
                if s.connected and s.connected_at <= stale_cutoff
            ]
            old_cutoff = now - timedelta(seconds=keep_disconnected_seconds)
            old = [
                cid
                for cid, s in self.sessions.items()
                if not s.connected
                and s.disconnected_at is not None
                and s.disconnected_at <= old_cutoff
            ]
            if not dry_run:
                for h in tokens:
                    del self.tokens[h]
                for k in counters:
                    del self.counters[k]
                for cid in old:
                    del self.sessions[cid]
                self.mark_disconnected(stale, now)
        return CleanupReport(
            expired_tokens=len(tokens),
            stale_sessions=len(stale),
            old_disconnected=len(old),
            counters=len(counters),
        )
