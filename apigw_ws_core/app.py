"""The one pipeline every adapter calls: :meth:`WebSocketApp.handle` ``(event) -> Reply``.

Order for every event: **verify** (the call came from our API Gateway) → **limit** → the
event's own step (connect / message / disconnect). Every rejection is a
:class:`~apigw_ws_core.errors.RequestError`, turned into a 4xx JSON reply here and nowhere
else, and is logged without secrets. Rejections happen before any write.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from contextvars import ContextVar, copy_context
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import attrs

from apigw_ws_core import presence
from apigw_ws_core.asyncsupport import resolve
from apigw_ws_core.attributes import check_filter, read_attributes
from apigw_ws_core.channels import ChannelPolicy, default_policy, validate_channel
from apigw_ws_core.config import Config, RateLimit
from apigw_ws_core.context import HandlerContext
from apigw_ws_core.discovery import find_local_gateway
from apigw_ws_core.errors import (
    BadRequest,
    ChannelForbidden,
    ConfigurationError,
    DependencyUnavailable,
    Forbidden,
    GoneError,
    HandlerFailed,
    HandlerForbidden,
    InternalError,
    InvalidMessage,
    InvalidToken,
    OriginNotAllowed,
    RateLimited,
    RateLimiterUnavailable,
    RequestError,
    StorageUnavailable,
    TokenRequired,
    TooManyChannels,
    TransportError,
    TransportUnavailable,
    UnknownConnection,
)
from apigw_ws_core.events import (
    HEADER_SECRET,
    MAX_BODY_BYTES,
    ConnectEvent,
    DisconnectEvent,
    Event,
    MessageEvent,
)
from apigw_ws_core.fanout import SendJob, SendReport, check_size, fanout
from apigw_ws_core.gateways import GatewayStore
from apigw_ws_core.handlers import HandlerFunc, HandlerRegistry, Permission, WebSocketView
from apigw_ws_core.heal import MAX_CONNECTION_SECONDS, CleanupResult, HealReport, heal_order
from apigw_ws_core.history import (
    ENVELOPE_OVERHEAD,
    envelope,
    history_data,
    parse_recover_request,
    recovery_frames,
)
from apigw_ws_core.http1 import ManagementApiTransport
from apigw_ws_core.jobs import JobStatus, job_status
from apigw_ws_core.json_rules import parse_json_object
from apigw_ws_core.limits import MemoryRateLimiter, RateLimiter, StorageRateLimiter
from apigw_ws_core.observability import observe_event, observe_handler, record_cleanup
from apigw_ws_core.origins import origin_allowed, parse_origin
from apigw_ws_core.reply import Reply, encode_payload
from apigw_ws_core.storage import (
    Admission,
    ConnectPlan,
    CounterHit,
    CountFunc,
    HistoryPage,
    Session,
    Storage,
    Token,
)
from apigw_ws_core.tokens import TokenClaims, sign_token, token_keys, verify_token
from apigw_ws_core.transport import Transport
from apigw_ws_core.verify import verify_event, verify_secret

__all__ = ["WebSocketApp"]

#: The connection whose ``$connect`` is being handled in the current context, if any.
_CONNECTING: ContextVar[str | None] = ContextVar("apigw_ws_connecting", default=None)

log = logging.getLogger("apigw_ws")

F = TypeVar("F", bound=Callable[..., Any])
ConnectHook = Callable[[Session, ConnectEvent], None]
MessageHook = Callable[[HandlerContext], None]
DisconnectHook = Callable[[str, DisconnectEvent], None]
#: Receives a :class:`~apigw_ws_core.fanout.SendJob` (callable: ``job()`` runs it here).
BackgroundRunner = Callable[[SendJob], Any]


def _utcnow() -> datetime:
    return datetime.now(UTC)


#: A subprotocol we may echo: an RFC 7230 token, nothing that could split a header.
_SUBPROTOCOL_RE = re.compile(r"\A[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}\Z")


def _offered_protocols(header: str) -> list[str]:
    """The subprotocols a client offered, in order (``Sec-WebSocket-Protocol: a, b``)."""
    return [p.strip() for p in header.split(",")] if header else []


def _clean_text(value: str, limit: int) -> str:
    """``value`` fit for a storage column: printable characters only, at most ``limit``."""
    return "".join(ch for ch in value[: limit * 2] if ch.isprintable())[:limit]


def _ip_bucket(ip: str) -> str:
    """The rate-limit bucket of an address: itself for IPv4, its /64 for IPv6 (one
    client usually holds a whole /64)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)


def _safe(value: str, limit: int = 64) -> str:
    """A value fit for a log line: truncated, control characters escaped."""
    return value[:limit].encode("unicode_escape").decode("ascii")


def _with_cause(error: RequestError) -> str:
    """The error's message, and its cause when it wraps a failed dependency."""
    cause = error.__cause__
    if cause is None or not isinstance(error, DependencyUnavailable):
        return error.message
    return f"{error.message} cause: {describe_cause(cause)}"


def describe_cause(exc: BaseException) -> str:
    """``ExceptionType: first line of its message`` for a log line.

    For a database error wrapped by SQLAlchemy the driver's own message is used (its first
    line): SQLAlchemy appends the SQL statement and its parameters, which may hold token
    digests or user data and do not belong in a log.
    """
    inner = getattr(exc, "orig", None)
    source = inner if isinstance(inner, BaseException) else exc
    lines = str(source).strip().splitlines()
    text = lines[0] if lines else ""
    return f"{type(exc).__name__}: {_safe(text, 200)}" if text else type(exc).__name__


