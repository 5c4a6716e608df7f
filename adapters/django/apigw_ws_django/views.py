"""Django views: the endpoint API Gateway calls, class-based handlers, the token view.

::

    from apigw_ws_django import WebSocketView, handler

    class ChatView(WebSocketView):
        @handler
        def chat_message(self, request, message):
            self.websocket_session.send_message({"type": "echo", "text": message["text"]})

    urlpatterns = [path("ws/", include(ChatView.urls()))]   # connect/disconnect/default/<route>

The endpoint only translates: Django request → :func:`apigw_ws_core.events.from_http` →
:meth:`WebSocketApp.handle <apigw_ws_core.app.WebSocketApp.handle>` → Django response. It is
CSRF-exempt (API Gateway sends no cookies with messages; the shared secret proves the
caller) and never wrapped in ``ATOMIC_REQUESTS`` transactions (each storage call is its own
unit of work, and a transaction would cost extra round trips).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, include, path
from django.utils.decorators import method_decorator
from django.utils.functional import SimpleLazyObject
from django.views import View
from django.views.decorators.csrf import csrf_exempt, csrf_protect

from apigw_ws_core.app import WebSocketApp
from apigw_ws_core.context import HandlerContext
from apigw_ws_core.handlers import Permission, handler
from apigw_ws_core.handlers import WebSocketView as CoreWebSocketView
from apigw_ws_core.http import HttpRequest as CoreHttpRequest
from apigw_ws_core.http import handle_http
from apigw_ws_core.reply import Reply
from apigw_ws_core.storage import Session
from apigw_ws_core.tokens import TokenRequest, token_endpoint
from apigw_ws_django.runtime import get_app
from apigw_ws_django.signals import _current_request, current_request

if TYPE_CHECKING:
    from datetime import datetime

    from django.urls.resolvers import URLResolver

    from apigw_ws_core.fanout import SendReport

__all__ = [
    "WebSocketSessionProxy",
    "WebSocketTokenView",
    "WebSocketView",
    "handle_request",
    "handler",
    "reply_to_response",
    "websocket_urlpatterns",
]


_UNSET: Any = object()


class _AllAliases:
    """A set that contains every database alias (for ``_non_atomic_requests``)."""

    def __contains__(self, alias: object) -> bool:
        return True


def reply_to_response(reply: Reply) -> HttpResponse:
    """The Django response for a core :class:`~apigw_ws_core.reply.Reply`."""
    response = HttpResponse(reply.body, status=reply.status)
    for name, value in reply.headers:
        response[name] = value
    return response


def handle_request(app: WebSocketApp, request: HttpRequest, route: str) -> HttpResponse:
    """Translate one API Gateway integration request for ``app`` and answer it (the checks
    are :func:`apigw_ws_core.http.handle_http`'s)."""
    meta = request.META
    read, terminated = request.read, "wsgi.input" not in meta  # ASGI: the whole body
    if meta.get("wsgi.input_terminated") and not meta.get("CONTENT_LENGTH"):
        # a chunked body: Django's WSGI request reads Content-Length bytes only
        read, terminated = meta["wsgi.input"].read, True
    token = _current_request.set(request)
    try:
        reply = handle_http(
            app,
            CoreHttpRequest(
                method=request.method or "",
                route=route,
                headers=request.headers,
                query_string=meta.get("QUERY_STRING", ""),
                read=read,
                input_terminated=terminated,
            ),
        )
    finally:
        _current_request.reset(token)
    return reply_to_response(reply)


class WebSocketSessionProxy:
    """The session of the connection that sent a message, built from the core
    :class:`~apigw_ws_core.storage.Session` the pipeline already loaded (no query).

    Offers what handlers of django-aws-api-gateway-websockets used on
    ``self.websocket_session``: ``connection_id``, ``channel_name``, ``connected``,
    ``user_id`` and ``send_message(data)``. :attr:`instance` loads the ORM
    ``WebSocketSession`` row when you really need it (one query).
    """

    def __init__(self, record: Session, app: WebSocketApp):
        self.record = record
        self.app = app
        self._instance: Any = None
        self._user: Any = _UNSET

    @property
    def connection_id(self) -> str:
        """API Gateway's connection id."""
        return self.record.connection_id

    @property
    def channel_name(self) -> str:
        """The channel chosen at ``$connect``."""
        return self.record.channel_name

    @property
    def user_id(self) -> str | None:
        """The id (a string) of the user bound by the token, ``None`` if anonymous."""
        return self.record.user_id

    @property
    def connected(self) -> bool:
        """Whether the connection is open."""
        return self.record.connected

    @property
    def connected_at(self) -> datetime:
        """When the connection opened."""
        return self.record.connected_at

    @property
    def user(self) -> Any:
        """The user bound by the token (loaded on first access, one query), or ``None``."""
        if self._user is _UNSET:
            self._user = self.app.load_user(self.record.user_id)
        return self._user

    @property
    def attributes(self) -> dict[str, str]:
        """The connection attributes stored at ``$connect`` (declared in
        ``APIGW_WS["CONNECTION_ATTRIBUTES"]``)."""
        return self.record.attributes

    def send_message(self, data: Any) -> SendReport:
        """Send ``data`` (dict/list → JSON, str, bytes) to this connection now."""
        return self.app.send(data, connection_id=self.record.connection_id)

    def broadcast(self, data: Any, channel: str | None = None) -> SendReport:
        """Send ``data`` to everyone in ``channel`` (default: the ``$connect`` channel) but
        this connection (see :meth:`~apigw_ws_core.app.WebSocketApp.broadcast`)."""
        return self.app.broadcast(
            data, sender=self.record.connection_id, channel=channel or self.record.channel_name
        )

    def channels(self) -> list[str]:
        """Every channel this connection belongs to (one query)."""
        return self.app.storage.channels_of(self.record.connection_id)

    def subscribe(self, channel: str) -> bool:
        """Join ``channel`` through the channel policy (raises ``ChannelForbidden``)."""
        return self.app.subscribe(self.record, channel)

    def unsubscribe(self, channel: str) -> bool:
        """Leave ``channel``."""
        return self.app.unsubscribe(self.record, channel)

    @property
    def instance(self) -> Any:
        """The ORM ``WebSocketSession`` row (loaded on first access, one query)."""
        if self._instance is None:
            from apigw_ws_storage.django_orm.models import WebSocketSession

            self._instance = WebSocketSession.objects.get(connection_id=self.connection_id)
        return self._instance

    def __repr__(self) -> str:
        return f"<WebSocketSessionProxy {self.connection_id} channel={self.channel_name!r}>"


def _perm_check(perms: Sequence[str], *, all_required: bool) -> Permission:
    def check(ctx: HandlerContext) -> bool:
        user = ctx.user
        if user is None:
            return False
        if all_required:
            return bool(user.has_perms(list(perms)))
        return any(user.has_perm(p) for p in perms)

    return check


def _both(first: Permission | None, second: Permission) -> Permission:
    if first is None:
        return second

    def check(ctx: HandlerContext) -> bool:
        return first(ctx) and second(ctx)

    return check


class WebSocketView(CoreWebSocketView):
    """Class-based handlers for Django. Mark methods with :func:`handler`; they are called
    as ``method(self, request, message)`` with the Django request from API Gateway and the
    decoded JSON message. A new instance handles each message.

    Attributes available in handlers:

    * ``self.request`` - the Django request (``request.user`` is the connection's user);
    * ``self.websocket_session`` - :class:`WebSocketSessionProxy` (``send_message``);
    * ``self.user`` - the user bound at ``$connect`` (lazy, one query), or
      ``AnonymousUser``;
    * ``self.body`` - the message (as in django-aws-api-gateway-websockets);
    * ``self.context`` - the core :class:`~apigw_ws_core.context.HandlerContext`.

    ``permissions_required`` (any of) and ``all_permissions_required`` (all of) list
    Django permissions checked before every handler of the view, on top of each
    handler's own ``permission``; failing checks answer 403.
    """

    #: URL namespace of :meth:`urls` (``reverse("apigw_ws:connect")``).
    url_namespace: ClassVar[str] = "apigw_ws"
    permissions_required: ClassVar[Sequence[str]] = ()
    all_permissions_required: ClassVar[Sequence[str]] = ()

    def __init__(self, context: HandlerContext):
        super().__init__(context)
        self.body: dict[str, Any] = context.body
        self._proxy: WebSocketSessionProxy | None = None
        self.request: HttpRequest | None = current_request()
        if self.request is not None:
            self.request.user = SimpleLazyObject(lambda: self.user)  # type: ignore[assignment]

    @property
    def websocket_session(self) -> WebSocketSessionProxy:
        """The session of the connection that sent the message (no query)."""
        if self._proxy is None:
            self._proxy = WebSocketSessionProxy(self.context.session, self.context.app)
        return self._proxy

    @property
    def user(self) -> Any:
        """The connection's user (loaded once, lazily) or ``AnonymousUser``."""
        return self.context.user or AnonymousUser()

    def invoke(self, method_name: str, message: dict[str, Any]) -> Any:
        """Call ``method(request, message)``."""
        return getattr(self, method_name)(self.request, message)

    @classmethod
    def handler_methods(cls) -> Iterator[tuple[str, str, Permission | None]]:
        """The core's marked methods, with the view-level permission lists added."""
        view_check: Permission | None = None
        if cls.permissions_required:
            view_check = _perm_check(cls.permissions_required, all_required=False)
        if cls.all_permissions_required:
            view_check = _both(
                view_check, _perm_check(cls.all_permissions_required, all_required=True)
            )
        for wire_name, method_name, permission in super().handler_methods():
            yield (
                wire_name,
                method_name,
                (_both(permission, view_check) if view_check is not None else permission),
            )

    @classmethod
    def as_endpoint(cls) -> Callable[..., HttpResponse]:
        """The Django view function API Gateway's integrations call for this class."""

        def endpoint(request: HttpRequest, route: str) -> HttpResponse:
            return handle_request(get_app(cls), request, route)

        endpoint.__name__ = f"{cls.__name__}_endpoint"
        endpoint.__qualname__ = endpoint.__name__
        endpoint.__doc__ = f"API Gateway integration endpoint of {cls.__qualname__}."
        endpoint = csrf_exempt(endpoint)
        endpoint._non_atomic_requests = _AllAliases()  # type: ignore[attr-defined]
        return endpoint

    @classmethod
    def urls(cls, namespace: str | None = None) -> tuple[list[URLPattern], str]:
        """URL patterns for ``include()``: ``connect``, ``disconnect``, ``default`` and
        ``<route>`` for custom routes, in the namespace ``namespace`` (default
        :attr:`url_namespace`)::

            path("ws/", include(ChatView.urls()))
        """
        endpoint = cls.as_endpoint()
        patterns = [
            path("connect", endpoint, {"route": "connect"}, name="connect"),
            path("disconnect", endpoint, {"route": "disconnect"}, name="disconnect"),
            path("default", endpoint, {"route": "default"}, name="default"),
            path("<slug:route>", endpoint, name="route"),
        ]
        return patterns, namespace or cls.url_namespace


def websocket_urlpatterns(
    view: type[WebSocketView], prefix: str = "ws/", *, namespace: str | None = None
) -> list[URLResolver]:
    """``[path(prefix, include(view.urls(namespace)))]``, to add to ``urlpatterns``."""
    return [path(prefix, include(view.urls(namespace)))]


@method_decorator(csrf_protect, name="dispatch")
class WebSocketTokenView(View):
    """``POST``: a single-use connection token for the logged-in user.

    Answers ``{"token": "...", "expires_in": 60}``. CSRF-protected (send the
    ``X-CSRFToken`` header with ``fetch``); anonymous users get 401. The token is bound to
    the request's ``Origin`` (``TOKEN_BIND_ORIGIN``, on by default). Optional fields, as
    JSON or form data: ``channel`` binds the token to that channel; ``origin`` names the
    origin when the request carried none. Issuing is rate limited per user
    (``TOKEN_RATE_PER_USER``): 429 with ``Retry-After``. The rules are the core's
    :func:`apigw_ws_core.tokens.token_endpoint`.
    """

    http_method_names = ["post"]

    def post(self, request: HttpRequest) -> HttpResponse:
        """Issue a token (see :func:`apigw_ws_core.tokens.token_endpoint`)."""
        app = get_app()
        try:
            user = request.user
            user_id = user.pk if user.is_authenticated else None
        except Exception as exc:  # the session store or the user table is down: JSON 503
            return reply_to_response(app.failure_reply(exc))
        token_request = TokenRequest(
            user_id=user_id,
            headers=request.headers,
            read=request.read,
            form=request.POST.dict,
        )
        return reply_to_response(token_endpoint(app, token_request))
