"""The Flask extension: :class:`ApigwWebSocket`.

Configuration comes from ``APIGW_WS_*`` keys on ``app.config`` (one per field of
:class:`apigw_ws_core.config.Config`, plus the adapter's own keys below), with defaults set
by ``init_app`` through ``app.config.setdefault``. Everything else (verification, tokens,
limits, dispatch, fan-out) is the core's :class:`~apigw_ws_core.app.WebSocketApp`; this
module only wires it into Flask.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import attrs
from flask import Flask, current_app, has_app_context

from apigw_ws_core.app import ConnectHook, DisconnectHook, MessageHook, WebSocketApp
from apigw_ws_core.channels import ChannelPolicy
from apigw_ws_core.config import Config, RateLimit
from apigw_ws_core.errors import ConfigurationError
from apigw_ws_core.fanout import SendReport
from apigw_ws_core.handlers import Permission, WebSocketView
from apigw_ws_core.jobs import JobStatus, build_runner
from apigw_ws_core.limits import RateLimiter
from apigw_ws_core.storage import HistoryPage, Presence, Storage
from apigw_ws_core.transport import Transport

__all__ = ["ADAPTER_DEFAULTS", "EXTENSION_KEY", "ApigwWebSocket", "ApigwWsState", "user_id_of"]

F = TypeVar("F", bound=Callable[..., Any])
CurrentUserLoader = Callable[[], Any]

#: Key of the per-app state in ``app.extensions``.
EXTENSION_KEY = "apigw_ws"
PREFIX = "APIGW_WS_"

#: The adapter's own settings (not passed to the core ``Config``).
ADAPTER_DEFAULTS: dict[str, Any] = {
    #: Where API Gateway's integrations POST: ``{prefix}/connect``, ``/disconnect``,
    #: ``/default`` and ``/<custom route>``.
    "APIGW_WS_URL_PREFIX": "/ws",
    #: Path of the token endpoint; ``None`` means ``{URL_PREFIX}/token``; ``False`` disables.
    "APIGW_WS_TOKEN_PATH": None,
    #: Without Flask-WTF's CSRFProtect on the app but with Flask-WTF installed, check the
    #: CSRF token on the token endpoint ourselves (``X-CSRFToken`` header or ``csrf_token``).
    "APIGW_WS_TOKEN_CSRF": True,
    #: Serve the browser client at ``/apigw-ws/apigw-ws.js`` (blueprint ``apigw_ws_client``).
    "APIGW_WS_SERVE_CLIENT": True,
    #: Where ``send_in_background`` runs sends: ``None`` = a thread pool in this process;
    #: ``"celery"`` = durable jobs on Celery (:mod:`apigw_ws_celery`, run in an app
    #: context of this app); or a factory (or its dotted path) called with the core app.
    "APIGW_WS_BACKGROUND_RUNNER": None,
}


def _config_defaults() -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    for name, value in attrs.asdict(Config(), recurse=False).items():
        if isinstance(value, RateLimit):
            value = f"{value.limit}/{value.window}"
        defaults[PREFIX + name.upper()] = value
    return defaults


def _offer_csrf_token(app: Flask) -> None:
    """With Flask-WTF installed, the token endpoint checks a CSRF token even without
    ``CSRFProtect``: give templates Flask-WTF's ``csrf_token()`` to put in the page (``<meta
    name="csrf-token" content="{{ csrf_token() }}">``, which the browser client sends).
    ``CSRFProtect`` sets the very same global."""
    try:
        from flask_wtf.csrf import generate_csrf
    except ImportError:
        return
    app.jinja_env.globals.setdefault("csrf_token", generate_csrf)


def user_id_of(user: Any) -> str | None:
    """The string id of a user object (Flask-Login ``get_id()``, else ``.id``) or of an id."""
    if user is None:
        return None
    if isinstance(user, str | int):
        return str(user)
    get_id = getattr(user, "get_id", None)
    if callable(get_id):
        value = get_id()
        return None if value is None else str(value)
    ident = getattr(user, "id", None)
    if ident is None:
        raise TypeError(f"cannot tell the id of {type(user).__name__}: give it get_id() or .id")
    return str(ident)


@attrs.define
class ApigwWsState:
    """What ``app.extensions["apigw_ws"]`` holds for one Flask app."""

    extension: ApigwWebSocket
    core: WebSocketApp
    url_prefix: str
    token_path: str | None
    csrf_check: bool


class ApigwWebSocket:
    """Flask extension for API Gateway WebSocket backends.

    ::

        ws = ApigwWebSocket(app, storage=SqlaStorage(Session))
        # or, with an application factory:
        ws = ApigwWebSocket(storage=SqlaStorage(Session)); ws.init_app(app)

        @ws.handler("chat_message")
        def chat(ctx, message):
            ctx.send({"type": "chat", "text": message["text"]}, channel="general")

    :param storage: where sessions, tokens and counters live (required).
    :param transport: how messages reach clients (default: the Management API, see the
        core's :class:`~apigw_ws_core.http1.ManagementApiTransport`).
    :param policy: channel authorization (default: the core's ``default_policy()``).
    :param user_loader: ``user_id -> user`` for ``ctx.user``; by default Flask-Login's
        ``@login_manager.user_loader`` when the app has a ``LoginManager``.
    :param rate_limiter: e.g. :class:`apigw_ws_core.limits.RedisRateLimiter`; default:
        counters in ``storage``.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        storage: Storage | None = None,
        transport: Transport | None = None,
        policy: ChannelPolicy | None = None,
        user_loader: Callable[[str], Any] | None = None,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        self.storage = storage
        self.transport = transport
        self.policy = policy
        self.user_loader = user_loader
        self.rate_limiter = rate_limiter
        self._setup: list[Callable[[WebSocketApp], Any]] = []
        self._current_user_loader: CurrentUserLoader | None = None
        self._apps: list[ApigwWsState] = []
        self._lock = threading.Lock()
        if app is not None:
            self.init_app(app)

    # --- setup ---------------------------------------------------------------------

    def init_app(self, app: Flask) -> None:
        """Read ``APIGW_WS_*`` config, build the core app, register the blueprints, the
        CSRF exemption and the ``flask apigw-ws`` CLI group.

        :raises RuntimeError: if an ``ApigwWebSocket`` is already registered on ``app``.
        :raises ConfigurationError: for missing storage or secret, unknown or invalid keys.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "An ApigwWebSocket instance is already registered on this Flask app. Import "
                "and use that instance instead."
            )
        if self.storage is None:
            raise ConfigurationError("ApigwWebSocket needs storage=..., e.g. SqlaStorage(Session)")
        for key, value in {**_config_defaults(), **ADAPTER_DEFAULTS}.items():
            app.config.setdefault(key, value)
        config = self._core_config(app)
        if not config.secret and not config.allow_insecure_no_secret:
            raise ConfigurationError(
                "APIGW_WS_SECRET is not set: set it to the secret API Gateway sends in "
                "X-Apigw-Ws-Secret (printed by provisioning; any value with `flask apigw-ws "
                "local`), or set APIGW_WS_ALLOW_INSECURE_NO_SECRET = True in tests only"
            )
        core = WebSocketApp(
            storage=self.storage,
            transport=self.transport,
            config=config,
            policy=self.policy,
            user_loader=self.user_loader or _flask_login_user,
            rate_limiter=self.rate_limiter,
        )
        # Background sends run in an app context: in the core's thread pool, or through
        # the configured runner (Celery).
        core.background_context = app.app_context
        core.background_runner = build_runner(
            app.config["APIGW_WS_BACKGROUND_RUNNER"], core, context=app.app_context
        )
        prefix = "/" + str(app.config["APIGW_WS_URL_PREFIX"] or "").strip("/")
        prefix = "" if prefix == "/" else prefix
        token_path = app.config["APIGW_WS_TOKEN_PATH"]
        if token_path is None:
            token_path = f"{prefix}/token"
        state = ApigwWsState(
            extension=self,
            core=core,
            url_prefix=prefix,
            token_path=token_path or None,
            csrf_check=bool(app.config["APIGW_WS_TOKEN_CSRF"]),
        )
        with self._lock:
            for step in self._setup:
                step(core)
            self._apps.append(state)
        app.extensions[EXTENSION_KEY] = state

        from apigw_ws_flask.cli import cli_group
        from apigw_ws_flask.views import register_views

        register_views(app, state)
        app.cli.add_command(cli_group)
        if state.csrf_check and state.token_path:
            _offer_csrf_token(app)

    @staticmethod
    def _core_config(app: Flask) -> Config:
        values = {
            key[len(PREFIX) :]: value
            for key, value in app.config.items()
            if key.startswith(PREFIX) and key not in ADAPTER_DEFAULTS
        }
        try:
            return Config.from_mapping(values)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{exc} (Flask config keys are APIGW_WS_<NAME>)") from exc

    def _on_every_core(self, step: Callable[[WebSocketApp], Any]) -> None:
        """Apply ``step`` to every core app now and to those created by later
        ``init_app`` calls."""
        with self._lock:
            self._setup.append(step)
            for state in self._apps:
                step(state.core)

    # --- registration --------------------------------------------------------------

    def handler(
        self, name: str | None = None, *, permission: Permission | None = None
    ) -> Callable[[F], F]:
        """Decorator: register ``func(ctx, message)`` as the handler called ``name``
        (default: the function's name). ``ctx`` is the core
        :class:`~apigw_ws_core.context.HandlerContext` (``session``, ``user``, ``body``,
        ``reply()``, ``send()``); a returned value is the reply on two-way routes."""

        def register(func: F) -> F:
            self._on_every_core(
                lambda core: core.add_handler(name or func.__name__, func, permission=permission)
            )
            return func

        return register

    def register_view(self, view: type[WebSocketView]) -> type[WebSocketView]:
        """Register the ``@handler`` methods of a class-based view (usable as a decorator)."""
        self._on_every_core(lambda core: core.register_view(view))
        return view

    def on_connect(self, func: ConnectHook) -> ConnectHook:
        """Hook called after a session is stored: ``func(session, event)``."""
        self._on_every_core(lambda core: core.on_connect(func))
        return func

    def on_message(self, func: MessageHook) -> MessageHook:
        """Hook called before each handler: ``func(ctx)``."""
        self._on_every_core(lambda core: core.on_message(func))
        return func

    def on_disconnect(self, func: DisconnectHook) -> DisconnectHook:
        """Hook called once per connection when it is marked gone:
        ``func(connection_id, event)``."""
        self._on_every_core(lambda core: core.on_disconnect(func))
        return func

    def current_user_loader(self, func: CurrentUserLoader) -> CurrentUserLoader:
        """Decorator: ``func() -> user or user id or None`` tells the token endpoint who is
        logged in. Without it the endpoint uses Flask-Login's ``current_user``."""
        self._current_user_loader = func
        return func

    # --- per-app access ------------------------------------------------------------

    def state(self, app: Flask | None = None) -> ApigwWsState:
        """The :class:`ApigwWsState` of ``app`` (default: the current app, else the only
        app this extension was initialised on)."""
        if app is None and has_app_context():
            app = current_app._get_current_object()  # type: ignore[attr-defined]
        if app is not None:
            state = app.extensions.get(EXTENSION_KEY)
            if not isinstance(state, ApigwWsState) or state.extension is not self:
                raise RuntimeError("this ApigwWebSocket was not initialised on this app")
            return state
        if len(self._apps) == 1:
            return self._apps[0]
        raise RuntimeError(
            "Working outside of application context: push an app context or pass app="
        )

    @property
    def core(self) -> WebSocketApp:
        """The core :class:`~apigw_ws_core.app.WebSocketApp` of the current app."""
        return self.state().core

    def current_user_id(self) -> str | None:
        """The logged-in user's id for the token endpoint (``None`` if anonymous)."""
        if self._current_user_loader is not None:
            return user_id_of(self._current_user_loader())
        try:
            from flask_login import current_user
        except ImportError:
            current_user = None
        if current_user is None or getattr(current_app, "login_manager", None) is None:
            raise ConfigurationError(
                "the token endpoint needs to know who is logged in: set up Flask-Login or "
                "register a function with @ws.current_user_loader"
            )
        if not current_user.is_authenticated:
            return None
        return user_id_of(current_user)

    # --- sending -------------------------------------------------------------------

    def send(
        self,
        data: Any,
        *,
        channel: str | None = None,
        user: Any = None,
        connection_id: str | None = None,
        everyone: bool = False,
        exclude: str | Iterable[str] | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> SendReport:
        """Send ``data`` (dict/list → JSON, str, bytes) to a channel, a user (object or id),
        one connection, or ``everyone``; blocks until done and returns the
        :class:`~apigw_ws_core.fanout.SendReport`. ``exclude`` leaves connection ids out
        (``exclude=ctx.connection_id``: everyone but the sender); ``attributes`` keeps only
        connections with those connection attributes."""
        return self.core.send(
            data,
            channel=channel,
            user_id=user_id_of(user),
            connection_id=connection_id,
            everyone=everyone,
            exclude=exclude,
            attributes=attributes,
        )

    def send_in_background(
        self,
        data: Any,
        *,
        channel: str | None = None,
        user: Any = None,
        connection_id: str | None = None,
        everyone: bool = False,
        exclude: str | Iterable[str] | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> Any:
        """Like :meth:`send`, off the request path: on a worker thread inside an app
        context (returns a ``Future[SendReport]``), or, with
        ``APIGW_WS_BACKGROUND_RUNNER = "celery"``, as a durable Celery job (returns a
        :class:`~apigw_ws_core.jobs.JobHandle`)."""
        return self.core.send_in_background(
            data,
            channel=channel,
            user_id=user_id_of(user),
            connection_id=connection_id,
            everyone=everyone,
            exclude=exclude,
            attributes=attributes,
        )

    def job_status(self, job_id: str) -> JobStatus | None:
        """The status of a durable send job (``None`` if unknown)."""
        return self.core.job_status(job_id)

    def history(self, channel: str, since: int | None = None, limit: int = 100) -> HistoryPage:
        """The kept messages of a history channel (see ``WebSocketApp.history``)."""
        return self.core.history(channel, since=since, limit=limit)

    def presence(self, channel: str) -> Presence:
        """Who is in ``channel`` now (distinct user ids, connection count)."""
        return self.core.storage.presence(channel)

    def disconnect(self, connection_id: str) -> bool:
        """Close a connection through the Management API and mark it gone."""
        return self.core.disconnect(connection_id)


def _flask_login_user(user_id: str) -> Any:
    """``ctx.user`` through Flask-Login's ``@login_manager.user_loader`` (if any)."""
    manager = getattr(current_app, "login_manager", None) if has_app_context() else None
    loader = getattr(manager, "_user_callback", None)
    return loader(user_id) if loader is not None else None
