"""A thread-safe in-memory :class:`~apigw_ws_core.storage.Storage`.

For tests, demos and single-process apps. Everything is lost when the process exits.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs

from apigw_ws_core.errors import ConnectionExists
from apigw_ws_core.gateways import GatewayRecord
from apigw_ws_core.storage import (
    JOB_FINISHED,
    JOB_RUNNING,
    Admission,
    CleanupReport,
    ConnectPlan,
    CounterHit,
    HistoryMessage,
    HistoryPage,
    JobCounts,
    JobPart,
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
        #: channel -> (epoch, last offset); channel -> offset -> (message, expires_at)
        self.history_state: dict[str, tuple[str, int]] = {}
        self.history: dict[str, dict[int, tuple[HistoryMessage, datetime | None]]] = {}
        self.jobs: dict[str, dict[int, JobPart]] = {}

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

    def connect(self, plan: ConnectPlan) -> Admission:
        """See :meth:`Storage.connect`: all steps under the lock; on any exception other
        than a refusal, the counters and the token are put back (a rollback)."""
        with self._lock:
            undo: list[tuple[str, Any]] = []

            def incr(hit: CounterHit) -> int:
                undo.append(("counter", (hit.key, hit.window_start)))
                return self.incr_counter(hit.key, hit.window_start, hit.expires_at)

            def spend(token: Token) -> bool:
                spent = self.spend_token(token)
                if spent:
                    undo.append(("token", token.token_hash))
                return spent

            def store(admission: Admission) -> None:
                existing = self.sessions.get(plan.connection_id)
                if existing is not None and existing.connected:
                    raise ConnectionExists()
                self.create_session(admission.session, admission.channels)

            try:
                admission, refusal = plan.run(incr=incr, spend=spend, store=store)
            except BaseException:
                for kind, value in reversed(undo):
                    if kind == "counter":
                        count, expires = self.counters[value]
                        if count > 1:
                            self.counters[value] = (count - 1, expires)
                        else:
                            del self.counters[value]
                    else:
                        del self.tokens[value]
                raise
        if refusal is not None:
            raise refusal
        assert admission is not None
        return admission

    def get_session(self, connection_id: str) -> Session | None:
        """See :meth:`Storage.get_session`."""
        with self._lock:
            return self.sessions.get(connection_id)

    def mark_disconnected(
        self,
        connection_ids: Iterable[str],
        at: datetime,
        *,
        connected_before: datetime | None = None,
    ) -> int:
        """See :meth:`Storage.mark_disconnected`."""
        changed = 0
        with self._lock:
            for cid in set(connection_ids):
                session = self.sessions.get(cid)
                if session is None or not session.connected:
                    continue
                if connected_before is not None and session.connected_at >= connected_before:
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
        attributes: Mapping[str, str] | None = None,
        batch_size: int = 500,
    ) -> Iterator[list[str]]:
        """See :meth:`Storage.iter_connection_ids`."""
        ids = self._target_ids(channel, user_id, attributes)
        for i in range(0, len(ids), batch_size):
            yield ids[i : i + batch_size]

    def user_sessions(
        self, user_id: str, *, channel: str | None = None, limit: int = 100
    ) -> list[Session]:
        """See :meth:`Storage.user_sessions`."""
        with self._lock:
            found = [
                s
                for cid, s in self.sessions.items()
                if s.connected
                and s.user_id == user_id
                and (channel is None or channel in self.subscriptions.get(cid, {}))
            ]
        found.sort(key=lambda s: (s.connected_at, s.connection_id))
        return found[:limit]

    def append_history(
        self,
        channel: str,
        payload: bytes,
        now: datetime,
        *,
        size: int | None = None,
        ttl_seconds: int | None = None,
    ) -> tuple[int, str]:
        """See :meth:`Storage.append_history` (trims exactly to ``size``)."""
        expires = None if ttl_seconds is None else now + timedelta(seconds=ttl_seconds)
        with self._lock:
            epoch, last = self.history_state.get(channel) or (secrets.token_urlsafe(6), 0)
            offset = last + 1
            self.history_state[channel] = (epoch, offset)
            kept = self.history.setdefault(channel, {})
            kept[offset] = (
                HistoryMessage(
                    channel=channel, offset=offset, epoch=epoch, payload=payload, created_at=now
                ),
                expires,
            )
            if size is not None:
                for old in [o for o in kept if o <= offset - size]:
                    del kept[old]
        return offset, epoch

    def read_history(
        self, channel: str, now: datetime, *, since: int | None = None, limit: int = 100
    ) -> HistoryPage:
        """See :meth:`Storage.read_history`."""
        with self._lock:
            epoch, offset = self.history_state.get(channel) or ("", 0)
            live = sorted(
                (o, msg)
                for o, (msg, exp) in self.history.get(channel, {}).items()
                if exp is None or exp > now
            )
        if since is None:
            picked = live[-limit:] if limit > 0 else []
        else:
            picked = [item for item in live if item[0] > since][:limit]
        return HistoryPage(
            channel=channel, epoch=epoch, offset=offset, messages=tuple(m for _, m in picked)
        )

    def reset_history(self, channel: str) -> None:
        """See :meth:`Storage.reset_history`."""
        with self._lock:
            self.history_state.pop(channel, None)
            self.history.pop(channel, None)

    def _target_ids(
        self, channel: str | None, user_id: str | None, attributes: Mapping[str, str] | None
    ) -> list[str]:
        """The connected sessions a target names, by connection id (one rule for
        :meth:`iter_connection_ids`, :meth:`count_recipients` and :meth:`recipient_page`)."""
        wanted = dict(attributes or {}).items()
        with self._lock:
            return sorted(
                cid
                for cid, s in self.sessions.items()
                if s.connected
                and (user_id is None or s.user_id == user_id)
                and (channel is None or channel in self.subscriptions.get(cid, {}))
                and wanted <= s.attributes.items()
            )

    def count_recipients(
        self,
        *,
        channel: str | None = None,
        user_id: str | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> int:
        """See :meth:`Storage.count_recipients`."""
        return len(self._target_ids(channel, user_id, attributes))

    def recipient_page(
        self,
        *,
        channel: str | None = None,
        user_id: str | None = None,
        attributes: Mapping[str, str] | None = None,
        after: str | None = None,
        upto: str | None = None,
        limit: int = 500,
    ) -> tuple[list[str], str | None]:
        """See :meth:`Storage.recipient_page` (the cursor is the connection id)."""
        ids = [
            cid
            for cid in self._target_ids(channel, user_id, attributes)
            if (after is None or cid > after) and (upto is None or cid <= upto)
        ][:limit]
        return ids, (ids[-1] if ids else None)

    def recipient_splits(
        self,
        *,
        channel: str | None = None,
        user_id: str | None = None,
        attributes: Mapping[str, str] | None = None,
        every: int = 50_000,
    ) -> list[str]:
        """See :meth:`Storage.recipient_splits`."""
        ids = self._target_ids(channel, user_id, attributes)
        return [ids[i] for i in range(every - 1, len(ids) - 1, every)]

    def create_job_parts(self, parts: Sequence[JobPart]) -> int:
        """See :meth:`Storage.create_job_parts`."""
        added = 0
        with self._lock:
            for part in parts:
                job = self.jobs.setdefault(part.job_id, {})
                if part.index not in job:
                    job[part.index] = part
                    added += 1
        return added

    def get_job_parts(self, job_id: str) -> list[JobPart]:
        """See :meth:`Storage.get_job_parts`."""
        with self._lock:
            return [p for _, p in sorted(self.jobs.get(job_id, {}).items())]

    def start_job_part(self, job_id: str, index: int, now: datetime) -> JobPart | None:
        """See :meth:`Storage.start_job_part`."""
        with self._lock:
            part = self.jobs.get(job_id, {}).get(index)
            if part is None or part.status in JOB_FINISHED:
                return part
            part = attrs.evolve(part, status=JOB_RUNNING, runs=part.runs + 1, updated_at=now)
            self.jobs[job_id][index] = part
            return part

    def checkpoint_job_part(
        self,
        job_id: str,
        index: int,
        *,
        expected_cursor: str | None,
        cursor: str | None,
        add: JobCounts,
        now: datetime,
        status: str | None = None,
        first_error: str | None = None,
        expected: int | None = None,
    ) -> bool:
        """See :meth:`Storage.checkpoint_job_part`."""
        with self._lock:
            part = self.jobs.get(job_id, {}).get(index)
            if part is None or part.status != JOB_RUNNING or part.cursor != expected_cursor:
                return False
            self.jobs[job_id][index] = attrs.evolve(
                part,
                cursor=cursor,
                counts=part.counts + add,
                first_error=part.first_error or first_error,
                expected=part.expected if expected is None else expected,
                updated_at=now,
                status=status or part.status,
                finished_at=now if status in JOB_FINISHED else part.finished_at,
            )
            return True

    def delete_jobs(self, before: datetime, *, dry_run: bool = False) -> int:
        """See :meth:`Storage.delete_jobs`."""
        with self._lock:
            old = [
                job_id
                for job_id, parts in self.jobs.items()
                if all(p.updated_at < before for p in parts.values())
            ]
            if not dry_run:
                for job_id in old:
                    del self.jobs[job_id]
        return len(old)

    def iter_connected_before(
        self,
        cutoff: datetime,
        *,
        batch_size: int = 500,
        after: str | None = None,
        upto: str | None = None,
    ) -> Iterator[list[str]]:
        """See :meth:`Storage.iter_connected_before`."""
        with self._lock:
            ids = sorted(
                cid
                for cid, s in self.sessions.items()
                if s.connected
                and s.connected_at < cutoff
                and (after is None or cid > after)
                and (upto is None or cid <= upto)
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

    def spend_token(self, token: Token) -> bool:
        """See :meth:`Storage.spend_token`."""
        with self._lock:
            if token.token_hash in self.tokens:
                return False
            self.tokens[token.token_hash] = token
            return True

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
            expired = [
                (ch, o)
                for ch, kept in self.history.items()
                for o, (_, exp) in kept.items()
                if exp is not None and exp <= now
            ]
            if not dry_run:
                for ch, o in expired:
                    del self.history[ch][o]
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
            history_messages=len(expired),
        )
