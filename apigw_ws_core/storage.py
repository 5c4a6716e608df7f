"""The storage interface every backend implements, and the records it deals in.

Records are frozen attrs classes, never ORM objects, so that the core stays framework-free.
Every backend (memory, Django ORM, SQLAlchemy, your own) must pass the contract suite in
:mod:`apigw_ws_core.testing` (subclass ``StorageContract``), on every database it supports.

Times are timezone-aware UTC ``datetime`` objects. User ids are strings (adapters convert
their primary keys with ``str()``).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from apigw_ws_core.errors import ApigwWsError, ConnectionExists, RateLimited, StorageUnavailable

__all__ = [
    "Admission",
    "CleanupReport",
    "ConnectPlan",
    "CounterHit",
    "HistoryMessage",
    "HistoryPage",
    "JobCounts",
    "JobPart",
    "Presence",
    "Session",
    "Storage",
    "Subscription",
    "Token",
]


@attrs.frozen(kw_only=True)
class Session:
    """One WebSocket connection, as API Gateway told us about it.

    ``channel_name`` is the channel chosen at ``$connect`` (kept for users of
    django-aws-api-gateway-websockets); the full membership lives in subscriptions.
    """

    connection_id: str
    channel_name: str
    user_id: str | None = None
    connected: bool = True
    source_ip: str = ""
    user_agent: str = ""
    stage: str = ""
    api_id: str = ""
    connected_at: datetime
    disconnected_at: datetime | None = None
    #: Connection attributes declared in ``Config.connection_attributes`` (validated
    #: ``$connect`` query parameters and headers), stored with the session.
    attributes: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class Subscription:
    """Membership of a connection in a channel (a connection may have several)."""

    connection_id: str
    channel_name: str
    user_id: str | None = None
    created_at: datetime


@attrs.frozen(kw_only=True)
class Token:
    """A row of the spent-token ledger: a connection token that a ``$connect`` redeemed.

    Tokens are signed, not stored (:mod:`apigw_ws_core.tokens`); the ledger only records
    the ones used, by ``token_hash`` (the SHA-256 hex digest of the token's signed bytes),
    so that each opens one connection. ``expires_at`` is when cleanup may remove the row
    (the token's own expiry plus a margin for clock skew). ``channel`` and ``origin``
    are informational (``None`` in rows the core writes).
    """

    token_hash: str
    user_id: str
    created_at: datetime
    expires_at: datetime
    channel: str | None = None
    origin: str | None = None


@attrs.frozen(kw_only=True)
class Presence:
    """Who is in a channel right now: distinct user ids and the number of live connections."""

    channel_name: str
    user_ids: frozenset[str]
    connection_count: int


@attrs.frozen(kw_only=True)
class HistoryMessage:
    """One message kept in a channel's history: its ``offset`` (1, 2, 3 ... within the
    ``epoch``) and the payload exactly as the application sent it (before the envelope)."""

    channel: str
    offset: int
    epoch: str
    payload: bytes
    created_at: datetime


@attrs.frozen(kw_only=True)
class HistoryPage:
    """What :meth:`Storage.read_history` found.

    ``epoch`` and ``offset`` are the channel's current position (``""`` and ``0`` if the
    channel has no history yet); ``messages`` are in offset order.
    """

    channel: str
    epoch: str
    offset: int
    messages: tuple[HistoryMessage, ...] = ()


@attrs.frozen(kw_only=True)
class CleanupReport:
    """Row counts removed (or, with ``dry_run``, that would be) by :meth:`Storage.cleanup`."""

    expired_tokens: int = 0
    stale_sessions: int = 0
    old_disconnected: int = 0
    counters: int = 0
    history_messages: int = 0


#: Statuses of a :class:`JobPart`: waiting for a worker, being sent, finished.
JOB_PENDING = "pending"
JOB_RUNNING = "running"
JOB_DONE = "done"
JOB_FAILED = "failed"
JOB_FINISHED = frozenset({JOB_DONE, JOB_FAILED})


@attrs.frozen(kw_only=True)
class JobCounts:
    """Counters of a durable send job (or of one of its parts); they add up.

    ``ambiguous`` counts recipients sent again after a worker died mid-batch: they may have
    received the message twice.
    """

    recipients: int = 0
    delivered: int = 0
    gone: int = 0
    failed: int = 0
    retried: int = 0
    throttled: int = 0
    ambiguous: int = 0

    def __add__(self, other: JobCounts) -> JobCounts:
        return JobCounts(**{k: getattr(self, k) + getattr(other, k) for k in _COUNT_FIELDS})

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return {k: getattr(self, k) for k in _COUNT_FIELDS}


_COUNT_FIELDS = ("recipients", "delivered", "gone", "failed", "retried", "throttled", "ambiguous")


@attrs.frozen(kw_only=True)
class JobPart:
    """One part of a durable send job (see :mod:`apigw_ws_core.jobs`): a keyset range of
    the job's recipients and how far sending it got.

    Part ``0`` is created when the job is enqueued; it sends the whole target, or, for a
    big one, plans the job: it splits the recipients into parts ``1..n`` (shards, each run
    by its own task) and finishes without sending itself.

    :ivar target: the send target (``channel``, ``user_id``, ``connection_id``,
        ``everyone``), JSON-serialisable.
    :ivar lower: the part's recipients come after this cursor (``None``: from the start).
    :ivar upper: ...up to and including this cursor (``None``: to the end).
    :ivar cursor: the last recipient whose batch was sent and checkpointed (``None``: none).
        Cursors are opaque strings made by the storage backend; they order recipients.
    :ivar expected: recipients the part was planned with (``0``: not known), for progress.
    :ivar runs: how many times a worker started the part (more than one: it was resumed).
    """

    job_id: str
    index: int = 0
    target: dict[str, Any] = attrs.field(factory=dict)
    lower: str | None = None
    upper: str | None = None
    cursor: str | None = None
    status: str = JOB_PENDING
    expected: int = 0
    counts: JobCounts = JobCounts()
    runs: int = 0
    first_error: str | None = None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None


@attrs.frozen(kw_only=True)
class CounterHit:
    """One rate-limit count to make inside a storage transaction (see
    :meth:`Storage.connect`), so that counting
    costs no commit of its own.

    ``key``/``window_start``/``expires_at`` are :meth:`Storage.incr_counter`'s arguments;
    past ``limit`` the hit is refused with ``RateLimited(retry_after)``.
    """

    key: str
    window_start: datetime
    expires_at: datetime
    limit: int
    retry_after: int = 1

    def check(self, count: int) -> None:
        """Raise :class:`~apigw_ws_core.errors.RateLimited` if ``count`` is past the limit."""
        if count > self.limit:
            raise RateLimited(retry_after=self.retry_after)


#: Counts one :class:`CounterHit` inside the running transaction (and checks it).
CountFunc = Callable[[CounterHit], None]


@attrs.frozen(kw_only=True)
class Admission:
    """What a ``$connect`` stores: the session and the channels it joins besides
    ``session.channel_name``. Built by the core, stored by :meth:`Storage.connect`."""

    session: Session
    channels: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class ConnectPlan:
    """Everything one ``$connect`` does in storage, in ONE transaction (one commit).

    The core builds it; a backend calls :meth:`run` inside its transaction with its
    primitives bound to that transaction. The steps, in order:

    1. count ``counters`` (rate limits; past a limit: refused);
    2. spend the ``token`` (if any) as :meth:`Storage.spend_token` does: ``admit`` gets it
       back if this call recorded it first, ``None`` if it was spent before;
    3. ``admit(token, count)`` decides (the token's user, its bindings, the channel
       policy; it may count more hits through ``count``) and returns the
       :class:`Admission`, or raises a refusal;
    4. store the session and its subscriptions, unless the connection id has a live
       session: then :class:`~apigw_ws_core.errors.ConnectionExists` is raised and
       **nothing** is changed (the whole transaction rolls back).

    A refusal in steps 1-3 (any :class:`~apigw_ws_core.errors.ApigwWsError`) commits what
    was counted and spent (a refused token stays used, a refused attempt stays counted)
    and stores nothing else; any other exception rolls everything back.
    """

    connection_id: str
    now: datetime
    admit: Callable[[Token | None, CountFunc], Admission]
    token: Token | None = None
    counters: tuple[CounterHit, ...] = ()

    def run(
        self,
        *,
        incr: Callable[[CounterHit], int],
        spend: Callable[[Token], bool],
        store: Callable[[Admission], None],
    ) -> tuple[Admission | None, ApigwWsError | None]:
        """Run the steps with a backend's primitives (all in the caller's transaction).

        :param incr: adds one to a counter and returns the new count.
        :param spend: records a token as used (``spend_token``'s contract).
        :param store: stores an admission; raises ``ConnectionExists`` when the id has a
            live session (the caller must then roll back).
        :returns: ``(admission, None)``: commit and return it; ``(None, refusal)``:
            commit, then raise ``refusal``.
        """

        def count(hit: CounterHit) -> None:
            hit.check(incr(hit))

        try:
            for hit in self.counters:
                count(hit)
            token = self.token if self.token is not None and spend(self.token) else None
            admission = self.admit(token, count)
        except ApigwWsError as refusal:
            return None, refusal
        if admission.session.connection_id != self.connection_id:
            raise ValueError("the admission is for another connection id")
        store(admission)
        return admission, None


class Storage(abc.ABC):
    """Where sessions, subscriptions, tokens, counters and gateway records live.

    Implementations must be safe to call from several threads (each call is its own unit of
    work) and must keep every method's contract below, which the contract suite checks.
    """

    # --- sessions ------------------------------------------------------------------

    @abc.abstractmethod
    def create_session(self, session: Session, channels: Sequence[str] = ()) -> None:
        """Store ``session`` (connected) and subscribe it to ``session.channel_name`` plus
        ``channels``, atomically.

        If a session with that connection id exists it is replaced (a retried ``$connect``
        must not fail) and its old subscriptions are dropped.
        """

    def connect(self, plan: ConnectPlan) -> Admission:
        """Run a ``$connect`` (counters, token, admission, session and subscriptions) as
        :class:`ConnectPlan` describes, in **one** transaction, and return the admission.

        Raises the plan's refusal (after committing what it counted and consumed), or
        :class:`~apigw_ws_core.errors.ConnectionExists` when ``plan.connection_id`` has a
        connected session (nothing changed). A disconnected session with that id is
        replaced.

        This default runs the steps through the other methods, one unit of work each
        (correct, but neither atomic nor cheap): the bundled backends override it with one
        transaction, and your own backend should too.
        """

        def live() -> bool:
            existing = self.get_session(plan.connection_id)
            return existing is not None and existing.connected

        def store(admission: Admission) -> None:
            if live():  # checked again: it may have connected meanwhile
                raise ConnectionExists()
            self.create_session(admission.session, admission.channels)

        if live():  # before anything is counted or consumed: nothing changes
            raise ConnectionExists()
        admission, refusal = plan.run(
            incr=lambda hit: self.incr_counter(hit.key, hit.window_start, hit.expires_at),
            spend=self.spend_token,
            store=store,
        )
        if refusal is not None:
            raise refusal
        assert admission is not None
        return admission

    @abc.abstractmethod
    def get_session(self, connection_id: str) -> Session | None:
        """The session with this id, connected or not, in one round trip; ``None`` if
        unknown."""

    @abc.abstractmethod
    def mark_disconnected(
        self,
        connection_ids: Iterable[str],
        at: datetime,
        *,
        connected_before: datetime | None = None,
    ) -> int:
        """Mark all these sessions disconnected in one bulk operation (one statement per
        reasonable batch), dropping their subscriptions. Idempotent: ids unknown or already
        disconnected are ignored. With ``connected_before``, sessions whose
        ``connected_at`` is not earlier are left alone (a fan-out's 410 for a connection
        whose ``$connect`` may still be running). Returns how many sessions changed from
        connected to disconnected."""

    # --- channels ------------------------------------------------------------------

    @abc.abstractmethod
    def subscribe(self, connection_id: str, channel_name: str) -> bool:
        """Add a connected session to a channel. Returns ``True`` if it was added, ``False``
        if it already was a member or the session is unknown or disconnected."""

    @abc.abstractmethod
    def unsubscribe(self, connection_id: str, channel_name: str) -> bool:
        """Remove a membership. Returns ``True`` if one was removed."""

    @abc.abstractmethod
    def channels_of(self, connection_id: str) -> list[str]:
        """Channel names this connection belongs to, sorted."""

    @abc.abstractmethod
    def iter_connection_ids(
        self,
        *,
        channel: str | None = None,
        user_id: str | None = None,
        attributes: Mapping[str, str] | None = None,
        batch_size: int = 500,
    ) -> Iterator[list[str]]:
        """Stream the ids of **connected** sessions in batches of at most ``batch_size``.

        With ``channel``: members of that channel; with ``user_id``: that user's
        connections; with both: the user's connections in the channel; with neither:
        every connected session. ``attributes`` further keeps only sessions whose
        :attr:`Session.attributes` hold every given ``name: value`` pair. Each id appears
        once. Must not load everything at once (keyset pagination or a server-side
        cursor).
        """

    @abc.abstractmethod
    def user_sessions(
        self, user_id: str, *, channel: str | None = None, limit: int = 100
    ) -> list[Session]:
        """The **connected** sessions of ``user_id`` (in ``channel`` if given), oldest
        first (by ``connected_at``, then connection id), at most ``limit``, in one query.
        Presence events use it to tell a user's first connection from a second one."""

    @abc.abstractmethod
    def count_recipients(
        self,
        *,
        channel: str | None = None,
        user_id: str | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> int:
        """How many ids :meth:`iter_connection_ids` would yield for this target now."""

    @abc.abstractmethod
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
        """One keyset page of the target of :meth:`iter_connection_ids`: at most ``limit``
        connected ids whose cursor is greater than ``after`` (if given) and at most
        ``upto`` (if given), in cursor order, with the cursor of the last one (``None`` if
        the page is empty). One indexed query; pages never overlap or skip a recipient
        that stays connected. Cursors are opaque strings that only this backend compares.
        """

    @abc.abstractmethod
    def recipient_splits(
        self,
        *,
        channel: str | None = None,
        user_id: str | None = None,
        attributes: Mapping[str, str] | None = None,
        every: int = 50_000,
    ) -> list[str]:
        """Cursors that cut the target into ranges of ``every`` recipients: the cursor of
        the ``every``-th, ``2*every``-th ... recipient, ascending (``[]`` if there are at
        most ``every``). Must not load the target at once (one keyset query per cut)."""

    # --- durable send jobs -------------------------------------------------------------

    @abc.abstractmethod
    def create_job_parts(self, parts: Sequence[JobPart]) -> int:
        """Insert the parts whose ``(job_id, index)`` does not exist yet, atomically; return
        how many were inserted (existing parts are left as they are)."""

    @abc.abstractmethod
    def get_job_parts(self, job_id: str) -> list[JobPart]:
        """Every part of a job, by index (``[]`` for an unknown job)."""

    @abc.abstractmethod
    def start_job_part(self, job_id: str, index: int, now: datetime) -> JobPart | None:
        """A worker takes a part: unless it is finished, set it ``running``, add one to
        ``runs`` and set ``updated_at``, atomically, and return it as stored after that
        (a finished part is returned unchanged; ``None`` if unknown)."""

    @abc.abstractmethod
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
        """Record progress of a running part in one atomic compare-and-set: only if the
        part is ``running`` and its cursor is still ``expected_cursor``, set ``cursor``, add
        ``add`` to its counts, keep ``first_error`` if none is stored yet, set ``expected``
        if given, ``updated_at`` to ``now``, and ``status`` if given (``done``/``failed``
        also set ``finished_at``). Returns whether it was applied: ``False`` means another
        worker has moved the part on and this one must stop."""

    @abc.abstractmethod
    def delete_jobs(self, before: datetime, *, dry_run: bool = False) -> int:
        """Delete every job none of whose parts was updated at or after ``before`` (finished
        long enough ago, or abandoned); return how many jobs (with ``dry_run``: would)."""

    def iter_connected_before(
        self,
        cutoff: datetime,
        *,
        batch_size: int = 500,
        after: str | None = None,
        upto: str | None = None,
    ) -> Iterator[list[str]]:
        """Stream the ids of **connected** sessions whose ``connected_at`` is before
        ``cutoff``, in batches of at most ``batch_size``, without loading them all (keyset
        pagination). Healing (:mod:`apigw_ws_core.heal`) asks API Gateway about these.

        ``after`` / ``upto`` keep only connection ids ``> after`` / ``<= upto`` (compared
        as the database compares the column), so that the two calls ``after=x`` and
        ``upto=x`` together yield every id once: healing starts each run at a random
        point that way.

        This default filters :meth:`iter_connection_ids` with :meth:`get_session` (one
        read per session); the bundled backends override it with one indexed query per
        batch.
        """
        for batch in self.iter_connection_ids(batch_size=batch_size):
            kept = []
            for cid in batch:
                if (after is not None and cid <= after) or (upto is not None and cid > upto):
                    continue
                session = self.get_session(cid)
                if session is not None and session.connected and session.connected_at < cutoff:
                    kept.append(cid)
            if kept:
                yield kept

    @abc.abstractmethod
    def presence(self, channel_name: str) -> Presence:
        """Distinct user ids (anonymous connections excluded) and the number of connected
        sessions in a channel."""

    # --- channel history -------------------------------------------------------------

    @abc.abstractmethod
    def append_history(
        self,
        channel: str,
        payload: bytes,
        now: datetime,
        *,
        size: int | None = None,
        ttl_seconds: int | None = None,
    ) -> tuple[int, str]:
        """Give ``payload`` the channel's next offset and keep it; return ``(offset,
        epoch)``. One unit of work (one transaction), whatever the number of recipients.

        The first append to a channel without history starts a new epoch (a new random
        string of 1-16 URL-safe characters) at offset 1. Offsets only grow, by exactly one
        per append, also under concurrency, and appends become visible in offset order
        (no reader ever sees offset ``n + 1`` without ``n``). The message expires at ``now
        + ttl_seconds`` (never, if ``None``). With ``size``, messages older than the
        newest ``size`` are removed, at the latest after 16 more appends (so the work per
        append stays bounded)."""

    @abc.abstractmethod
    def read_history(
        self, channel: str, now: datetime, *, since: int | None = None, limit: int = 100
    ) -> HistoryPage:
        """The channel's position and its unexpired messages, in offset order.

        With ``since``: the first ``limit`` messages with an offset above ``since``;
        without: the newest ``limit`` messages. Reads only (never creates an epoch)."""

    @abc.abstractmethod
    def reset_history(self, channel: str) -> None:
        """Forget the channel's messages and position: the next append starts a new
        epoch, which tells recovering clients that history no longer reaches back."""

    # --- tokens --------------------------------------------------------------------

    @abc.abstractmethod
    def spend_token(self, token: Token) -> bool:
        """Record ``token`` in the spent-token ledger: ``True`` if this call recorded it,
        ``False`` if its ``token_hash`` was recorded before (a replay).

        Under any concurrency exactly one caller gets ``True``. Rows stay until
        :meth:`cleanup` removes them after ``expires_at``.
        """

    # --- rate-limit counters ---------------------------------------------------------

    @abc.abstractmethod
    def incr_counter(self, key: str, window_start: datetime, expires_at: datetime) -> int:
        """Atomically add one to the counter ``(key, window_start)`` (creating it at 1) and
        return the new value. ``expires_at`` tells cleanup when the row may go."""

    # --- housekeeping --------------------------------------------------------------

    @abc.abstractmethod
    def cleanup(
        self,
        now: datetime,
        *,
        session_max_age_seconds: int = 7200,
        keep_disconnected_seconds: int = 86400,
        dry_run: bool = False,
    ) -> CleanupReport:
        """Remove spent tokens past their ``expires_at``, expired counters and expired history
        messages, mark connected sessions older than ``session_max_age_seconds`` (API
        Gateway's 2 h maximum) disconnected, and delete disconnected sessions older than
        ``keep_disconnected_seconds``. With ``dry_run`` count only."""

    def is_unavailable(self, error: BaseException) -> bool:
        """Whether ``error``, raised by one of this backend's methods (or by the database it
        shares with the app), means the backend could not be reached or did not answer in
        time (connection refused or lost, read timeout, pool exhausted), not a bug.

        The pipeline answers those ``503 storage_unavailable`` with ``Retry-After``; any
        other unexpected exception is a ``500``. Backends override this with their
        driver's error classes; the default recognises Python's own ``ConnectionError``
        and ``TimeoutError`` and :class:`~apigw_ws_core.errors.StorageUnavailable`.
        """
        return isinstance(error, ConnectionError | TimeoutError | StorageUnavailable)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (connection pools). Optional."""

    def describe(self) -> dict[str, Any]:
        """Short description for logs and ``apigw-ws`` diagnostics."""
        return {"backend": type(self).__name__}


def __getattr__(name: str) -> Any:
    """``apigw_ws_core.storage.GatewayRecord`` still imports: provisioning records now live
    in :mod:`apigw_ws_core.gateways` (they are not part of the ``Storage`` contract)."""
    if name == "GatewayRecord":
        from apigw_ws_core.gateways import GatewayRecord

        return GatewayRecord
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
