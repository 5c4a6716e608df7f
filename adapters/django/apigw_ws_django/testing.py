"""Test helpers for projects using apigw-ws with Django.

:class:`WebSocketTestClient` calls your WebSocket endpoints the way API Gateway does
(through Django's test :class:`~django.test.Client`, so URL resolution, middleware and the
whole pipeline run), with the integration headers of
:func:`apigw_ws_core.testing.gateway_headers` and your ``APIGW_WS['SECRET']``. Everything
your code sends to connections lands in a
:class:`~apigw_ws_core.transport.RecordingTransport` instead of AWS::

    from apigw_ws_django.testing import WebSocketTestClient

    @pytest.mark.django_db(transaction=True)
    def test_chat(django_user_model):
        alice = django_user_model.objects.create_user("alice")
        with WebSocketTestClient() as ws:                 # finds "apigw_ws:connect"
            conn = ws.connect(user=alice, channel="lobby")
            assert conn.accepted
            response = conn.send({"handler": "chat_message", "text": "hi"})
            assert response.status_code == 200
            assert conn.received == [{"type": "chat", "text": "hi"}]
            conn.disconnect()
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from django.test import Client
from django.urls import reverse

from apigw_ws_core.testing import gateway_headers, new_connection_id
from apigw_ws_core.transport import RecordingTransport, Transport
from apigw_ws_django.runtime import Runtime, get_app, get_runtime

__all__ = ["WebSocketConnection", "WebSocketTestClient"]

_FROM_SETTINGS: Any = object()


class WebSocketConnection:
    """One connection opened with :meth:`WebSocketTestClient.connect`."""

    def __init__(self, client: WebSocketTestClient, connection_id: str, response: Any):
        self.client = client
        self.connection_id = connection_id
        #: The response to ``$connect`` (2xx accepts the handshake).
        self.response = response

    @property
    def accepted(self) -> bool:
        """Whether ``$connect`` answered 2xx (API Gateway would open the socket)."""
        return 200 <= int(self.response.status_code) < 300

    def send(self, message: Any, *, route: str = "default", **kwargs: Any) -> Any:
        """Send a client message (dict/list → JSON, str, bytes) on ``route``; returns the
        response (its JSON body is what a two-way route sends back to the client)."""
        return self.client.message(self.connection_id, message, route=route, **kwargs)

    def disconnect(self, **kwargs: Any) -> Any:
        """Call ``$disconnect`` for this connection."""
        return self.client.disconnect(self.connection_id, **kwargs)

    @property
    def received(self) -> list[Any]:
        """JSON payloads pushed to this connection through the transport, in order."""
        return self.client.transport.messages_for(self.connection_id)

    def __repr__(self) -> str:
        return f"<WebSocketConnection {self.connection_id} status={self.response.status_code}>"


class WebSocketTestClient:
    """Calls the endpoints of one view as API Gateway would; records what is sent.

    :param prefix: URL prefix of the view (``"/ws/"``); found with ``reverse(namespace +
        ":connect")`` when omitted.
    :param namespace: URL namespace of the view's :meth:`urls` (default ``"apigw_ws"``).
    :param secret: the gateway secret to present (default ``APIGW_WS['SECRET']``;
        ``None`` sends none).
    :param client: a Django test client (a new one by default).
    :param transport: the transport to install while the client is active (a new
        :class:`RecordingTransport` by default).

    Use it as a context manager (or call :meth:`close`) to restore the previous transport.
    """

    def __init__(
        self,
        prefix: str | None = None,
        *,
        namespace: str = "apigw_ws",
        secret: str | None = _FROM_SETTINGS,
        client: Client | None = None,
        transport: RecordingTransport | None = None,
        stage: str = "test",
        source_ip: str = "203.0.113.10",
    ):
        if prefix is None:
            prefix = reverse(f"{namespace}:connect")[: -len("connect")]
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.secret = get_app().config.secret if secret is _FROM_SETTINGS else secret
        self.client = client or Client()
        self.transport = transport or RecordingTransport()
        self.stage = stage
        self.source_ip = source_ip
        self._runtime: Runtime | None = None
        self._previous: Transport | None = None
        self._install()

    # --- lifecycle -------------------------------------------------------------------

    def _install(self) -> None:
        """Install the transport (again, if settings changed and the apps were rebuilt)."""
        runtime = get_runtime()
        if runtime is not self._runtime:
            self._previous = runtime.set_transport(self.transport)
            self._runtime = runtime

    def close(self) -> None:
        """Put the previous transport back."""
        if self._runtime is not None and get_runtime() is self._runtime:
            self._runtime.set_transport(self._previous)
        self._runtime = None
        self._previous = None

    def __enter__(self) -> WebSocketTestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- calls -----------------------------------------------------------------------

    def headers(self, route: str, connection_id: str, **kwargs: Any) -> dict[str, str]:
        """The integration headers API Gateway sends for ``route``."""
        kwargs.setdefault("secret", self.secret)
        kwargs.setdefault("stage", self.stage)
        kwargs.setdefault("source_ip", self.source_ip)
        return gateway_headers(route, connection_id, **kwargs)

    def post(
        self,
        route: str,
        connection_id: str,
        body: bytes = b"",
        *,
        query: dict[str, str] | None = None,
        origin: str | None = None,
        headers: dict[str, str] | None = None,
        secret: str | None = _FROM_SETTINGS,
    ) -> Any:
        """One raw integration call: ``POST {prefix}{route}`` with gateway headers."""
        self._install()
        url = f"{self.prefix}{route}"
        if query:
            url += "?" + urlencode(query)
        hdrs = self.headers(
            route,
            connection_id,
            origin=origin,
            extra=headers,
            **({} if secret is _FROM_SETTINGS else {"secret": secret}),
        )
        return self.client.generic("POST", url, body, content_type="", headers=hdrs)

    def token_for(self, user: Any, *, channel: str | None = None, origin: str | None = None) -> str:
        """Issue a connection token for ``user`` (as the token view would)."""
        self._install()
        token, _ = get_app().issue_token(user.pk, channel=channel, origin=origin)
        return token

    def connect(
        self,
        *,
        user: Any = None,
        token: str | None = None,
        channel: str | None = None,
        origin: str | None = None,
        query: dict[str, str] | None = None,
        connection_id: str | None = None,
        **kwargs: Any,
    ) -> WebSocketConnection:
        """``$connect``. With ``user`` (and no ``token``) a token is issued for them first.
        ``origin`` defaults to the first of ``ALLOWED_ORIGINS``."""
        cfg = get_app().config
        if token is None and user is not None:
            token = self.token_for(user)
        params = dict(query or {})
        if token is not None:
            params[cfg.token_query_param] = token
        if channel is not None:
            params[cfg.channel_query_param] = channel
        if origin is None and cfg.allowed_origins:
            origin = cfg.allowed_origins[0]
        cid = connection_id or new_connection_id()
        response = self.post("connect", cid, query=params, origin=origin, **kwargs)
        return WebSocketConnection(self, cid, response)

    def message(
        self, connection_id: str, message: Any, *, route: str = "default", **kwargs: Any
    ) -> Any:
        """A client message from ``connection_id``."""
        if isinstance(message, bytes):
            body = message
        elif isinstance(message, str):
            body = message.encode("utf-8")
        else:
            body = json.dumps(message).encode("utf-8")
        return self.post(route, connection_id, body, **kwargs)

    def disconnect(self, connection_id: str, **kwargs: Any) -> Any:
        """``$disconnect`` for ``connection_id``."""
        return self.post("disconnect", connection_id, **kwargs)

    # --- what was sent ---------------------------------------------------------------

    @property
    def sent(self) -> list[tuple[str, Any]]:
        """Every ``(connection_id, decoded JSON)`` pushed through the transport."""
        return [(m.connection_id, m.json()) for m in self.transport.sent]

    def received(self, connection_id: str) -> list[Any]:
        """JSON payloads pushed to one connection."""
        return self.transport.messages_for(connection_id)