class WebSocketApp:
    """An API Gateway WebSocket backend: configuration, handlers, hooks, storage, transport.

    :param storage: where sessions, tokens and counters live.
    :param transport: how messages reach connections; by default a
        :class:`~apigw_ws_core.http1.ManagementApiTransport` built on first send from
        ``config.management_endpoint`` or the stored gateway record.
    :param policy: the channel authorization policy (default: :func:`default_policy`).
    :param user_loader: ``user_id -> user object`` for ``context.user``.
    :param rate_limiter: counts ``$connect`` attempts and token redemptions; defaults to
        counters in ``storage``, shared by every process, counted inside the ``$connect``
        transaction (no commit of their own).
    :param message_rate_limiter: counts messages per connection. Defaults to
        ``rate_limiter`` when one is given, else to a process-local
        :class:`~apigw_ws_core.limits.MemoryRateLimiter`, so that a message costs no storage
        write (one read, the session, is all). With N backend processes a connection may
        then send up to N times the limit; pass a shared limiter (Redis, Django cache) to
        count exactly.
    """

    def __init__(
        self,
        *,
        storage: Storage,
        transport: Transport | None = None,
        config: Config | None = None,
        policy: ChannelPolicy | None = None,
        user_loader: Callable[[str], Any] | None = None,
        rate_limiter: RateLimiter | None = None,
        message_rate_limiter: RateLimiter | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ):
        self.storage = storage
        self.config = config or Config()
        self.policy = policy or default_policy()
        self.user_loader = user_loader
        self.rate_limiter = rate_limiter or StorageRateLimiter(storage)
        self.message_rate_limiter = message_rate_limiter or rate_limiter or MemoryRateLimiter()
        self.clock = clock
        self.handlers = HandlerRegistry()
        self._transport = transport
        self._transport_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        #: Where :meth:`send_in_background` hands its jobs (a Celery runner, ...);
        #: ``None``: the app's own small thread pool.
        self.background_runner: BackgroundRunner | None = None
        #: A context manager factory the thread pool runs each job in (the Flask
        #: extension sets ``flask_app.app_context``).
        self.background_context: Callable[[], AbstractContextManager[Any]] | None = None
        self.connect_hooks: list[ConnectHook] = []
        self.message_hooks: list[MessageHook] = []
        self.disconnect_hooks: list[DisconnectHook] = []
        if self.config.enable_ping:
            self.handlers.add("ping", _builtin_ping, builtin=True)
        if self.config.enable_subscribe:
            self.handlers.add("subscribe", _builtin_subscribe, builtin=True)
            self.handlers.add("unsubscribe", _builtin_unsubscribe, builtin=True)

    # --- registration --------------------------------------------------------------

    def handler(
        self, name: str | None = None, *, permission: Permission | None = None
    ) -> Callable[[F], F]:
        """Decorator: register ``func(context, message)`` under ``name`` (default: its name)."""

        def register(func: F) -> F:
            self.handlers.add(name or func.__name__, func, permission)
            return func

        return register

    def add_handler(
        self, name: str, func: HandlerFunc, *, permission: Permission | None = None
    ) -> None:
        """Register a handler without a decorator."""
        self.handlers.add(name, func, permission)

    def register_view(self, view: type[WebSocketView]) -> list[str]:
        """Register every ``@handler`` method of a class-based view."""
        return self.handlers.add_view(view)

    def on_connect(self, func: ConnectHook) -> ConnectHook:
        """Hook called after a session is stored: ``func(session, event)``."""
        self.connect_hooks.append(func)
        return func

    def on_message(self, func: MessageHook) -> MessageHook:
        """Hook called before the handler runs: ``func(context)``."""
        self.message_hooks.append(func)
        return func

    def on_disconnect(self, func: DisconnectHook) -> DisconnectHook:
        """Hook called once when a connected session is marked gone:
        ``func(connection_id, event)``."""
        self.disconnect_hooks.append(func)
        return func

    def load_user(self, user_id: str | None) -> Any:
        """The user object for ``user_id`` via ``user_loader`` (``None`` if anonymous)."""
        if user_id is None or self.user_loader is None:
            return None
        return self.user_loader(user_id)

    # --- the pipeline --------------------------------------------------------------

    def handle(self, event: Event) -> Reply:
        """Run one event through verify → limit → connect/message/disconnect.

        Each event ends with one structured log record (and, when OpenTelemetry is
        instrumented, a span and metrics): :mod:`apigw_ws_core.observability`. A failed
        dependency is a ``503`` whose record carries the cause; any other unexpected
        exception a ``500 internal_error`` (its traceback logged as well).
        """
        with observe_event(event) as observed:
            try:
                self.verify(event)
                if isinstance(event, ConnectEvent):
                    reply = self._connect(event)
                elif isinstance(event, MessageEvent):
                    reply = self._message(event)
                else:
                    reply = self._disconnect(event)
            except RequestError as error:
                observed.error_code = error.code
                observed.error_message = _with_cause(error)
                reply = Reply.from_error(error)
            except Exception as exc:
                failure = self._failure(exc, event.event_type)
                observed.error_code = failure.code
                observed.error_message = _with_cause(failure)
                reply = Reply.from_error(failure)
            observed.status = reply.status
            return reply

    def dependency_error(self, exc: BaseException) -> DependencyUnavailable | None:
        """The ``503`` error for ``exc`` when it is a dependency failure (storage, the
        Management API), else ``None``."""
        retry = self.config.unavailable_retry_after
        if isinstance(exc, DependencyUnavailable):
            return exc
        if isinstance(exc, TransportError) and not isinstance(exc, GoneError):
            return TransportUnavailable(retry_after=retry)
        if self.storage.is_unavailable(exc):
            return StorageUnavailable(retry_after=retry)
        return None

    def _failure(self, exc: Exception, where: str) -> RequestError:
        """The error to answer an unexpected exception with: the dependency's ``503``
        (its ``__cause__`` set to ``exc``), else ``500 internal_error`` after logging the
        traceback."""
        error = self.dependency_error(exc)
        if error is None:
            log.error("unexpected error handling %s: %s", where, describe_cause(exc), exc_info=exc)
            return InternalError()
        if error is not exc:
            error.__cause__ = exc
        return error

    def failure_reply(self, exc: Exception) -> Reply:
        """The JSON reply for an unexpected exception raised while serving a request
        outside the event pipeline (the token endpoint, an adapter's own lookups):
        ``503`` with a stable code and ``Retry-After`` for a failed dependency, else
        ``500 internal_error``. Logged once, with its cause and without secrets; never a
        framework's HTML error page."""
        error = self._failure(exc, "request")
        if error.status == 503:
            log.error("rejected request: %s (%s)", error.code, _with_cause(error))
        return Reply.from_error(error)

    def limit(self, limiter: RateLimiter, key: str, rate: RateLimit | None, now: datetime) -> None:
        """Count a hit on ``limiter`` (see :meth:`RateLimiter.hit`), applying the
        configured failure policy when the limiter itself fails: ``"open"`` logs a warning
        and lets the request through, ``"closed"`` raises ``RateLimiterUnavailable``."""
        if rate is None:
            return
        try:
            limiter.hit(key, rate, now)
        except RateLimited:
            raise
        except Exception as exc:
            if self.config.rate_limiter_failure == "closed":
                raise RateLimiterUnavailable(
                    retry_after=self.config.unavailable_retry_after
                ) from exc
            log.warning(
                "rate limiter %s failed; request let through (rate_limiter_failure='open'): %s",
                type(limiter).__name__,
                describe_cause(exc),
            )

    def _deferred_hits(
        self, key: str, rate: RateLimit | None, now: datetime
    ) -> tuple[CounterHit, ...]:
        """A hit on :attr:`rate_limiter` for an operation about to run in :attr:`storage`.

        When the limiter keeps its counters in that same storage, the hit is returned, for
        the storage to count inside the operation's own transaction (no commit of its
        own). Any other limiter counts it now, through :meth:`limit` (its failure policy
        applies), and nothing is returned."""
        limiter = self.rate_limiter
        if rate is None:
            return ()
        if isinstance(limiter, StorageRateLimiter) and limiter.storage is self.storage:
            return (limiter.counter_hit(key, rate, now),)
        self.limit(limiter, key, rate, now)
        return ()

    def reject(self, error: RequestError, headers: Mapping[str, str] | None = None) -> Reply:
        """The reply for an error raised before an event could be built (adapters).

        Pass the request's ``headers`` for HTTP calls: a caller that does not hold the
        gateway secret then gets ``403 forbidden`` whatever else was wrong, so that
        unauthenticated callers learn nothing about what we would accept.
        """
        if headers is not None:
            try:
                self._verify_secret({k.lower(): v for k, v in headers.items()}.get(HEADER_SECRET))
            except Forbidden as forbidden:
                error = forbidden
        level = logging.ERROR if error.status >= 500 else logging.WARNING
        log.log(level, "rejected request: %s (%s)", error.code, _with_cause(error))
        return Reply.from_error(error)

    def _verify_secret(self, presented: str | None) -> None:
        verify_secret(self.config, presented)

    def verify(self, event: Event) -> None:
        """Prove the call came from our API Gateway; raise ``Forbidden`` otherwise (see
        :func:`apigw_ws_core.verify.verify_event`)."""
        verify_event(self.config, event)

    def _connect(self, event: ConnectEvent) -> Reply:
        cfg = self.config
        now = self.clock()
        counters = self._deferred_hits(
            f"connect:ip:{_ip_bucket(event.source_ip)}", cfg.connect_rate_per_ip, now
        )
        offered = _offered_protocols(event.headers.get("sec-websocket-protocol", ""))
        authorized = _authorizer_user(event, cfg.user_from_authorizer)
        claims: TokenClaims | None = None
        channel = cfg.default_channel
        refused: RequestError | None = None
        try:  # checks that need no storage; a refusal still counts the attempt (below)
            self.check_origin(event.origin)
            repeated = event.repeated_params & {cfg.channel_query_param, cfg.token_query_param}
            if repeated:
                raise BadRequest(f"Repeated query parameter: {sorted(repeated)[0]}.")
            channel = validate_channel(
                event.query.get(cfg.channel_query_param) or cfg.default_channel
            )
            token = self._connect_token(event, offered)
            if authorized is None and token:
                claims = verify_token(token_keys(cfg), token, now=now)
            elif authorized is None and cfg.require_token:
                raise TokenRequired()
        except RequestError as error:
            if not counters:
                raise
            refused = error

        def admit(record: Token | None, count: CountFunc) -> Admission:
            """Inside the connect transaction: who connects, and may they."""
            if refused is not None:
                raise refused
            user_id = authorized
            if claims is not None:
                if record is None:  # spent before: a replay
                    raise InvalidToken()
                user_id = claims.user_id
                # a token redeemed counts, whatever follows
                key = f"token:user:{user_id}"
                for hit in self._deferred_hits(key, cfg.token_rate_per_user, now):
                    count(hit)
            if user_id is not None:
                # counted before the binding check: wrong-channel/origin attempts count too
                key = f"connect:user:{user_id}"
                for hit in self._deferred_hits(key, cfg.connect_rate_per_user, now):
                    count(hit)
            if claims is not None and not claims.binds(channel, event.origin):
                raise InvalidToken()
            self.policy.check(user_id, channel)
            attributes = read_attributes(
                cfg.connection_attributes, event.query, event.headers, event.repeated_params
            )
            return Admission(
                session=Session(
                    connection_id=event.connection_id,
                    channel_name=channel,
                    user_id=user_id,
                    connected=True,
                    source_ip=_clean_text(event.source_ip, 64),
                    user_agent=_clean_text(event.user_agent, 255),
                    stage=_clean_text(event.stage, 64),
                    api_id=_clean_text(event.api_id, 64),
                    connected_at=now,
                    attributes=attributes,
                )
            )

        session = self.storage.connect(
            ConnectPlan(
                connection_id=event.connection_id,
                now=now,
                admit=admit,
                token=claims.spent(now) if claims is not None else None,
                counters=counters,
            )
        ).session
        # API Gateway answers 410 to posts for a connection whose $connect is still running;
        # sends made by the hooks skip it instead of marking the new session gone.
        connecting = _CONNECTING.set(event.connection_id)
        try:
            self._announce(presence.announce_join, self, session, channel)
            for hook in self.connect_hooks:
                resolve(hook(session, event))
        finally:
            _CONNECTING.reset(connecting)
        headers = {}
        prefix = cfg.token_subprotocol_prefix
        # the first protocol offered that is not a token (never echo the token)
        chosen = next((p for p in offered if not (prefix and p.startswith(prefix))), None)
        if chosen is not None and _SUBPROTOCOL_RE.match(chosen):
            headers["Sec-WebSocket-Protocol"] = chosen
        return Reply(200, b"", tuple(headers.items()))

    def _connect_token(self, event: ConnectEvent, offered: list[str]) -> str | None:
        """The token of a ``$connect``: ``?ws_token=`` or an offered subprotocol
        ``{token_subprotocol_prefix}<token>``. Given twice (twice in the protocols, or in
        both places) it is a 400 before either is used, so that no two layers can pick
        different values."""
        cfg = self.config
        prefix = cfg.token_subprotocol_prefix
        carried = [p[len(prefix) :] for p in offered if prefix and p.startswith(prefix)]
        in_query = event.query.get(cfg.token_query_param)
        if len(carried) > 1 or (carried and in_query is not None):
            raise BadRequest("The token was given more than once.")
        return in_query if in_query is not None else (carried[0] if carried else None)

    def check_origin(self, origin: str | None) -> None:
        """Exact ``scheme://host[:port]`` match against ``allowed_origins`` (if set)."""
        allowed = self.config.allowed_origins
        if not allowed:
            return
        if not origin or not origin_allowed(origin, allowed, self.config.allow_origin_wildcards):
            raise OriginNotAllowed()

    def _message(self, event: MessageEvent) -> Reply:
        cfg = self.config
        session = self.storage.get_session(event.connection_id)
        if session is None or not session.connected:
            raise UnknownConnection()
        self.limit(
            self.message_rate_limiter,
            f"msg:{event.connection_id}",
            cfg.message_rate_per_connection,
            self.clock(),
        )
        body = self.parse_message(event.body)
        key = next((k for k in cfg.handler_keys if k in body), None)
        if key is None:
            raise InvalidMessage(f"Message needs one of the keys: {', '.join(cfg.handler_keys)}.")
        reserved = _RESERVED_ACTIONS.get(body[key]) if isinstance(body[key], str) else None
        if reserved is not None:
            # library requests ($recover, $presence): same route, verification, rate limit
            # and session load as any message; their answers are pushed to the connection.
            reserved(self, HandlerContext(self, event, session, body, body[key]), body)
            return Reply(200)
        spec = self.handlers.get(body[key])
        ctx = HandlerContext(self, event, session, body, spec.name)
        if spec.permission is not None and not resolve(spec.permission(ctx)):
            raise HandlerForbidden()
        for hook in self.message_hooks:
            resolve(hook(ctx))
        try:
            with observe_handler(spec.name):
                result = resolve(spec.func(ctx, body))  # async def handlers too
        except RequestError:
            raise
        except Exception as exc:
            failed = self.dependency_error(exc)
            if failed is not None:  # the database or gateway failed, not the handler
                raise failed from exc
            log.exception("handler %r failed for connection %s", spec.name, event.connection_id)
            raise HandlerFailed() from exc
        if result is None:
            return Reply(200)
        return Reply.json(200, result)

    def parse_message(self, raw: bytes) -> dict[str, Any]:
        """Parse a client JSON body into an object with the pipeline's rules (nesting limit
        checked before parsing, finite numbers, unique keys, no lone surrogates).

        Adapters use it for their own JSON endpoints (the token view) so that one rule
        applies everywhere. Raises ``InvalidJson`` or ``InvalidMessage`` (400).
        """
        return parse_json_object(raw, max_depth=self.config.max_json_depth)

    def _disconnect(self, event: DisconnectEvent) -> Reply:
        left: list[str] = []
        user_id: str | None = None
        if self.config.presence_channels:
            # presence needs who left which channels: read before the subscriptions go
            session = self.storage.get_session(event.connection_id)
            user_id = None if session is None else session.user_id
            if user_id is not None:
                left = [
                    ch
                    for ch in self.storage.channels_of(event.connection_id)
                    if self.config.has_presence(ch)
                ]
        changed = self.storage.mark_disconnected([event.connection_id], self.clock())
        if changed:
            for channel in left:
                self._announce(presence.announce_leave, self, user_id, channel)
            for hook in self.disconnect_hooks:
                resolve(hook(event.connection_id, event))
        return Reply(200)

    def _announce(self, announce: Callable[..., bool], *args: Any) -> None:
        """Send a presence event; a failure is logged, never fails the event itself (the
        session change it reports is already stored)."""
        try:
            announce(*args)
        except Exception:
            log.exception("presence event %s%r failed", announce.__name__, args[1:])

    # --- channels ------------------------------------------------------------------

    def subscribe(self, session: Session, channel: str) -> bool:
        """Add a session to a channel if the policy allows (raises otherwise). On a
        presence channel the user's first connection there is announced.

        Returns ``False`` (and writes nothing) if it already is a member. A connection in
        ``max_channels_per_connection`` channels already gets ``TooManyChannels`` (409)."""
        self.policy.check(session.user_id, channel)
        current = self.storage.channels_of(session.connection_id)
        if channel in current:
            return False
        if len(current) >= self.config.max_channels_per_connection:
            raise TooManyChannels(
                f"A connection may be in at most {self.config.max_channels_per_connection} "
                "channels; unsubscribe from one first."
            )
        added = self.storage.subscribe(session.connection_id, channel)
        if added:
            self._announce(presence.announce_join, self, session, channel)
        return added

    def unsubscribe(self, session: Session, channel: str) -> bool:
        """Remove a session from a channel (on a presence channel, the user's last
        connection there leaving is announced)."""
        validate_channel(channel)
        removed = self.storage.unsubscribe(session.connection_id, channel)
        if removed:
            self._announce(presence.announce_leave, self, session.user_id, channel)
        return removed

    # --- history -------------------------------------------------------------------

    def history(self, channel: str, since: int | None = None, limit: int = 100) -> HistoryPage:
        """The kept messages of a history channel (see :mod:`apigw_ws_core.history`): the
        first ``limit`` after offset ``since``, or the newest ``limit``; with the channel's
        current ``epoch`` and ``offset``. Payloads are the ``data`` JSON values as sent.
        Raises ``ValueError`` for a channel no ``history`` rule matches."""
        validate_channel(channel)
        if self.config.history_rule(channel) is None:
            raise ValueError(f"channel {channel!r} keeps no history (see Config.history)")
        if not 1 <= limit <= 10_000:
            raise ValueError("limit must be 1 to 10000")
        return self.storage.read_history(channel, self.clock(), since=since, limit=limit)

    def reset_history(self, channel: str) -> None:
        """Forget a channel's history; its next message starts a new epoch, so recovering
        clients are told to reload their state."""
        validate_channel(channel)
        self.storage.reset_history(channel)

    # --- tokens --------------------------------------------------------------------

    def issue_token(
        self, user_id: Any, *, channel: str | None = None, origin: str | None = None
    ) -> tuple[str, int]:
        """Create a single-use token for ``user_id``; returns ``(token, expires_in)``.

        The token is signed (:mod:`apigw_ws_core.tokens`), not stored: no storage call.
        A token bound to a ``channel`` is only issued if the channel policy lets the user
        join it (``ChannelForbidden`` otherwise). ``token_rate_per_user`` counts tokens
        where they are redeemed, at ``$connect``.
        """
        if user_id is None or not str(user_id) or len(str(user_id)) > 64:
            raise ValueError("issue_token needs a user id of 1-64 characters (not None)")
        uid = str(user_id)
        if channel is not None:
            # Refuse a channel the user may not join now, with a clean 403, rather than
            # hand out a token that can only fail at $connect.
            self.policy.check(uid, channel)
        if origin is not None and (len(origin) > 255 or parse_origin(origin) is None):
            raise BadRequest("Malformed origin.")
        ttl = self.config.token_ttl
        expires_at = self.clock() + timedelta(seconds=ttl)
        token = sign_token(
            token_keys(self.config)[0], uid, expires_at=expires_at, channel=channel, origin=origin
        )
        return token, ttl

    # --- sending -------------------------------------------------------------------

    @property
    def transport(self) -> Transport:
        """The transport, built on first use from configuration or the gateway record."""
        if self._transport is None:
            with self._transport_lock:
                if self._transport is None:
                    self._transport = self._default_transport()
        return self._transport

    @transport.setter
    def transport(self, value: Transport) -> None:
        self._transport = value

    def swap_transport(self, transport: Transport | None) -> Transport | None:
        """Put ``transport`` in place and return the previous one as it was, without
        building the default (``None`` means: build the default on next use). For test
        clients that swap in a recording transport and restore the real one after."""
        with self._transport_lock:
            previous, self._transport = self._transport, transport
        return previous

    def _default_transport(self) -> Transport:
        endpoint = self.config.management_endpoint
        region = self.config.region
        if not endpoint and isinstance(self.storage, GatewayStore):  # a provisioned API
            record = self.storage.get_gateway(self.config.gateway_name)
            if record is not None:
                endpoint = record.management_endpoint or None
                region = region or record.region or None
        verify: bool | str = True
        if not endpoint:
            local = find_local_gateway(self.config.secret)
            if local is not None:
                endpoint = local.management_endpoint
                verify = local.ca_bundle or True  # a --tls gateway's own CA bundle
        if not endpoint:
            raise ConfigurationError(
                "no Management API endpoint: start the local gateway (apigw-ws local), "
                "set management_endpoint (APIGW_WS_MANAGEMENT_ENDPOINT) or provision a gateway"
            )
        return ManagementApiTransport(
            endpoint,
            region=region,
            max_connections=max(8, self.config.send_concurrency, self.config.send_max_concurrency),
            verify=verify,
        )

    def recipients(
        self,
        *,
        connection_id: str | None = None,
        channel: str | None = None,
        user_id: Any = None,
        everyone: bool = False,
        exclude: str | Iterable[str] | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> Iterator[list[str]]:
        """Batches of connection ids for a target (see :meth:`send`), without the
        ``exclude`` ids.

        A connection whose ``$connect`` is being handled in this context is left out: API
        Gateway cannot deliver to it until the handshake completes.
        """
        _check_target(connection_id, channel, user_id, everyone)
        skip = _exclusions(exclude)
        connecting = _CONNECTING.get()
        if connecting is not None:
            skip.add(connecting)
        if connection_id is not None:
            if connection_id not in skip:
                yield [connection_id]
            return
        wanted = check_filter(attributes)
        kwargs: dict[str, Any] = {"attributes": wanted} if wanted else {}
        for batch in self.storage.iter_connection_ids(
            channel=channel, user_id=None if user_id is None else str(user_id), **kwargs
        ):
            yield [cid for cid in batch if cid not in skip] if skip else batch

    def send(
        self,
        data: Any,
        *,
        connection_id: str | None = None,
        channel: str | None = None,
        user_id: Any = None,
        everyone: bool = False,
        exclude: str | Iterable[str] | None = None,
        attributes: Mapping[str, str] | None = None,
        progress: Callable[[int], None] | None = None,
        ephemeral: bool = False,
        deadline: float | None = None,
    ) -> SendReport:
        """Send ``data`` (dict/list → JSON, str, bytes) to one connection, a channel, a
        user's connections, or every connected session. Blocks until done; see
        :meth:`send_in_background` for large sends. Raises ``PayloadTooLarge`` before any
        call if the encoded message exceeds 128 KiB.

        ``exclude`` (a connection id or several) leaves those connections out (e.g. the
        sender: ``exclude=ctx.connection_id``); ``attributes`` keeps only connections
        whose connection attributes have those values (``{"device": "mobile"}``).

        To a history channel (``Config.history``) the message is appended to the channel's
        history first (one storage write, whatever the number of recipients) and travels
        in the envelope ``{"channel", "offset", "epoch", "data"}``; with ``ephemeral`` it is
        sent as it is and not kept (presence events, typing indicators).

        ``progress`` is called with the number of recipients just finished (progress bars;
        see :func:`~apigw_ws_core.fanout.fanout`); ``deadline`` overrides
        ``Config.send_deadline`` for this send (CLIs)."""
        payload = check_size(encode_payload(data))
        batches = self.recipients(
            connection_id=connection_id,
            channel=channel,
            user_id=user_id,
            everyone=everyone,
            exclude=exclude,
            attributes=attributes,
        )
        payload, offset, epoch = self._with_history(payload, None if ephemeral else channel)
        report = self.deliver(
            payload,
            batches,
            progress=progress,
            concurrency=1 if connection_id else None,
            deadline=deadline,
        )
        if offset is None:
            return report
        return attrs.evolve(report, offset=offset, epoch=epoch)

    def deliver(
        self,
        payload: bytes,
        batches: Iterable[Sequence[str] | str],
        *,
        progress: Callable[[int], None] | None = None,
        concurrency: int | None = None,
        deadline: float | None = None,
        probe: bool = False,
        max_rate: float | None = None,
        mark_gone: bool = True,
    ) -> SendReport:
        """Post ``payload`` (encoded, size-checked) to every id in ``batches``: the one
        fan-out call built from this app's transport, storage (410s are marked gone unless
        ``mark_gone`` is false) and send settings (``Config.send_options``), with
        ``concurrency``/``deadline``/``max_rate`` overrides. Every send path ends here:
        :meth:`send`, the send commands, ``WebSocketSession.objects...send_message()``,
        durable jobs, and healing (``probe=True``: ``GET`` instead of ``POST``)."""
        options = self.config.send_options(concurrency=concurrency, deadline=deadline)
        if max_rate is not None:
            options["max_rate"] = max_rate
        return fanout(
            self.transport,
            payload,
            batches,
            storage=self.storage if mark_gone else None,
            progress=progress,
            probe=probe,
            **options,
        )

    def broadcast(self, data: Any, *, sender: str, channel: str, **target: Any) -> SendReport:
        """Send ``data`` to everyone in ``channel`` but the connection ``sender`` (the
        handler context's ``ctx.broadcast`` and the adapters' shortcuts call this).

        On a history channel the sender then gets ``{"type": "$skip", "channel",
        "offset", "epoch"}`` (a few bytes, not its own message back): the browser client
        counts that offset as seen, so the sender's own message never comes back as a gap
        or in a recovery, while its page shows what it sent itself."""
        report = self.send(data, channel=channel, exclude=sender, **target)
        if report.offset is not None:
            skip = {"type": "$skip", "channel": channel, "offset": report.offset}
            self.send({**skip, "epoch": report.epoch}, connection_id=sender)
        return report

    def prepare_payload(self, payload: bytes, channel: str | None) -> bytes:
        """The bytes a send of ``payload`` to ``channel`` posts: for a history channel
        (``Config.history``), the message is appended to the channel's history (one
        storage write) and wrapped in the envelope ``{"channel", "offset", "epoch",
        "data"}``; otherwise ``payload`` itself. Durable jobs call it once, when enqueued."""
        return self._with_history(payload, channel)[0]

    def _with_history(
        self, payload: bytes, channel: str | None
    ) -> tuple[bytes, int | None, str | None]:
        """``(bytes to post, offset, epoch)``; see :meth:`prepare_payload`."""
        rule = None if channel is None else self.config.history_rule(channel)
        if rule is None or channel is None:
            return payload, None, None
        body = history_data(payload)
        check_size(body + b"x" * ENVELOPE_OVERHEAD)
        offset, epoch = self.storage.append_history(
            channel, body, self.clock(), size=rule.size, ttl_seconds=rule.ttl
        )
        return envelope(channel, offset, epoch, body), offset, epoch

    def send_in_background(
        self,
        data: Any,
        *,
        connection_id: str | None = None,
        channel: str | None = None,
        user_id: Any = None,
        everyone: bool = False,
        exclude: str | Iterable[str] | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> Any:
        """Like :meth:`send`, off the request path (a handler has at most 29 s).

        The encoding, size check and target check run now, so those errors reach the
        caller. The send itself is a :class:`~apigw_ws_core.fanout.SendJob` handed to
        ``background_runner`` if set (e.g. one that enqueues ``job.as_dict()`` as a
        Celery or RQ task; its return value is returned), else run in a small thread
        pool: the result is then a ``concurrent.futures.Future[SendReport]``, and a send
        that raises or leaves recipients undelivered is logged at ERROR (logger
        ``apigw_ws.fanout``: target, counts, cause) whether or not the Future is read.
        """
        payload = check_size(encode_payload(data))
        _check_target(connection_id, channel, user_id, everyone)
        job = SendJob(
            payload=payload,
            connection_id=connection_id,
            channel=channel,
            user_id=None if user_id is None else str(user_id),
            everyone=everyone,
            exclude=tuple(sorted(_exclusions(exclude))),
            attributes=check_filter(attributes),
            sender=self.send,
        )
        if self.background_runner is not None:
            return self.background_runner(job)
        with self._transport_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(2, thread_name_prefix="apigw-ws-bg")
        # Same context as a direct send (a hook's send during $connect skips that id).
        # A failure is logged at ERROR whether or not anyone reads the Future.
        return self._executor.submit(copy_context().run, self._run_background, job)

    def _run_background(self, job: SendJob) -> SendReport:
        with (self.background_context or nullcontext)():
            return job.run_logged()

    def run_send_job(self, job: SendJob | dict[str, Any]) -> SendReport:
        """Run a job made by :meth:`send_in_background` (or its ``as_dict()`` form, as a
        task queue worker receives it) and return the report."""
        if isinstance(job, dict):
            job = SendJob.from_dict(job)
        return self.send(job.payload, **job.target)

    def job_status(self, job_id: str) -> JobStatus | None:
        """The status of a durable send job (see :mod:`apigw_ws_core.jobs`): running, done
        or failed, with its counts and first error; ``None`` if unknown or cleaned up."""
        return job_status(self.storage, job_id)

    def disconnect(self, connection_id: str) -> bool:
        """Close a connection through the Management API and mark it gone.

        Returns ``False`` if it was already gone."""
        try:
            self.transport.delete(connection_id)
            gone = False
        except GoneError:
            gone = True
        self.storage.mark_disconnected([connection_id], self.clock())
        return not gone

    # --- healing and housekeeping ----------------------------------------------------

    def heal(
        self, *, dry_run: bool = False, min_age: float | None = None, deadline: float | None = None
    ) -> HealReport:
        """Ask API Gateway about every session that may be stale and mark disconnected
        exactly those it no longer knows (see :mod:`apigw_ws_core.heal`). Uses the
        ``heal_*`` and ``send_*`` settings; ``min_age``/``deadline`` override them."""
        cfg = self.config
        cutoff = self.clock() - timedelta(seconds=cfg.heal_min_age if min_age is None else min_age)
        report = self.deliver(
            b"",
            heal_order(self.storage, cutoff),
            probe=True,
            max_rate=cfg.heal_max_rate,
            deadline=cfg.heal_deadline if deadline is None else deadline,
            mark_gone=not dry_run,
        )
        return HealReport.from_report(report, dry_run=dry_run)

    def cleanup(
        self,
        *,
        dry_run: bool = False,
        heal: bool = True,
        keep_disconnected: int = 86400,
        deadline: float | None = None,
    ) -> CleanupResult:
        """Housekeeping in one call, for a cron job, a management command or a scheduled
        Lambda: heal (unless ``heal=False``), mark sessions past API Gateway's 2 h
        maximum disconnected (age alone decides nothing sooner), delete disconnected
        sessions older than ``keep_disconnected`` seconds, expired tokens, counters and
        history messages, and send jobs older than ``job_keep_seconds``. With
        ``dry_run`` nothing changes and the result says what would.

        ``deadline`` bounds the healing run in seconds (a Lambda passes what is left of
        its time)."""
        healed = self.heal(dry_run=dry_run, deadline=deadline) if heal else None
        now = self.clock()
        report = self.storage.cleanup(
            now,
            session_max_age_seconds=MAX_CONNECTION_SECONDS,
            keep_disconnected_seconds=keep_disconnected,
            dry_run=dry_run,
        )
        jobs = self.storage.delete_jobs(
            now - timedelta(seconds=self.config.job_keep_seconds), dry_run=dry_run
        )
        result = CleanupResult(heal=healed, storage=report, jobs=jobs, dry_run=dry_run)
        record_cleanup(result)
        return result

    def close(self) -> None:
        """Stop the background executor and release the transport."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        if self._transport is not None:
            self._transport.close()


def _authorizer_user(event: ConnectEvent, key: str | None) -> str | None:
    """The user id an authorizer gave (``key`` of its result, case-insensitive), if any."""
    if not key:
        return None
    wanted = key.lower()
    for name, value in event.authorizer.items():
        if name.lower() == wanted and value:
            if len(value) > 64:
                raise BadRequest("Authorizer user id is longer than 64 characters.")
            return value
    return None


def _exclusions(exclude: str | Iterable[str] | None) -> set[str]:
    """The ``exclude`` argument of a send as a set of connection ids."""
    if exclude is None:
        return set()
    if isinstance(exclude, str):
        return {exclude}
    return {str(cid) for cid in exclude}


def _check_target(
    connection_id: str | None, channel: str | None, user_id: Any, everyone: bool
) -> None:
    """Refuse a send target that names nobody, mixes one connection with other targets, or
    has an invalid channel name (``ValueError`` / ``InvalidChannel``)."""
    if connection_id is not None:
        if channel is not None or user_id is not None or everyone:
            raise ValueError("connection_id cannot be combined with other targets")
        return
    if channel is None and user_id is None and not everyone:
        raise ValueError("say who to send to: connection_id, channel, user_id or everyone")
    if channel is not None:
        validate_channel(channel)


def _recover(app: WebSocketApp, ctx: HandlerContext, body: dict[str, Any]) -> None:
    """``$recover``: push, per requested channel, the messages after the client's position
    (or why they cannot be recovered). Only channels the connection belongs to are read;
    other names get ``recovered: false, reason: "not_subscribed"``."""
    requests = parse_recover_request(body)
    member_of = set(app.storage.channels_of(ctx.connection_id))
    now = app.clock()
    for request in requests:
        channel = validate_channel(request.channel)
        if channel not in member_of or app.config.history_rule(channel) is None:
            reason = "not_subscribed" if channel not in member_of else "no_history"
            ctx.reply(
                {"type": "$recovered", "channel": channel, "recovered": False, "reason": reason}
            )
            continue
        limit = app.config.history_recover_limit
        page = app.storage.read_history(channel, now, since=request.offset, limit=limit)
        if request.offset is None:
            # a first connection: what was sent since it opened (some of it while its
            # $connect ran, when it could not be delivered); duplicates drop by offset
            since = ctx.session.connected_at - timedelta(seconds=1)
            kept = tuple(m for m in page.messages if m.created_at >= since)
            page = attrs.evolve(page, messages=kept)
        for frame in recovery_frames(request, page, max_bytes=MAX_BODY_BYTES):
            ctx.reply(frame)


def _presence(app: WebSocketApp, ctx: HandlerContext, body: dict[str, Any]) -> None:
    """``$presence``: push the member list of a presence channel this connection is in."""
    channel = validate_channel(body.get("channel"))
    if not app.config.has_presence(channel):
        raise InvalidMessage("Not a presence channel.")
    if channel not in app.storage.channels_of(ctx.connection_id):
        raise ChannelForbidden("Join the channel before asking who is in it.")
    ctx.reply(presence.member_list(app, channel))


_RESERVED_ACTIONS: dict[str, Callable[[WebSocketApp, HandlerContext, dict[str, Any]], None]] = {
    "$recover": _recover,
    "$presence": _presence,
}


def _builtin_ping(ctx: HandlerContext, message: dict[str, Any]) -> Any:
    """Keepalive: any client message resets API Gateway's 10-minute idle timer."""
    return {"type": "pong"}


def _builtin_subscribe(ctx: HandlerContext, message: dict[str, Any]) -> Any:
    channel = message.get("channel")
    added = ctx.subscribe(validate_channel(channel))
    return {"type": "subscribed", "channel": channel, "added": added}


def _builtin_unsubscribe(ctx: HandlerContext, message: dict[str, Any]) -> Any:
    channel = message.get("channel")
    removed = ctx.unsubscribe(validate_channel(channel))
    return {"type": "unsubscribed", "channel": channel, "removed": removed}
