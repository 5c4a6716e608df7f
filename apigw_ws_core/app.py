"""The one pipeline every adapter calls: :meth:`WebSocketApp.handle` ``(event) -> Reply``.

Order for every event: **verify** (the call came from our API Gateway) → **limit** → the
event's own step (connect / message / disconnect). Every rejection is a
:class:`~apigw_ws_core.errors.RequestError`, turned into a 4xx JSON reply here and nowhere
else, and is logged without secrets. Rejections happen before any write.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import attrs

from apigw_ws_core.channels import ChannelPolicy, default_policy, validate_channel
from apigw_ws_core.config import Config
from apigw_ws_core.context import HandlerContext
from apigw_ws_core.errors import (
    ConfigurationError,
    Forbidden,
    GoneError,
    HandlerFailed,
    HandlerForbidden,
    InvalidJson,
    InvalidMessage,
    OriginNotAllowed,
    RequestError,
    TokenRequired,
    UnknownConnection,
)
from apigw_ws_core.events import ConnectEvent, DisconnectEvent, Event, MessageEvent
from apigw_ws_core.fanout import SendJob, SendReport, check_size, fanout
from apigw_ws_core.handlers import HandlerFunc, HandlerRegistry, Permission, WebSocketView
from apigw_ws_core.limits import RateLimiter, StorageRateLimiter
from apigw_ws_core.storage import Session, Storage
from apigw_ws_core.tokens import consume_token, issue_token
from apigw_ws_core.transport import ManagementApiTransport, Transport

__all__ = ["Reply", "WebSocketApp", "encode_payload"]

log = logging.getLogger("apigw_ws")

F = TypeVar("F", bound=Callable[..., Any])
ConnectHook = Callable[[Session, ConnectEvent], None]
MessageHook = Callable[[HandlerContext], None]
DisconnectHook = Callable[[str, DisconnectEvent], None]
#: Receives a :class:`~apigw_ws_core.fanout.SendJob` (callable: ``job()`` runs it here).
BackgroundRunner = Callable[[SendJob], Any]


@attrs.frozen
class Reply:
    """A framework-neutral response: status, body bytes, headers."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(cls, status: int, data: Any, headers: dict[str, str] | None = None) -> Reply:
        """A JSON reply."""
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        return cls(status, encode_payload(data), tuple(hdrs.items()))

    @classmethod
    def from_error(cls, error: RequestError) -> Reply:
        """The reply for a rejected request."""
        return cls.json(error.status, error.as_dict(), error.headers)

    def json_body(self) -> Any:
        """The body decoded as JSON (``None`` if empty)."""
        return json.loads(self.body) if self.body else None


def encode_payload(data: Any) -> bytes:
    """bytes stay, str is UTF-8 encoded, anything else becomes compact JSON."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("utf-8")
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _json_depth_ok(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return True


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _safe(value: str, limit: int = 64) -> str:
    """A value fit for a log line: truncated, control characters escaped."""
    return value[:limit].encode("unicode_escape").decode("ascii")


class WebSocketApp:
    """An API Gateway WebSocket backend: configuration, handlers, hooks, storage, transport.

    :param storage: where sessions, tokens and counters live.
    :param transport: how messages reach connections; by default a
        :class:`~apigw_ws_core.transport.ManagementApiTransport` built on first send from
        ``config.management_endpoint`` or the stored gateway record.
    :param policy: the channel authorization policy (default: :func:`default_policy`).
    :param user_loader: ``user_id -> user object`` for ``context.user``.
    :param rate_limiter: defaults to counters in ``storage``.
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
        clock: Callable[[], datetime] = _utcnow,
    ):
        self.storage = storage
        self.config = config or Config()
        self.policy = policy or default_policy()
        self.user_loader = user_loader
        self.rate_limiter = rate_limiter or StorageRateLimiter(storage)
        self.clock = clock
        self.handlers = HandlerRegistry()
        self._transport = transport
        self._transport_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self.background_runner: BackgroundRunner | None = None
        self.connect_hooks: list[ConnectHook] = []
        self.message_hooks: list[MessageHook] = []
        self.disconnect_hooks: list[DisconnectHook] = []
        if self.config.enable_subscribe:
            self.handlers.add("subscribe", _builtin_subscribe)
            self.handlers.add("unsubscribe", _builtin_unsubscribe)

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
        """Run one event through verify → limit → connect/message/disconnect."""
        try:
            self.verify(event)
            if isinstance(event, ConnectEvent):
                return self._connect(event)
            if isinstance(event, MessageEvent):
                return self._message(event)
            return self._disconnect(event)
        except RequestError as error:
            level = logging.ERROR if error.status >= 500 else logging.WARNING
            log.log(
                level,
                "rejected %s connection=%s ip=%s: %s (%s)",
                event.event_type,
                _safe(event.connection_id),
                _safe(event.source_ip),
                error.code,
                error.message,
            )
            return Reply.from_error(error)

    def reject(self, error: RequestError) -> Reply:
        """The reply for an error raised before an event could be built (adapters)."""
        log.warning("rejected request: %s (%s)", error.code, error.message)
        return Reply.from_error(error)

    def verify(self, event: Event) -> None:
        """Prove the call came from our API Gateway; raise ``Forbidden`` otherwise."""
        cfg = self.config
        if event.source == "http":
            if cfg.secret:
                presented = (event.secret or "").encode("utf-8", "surrogatepass")
                if not hmac.compare_digest(presented, cfg.secret.encode("utf-8")):
                    raise Forbidden("Missing or wrong gateway secret.")
            elif not cfg.allow_insecure_no_secret:
                raise Forbidden("Gateway secret is not configured on the server.")
        if cfg.allowed_stages and event.stage not in cfg.allowed_stages:
            raise Forbidden("Stage not allowed.")
        if cfg.allowed_api_ids and event.api_id not in cfg.allowed_api_ids:
            raise Forbidden("API not allowed.")

    def _connect(self, event: ConnectEvent) -> Reply:
        cfg = self.config
        now = self.clock()
        self.rate_limiter.hit(f"connect:ip:{event.source_ip}", cfg.connect_rate_per_ip, now)
        self.check_origin(event.origin)
        channel = validate_channel(event.query.get(cfg.channel_query_param) or cfg.default_channel)
        user_id: str | None = None
        token = event.query.get(cfg.token_query_param)
        if token:
            user_id = consume_token(
                self.storage, token, now=now, channel=channel, origin=event.origin
            ).user_id
            self.rate_limiter.hit(f"connect:user:{user_id}", cfg.connect_rate_per_user, now)
        elif cfg.require_token:
            raise TokenRequired()
        self.policy.check(user_id, channel)
        session = Session(
            connection_id=event.connection_id,
            channel_name=channel,
            user_id=user_id,
            connected=True,
            source_ip=event.source_ip[:64],
            user_agent=event.user_agent[:255],
            stage=event.stage[:64],
            api_id=event.api_id[:64],
            connected_at=now,
        )
        self.storage.create_session(session)
        for hook in self.connect_hooks:
            hook(session, event)
        headers = {}
        offered = event.headers.get("sec-websocket-protocol")
        if offered:
            headers["Sec-WebSocket-Protocol"] = offered.split(",")[0].strip()
        return Reply(200, b"", tuple(headers.items()))

    def check_origin(self, origin: str | None) -> None:
        """Exact ``scheme://host[:port]`` match against ``allowed_origins`` (if set)."""
        allowed = self.config.allowed_origins
        if not allowed:
            return
        if not origin or not _origin_allowed(origin, allowed, self.config.allow_origin_wildcards):
            raise OriginNotAllowed()

    def _message(self, event: MessageEvent) -> Reply:
        cfg = self.config
        session = self.storage.get_session(event.connection_id)
        if session is None or not session.connected:
            raise UnknownConnection()
        self.rate_limiter.hit(
            f"msg:{event.connection_id}", cfg.message_rate_per_connection, self.clock()
        )
        body = self._parse(event.body)
        key = next((k for k in cfg.handler_keys if k in body), None)
        if key is None:
            raise InvalidMessage(f"Message needs one of the keys: {', '.join(cfg.handler_keys)}.")
        spec = self.handlers.get(body[key])
        ctx = HandlerContext(self, event, session, body, spec.name)
        if spec.permission is not None and not spec.permission(ctx):
            raise HandlerForbidden()
        for hook in self.message_hooks:
            hook(ctx)
        try:
            result = spec.func(ctx, body)
        except RequestError:
            raise
        except Exception as exc:
            log.exception("handler %r failed for connection %s", spec.name, event.connection_id)
            raise HandlerFailed() from exc
        if result is None:
            return Reply(200)
        return Reply.json(200, result)

    def _parse(self, raw: bytes) -> dict[str, Any]:
        try:
            text = raw.decode("utf-8")
            value = json.loads(text, parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise InvalidJson() from exc
        if not isinstance(value, dict):
            raise InvalidMessage()
        if not _json_depth_ok(value, self.config.max_json_depth):
            raise InvalidJson("Message is nested too deeply.")
        return value

    def _disconnect(self, event: DisconnectEvent) -> Reply:
        changed = self.storage.mark_disconnected([event.connection_id], self.clock())
        if changed:
            for hook in self.disconnect_hooks:
                hook(event.connection_id, event)
        return Reply(200)

    # --- channels ------------------------------------------------------------------

    def subscribe(self, session: Session, channel: str) -> bool:
        """Add a session to a channel if the policy allows (raises otherwise)."""
        self.policy.check(session.user_id, channel)
        return self.storage.subscribe(session.connection_id, channel)

    def unsubscribe(self, session: Session, channel: str) -> bool:
        """Remove a session from a channel."""
        validate_channel(channel)
        return self.storage.unsubscribe(session.connection_id, channel)

    # --- tokens --------------------------------------------------------------------

    def issue_token(
        self, user_id: Any, *, channel: str | None = None, origin: str | None = None
    ) -> tuple[str, int]:
        """Create a single-use token for ``user_id``; returns ``(token, expires_in)``.

        Rate limited per user (``token_rate_per_user``); raises ``RateLimited``.
        """
        now = self.clock()
        uid = str(user_id)
        self.rate_limiter.hit(f"token:user:{uid}", self.config.token_rate_per_user, now)
        if channel is not None:
            validate_channel(channel)
        token, _ = issue_token(
            self.storage, uid, now=now, ttl=self.config.token_ttl, channel=channel, origin=origin
        )
        return token, self.config.token_ttl

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

    def _default_transport(self) -> Transport:
        endpoint = self.config.management_endpoint
        region = self.config.region
        if not endpoint:
            record = self.storage.get_gateway(self.config.gateway_name)
            if record is not None:
                endpoint = record.management_endpoint or None
                region = region or record.region or None
        if not endpoint:
            raise ConfigurationError(
                "no Management API endpoint: set management_endpoint or provision a gateway"
            )
        return ManagementApiTransport(
            endpoint, region=region, max_connections=max(8, self.config.send_concurrency)
        )

    def recipients(
        self,
        *,
        connection_id: str | None = None,
        channel: str | None = None,
        user_id: Any = None,
        everyone: bool = False,
    ) -> Iterator[list[str]]:
        """Batches of connection ids for a target (see :meth:`send`)."""
        if connection_id is not None:
            if channel is not None or user_id is not None or everyone:
                raise ValueError("connection_id cannot be combined with other targets")
            yield [connection_id]
            return
        if channel is None and user_id is None and not everyone:
            raise ValueError("say who to send to: connection_id, channel, user_id or everyone")
        if channel is not None:
            validate_channel(channel)
        yield from self.storage.iter_connection_ids(
            channel=channel, user_id=None if user_id is None else str(user_id)
        )

    def send(
        self,
        data: Any,
        *,
        connection_id: str | None = None,
        channel: str | None = None,
        user_id: Any = None,
        everyone: bool = False,
    ) -> SendReport:
        """Send ``data`` (dict/list → JSON, str, bytes) to one connection, a channel, a
        user's connections, or every connected session. Blocks until done; see
        :meth:`send_in_background` for large sends. Raises ``PayloadTooLarge`` before any
        call if the encoded message exceeds 128 KiB."""
        payload = check_size(encode_payload(data))
        batches = self.recipients(
            connection_id=connection_id, channel=channel, user_id=user_id, everyone=everyone
        )
        cfg = self.config
        return fanout(
            self.transport,
            payload,
            batches,
            storage=self.storage,
            concurrency=1 if connection_id else cfg.send_concurrency,
            deadline=cfg.send_deadline,
            max_attempts=cfg.send_max_attempts,
        )

    def send_in_background(
        self,
        data: Any,
        *,
        connection_id: str | None = None,
        channel: str | None = None,
        user_id: Any = None,
        everyone: bool = False,
    ) -> Any:
        """Like :meth:`send`, off the request path (a handler has at most 29 s).

        The encoding, size check and target check run now, so those errors reach the
        caller. The send itself is a :class:`~apigw_ws_core.fanout.SendJob` handed to
        ``background_runner`` if set (e.g. one that enqueues ``job.as_dict()`` as a
        Celery or RQ task; its return value is returned), else run in a small thread
        pool: the result is then a ``concurrent.futures.Future[SendReport]``.
        """
        payload = check_size(encode_payload(data))
        targets = (connection_id is not None, channel is not None, user_id is not None)
        if sum(targets) + everyone == 0:
            raise ValueError("say who to send to: connection_id, channel, user_id or everyone")
        if connection_id is not None and (sum(targets) > 1 or everyone):
            raise ValueError("connection_id cannot be combined with other targets")
        if channel is not None:
            validate_channel(channel)
        job = SendJob(
            payload=payload,
            connection_id=connection_id,
            channel=channel,
            user_id=None if user_id is None else str(user_id),
            everyone=everyone,
            sender=self.send,
        )
        if self.background_runner is not None:
            return self.background_runner(job)
        with self._transport_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(2, thread_name_prefix="apigw-ws-bg")
        return self._executor.submit(job)

    def run_send_job(self, job: SendJob | dict[str, Any]) -> SendReport:
        """Run a job made by :meth:`send_in_background` (or its ``as_dict()`` form, as a
        task queue worker receives it) and return the report."""
        if isinstance(job, dict):
            job = SendJob.from_dict(job)
        return self.send(job.payload, **job.target)

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

    def close(self) -> None:
        """Stop the background executor and release the transport."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        if self._transport is not None:
            self._transport.close()


def _origin_allowed(origin: str, allowed: tuple[str, ...], wildcards: bool) -> bool:
    parts = urlsplit(origin.strip())
    if not parts.scheme or not parts.hostname or parts.path not in ("", "/"):
        return False
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    for pattern in allowed:
        p = urlsplit(pattern)
        p_port = p.port or {"http": 80, "https": 443}.get(p.scheme)
        if p.scheme != parts.scheme or p_port != port or not p.hostname:
            continue
        if p.hostname == parts.hostname:
            return True
        if wildcards and p.hostname.startswith("*."):
            suffix = p.hostname[1:]
            if parts.hostname.endswith(suffix) and len(parts.hostname) > len(suffix):
                return True
    return False


def _builtin_subscribe(ctx: HandlerContext, message: dict[str, Any]) -> Any:
    channel = message.get("channel")
    added = ctx.subscribe(validate_channel(channel))
    return {"type": "subscribed", "channel": channel, "added": added}


def _builtin_unsubscribe(ctx: HandlerContext, message: dict[str, Any]) -> Any:
    channel = message.get("channel")
    removed = ctx.unsubscribe(validate_channel(channel))
    return {"type": "unsubscribed", "channel": channel, "removed": removed}
