"""Models of the Django ORM storage.

Names users of django-aws-api-gateway-websockets know are kept: :class:`WebSocketSession`
with ``connection_id``, ``channel_name``, ``connected`` and ``user``, ``send_message()`` on
an instance and on a queryset.

Every hot query has an index (see each model's ``Meta``):

* ``$connect``: insert a session (unique ``connection_id``) and its subscription;
* a message: fetch a session by ``connection_id`` (unique index);
* ``$disconnect``: update by ``connection_id``, delete subscriptions by ``session``;
* sending: keyset pagination over ``(channel_name, session_id)`` of subscriptions,
  ``(user, connected, id)`` and ``(connected, id)`` of sessions;
* tokens by hash (unique), counters by ``(key, window_start)`` (unique);
* cleanup by ``expires_at`` and ``(connected, connected_at / disconnected_at)``;
* channel history: the position by ``channel`` (unique), messages by ``(channel, offset)``
  (unique) and ``expires_at``.

Connection attributes are a JSON field of the session:
``WebSocketSession.objects.filter(connected=True, attributes__device="mobile")``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import models

from apigw_ws_core.storage import Session
from apigw_ws_storage.django_orm.fields import CaseSensitiveCharField

if TYPE_CHECKING:
    from apigw_ws_core.app import WebSocketApp
    from apigw_ws_core.fanout import SendReport

__all__ = [
    "ChannelHistory",
    "GatewayRecord",
    "HistoryMessage",
    "RateLimitCounter",
    "SendJobPart",
    "WebSocketSession",
    "WebSocketSessionQuerySet",
    "WebSocketSubscription",
    "WebSocketToken",
    "keyset_pages",
    "set_default_app",
]


#: Returns the app ``send_message()`` uses when none is given. The Django adapter sets it
#: (``apigw_ws_django`` in ``INSTALLED_APPS``); this app never imports the adapter.
_default_app_provider: Callable[[], WebSocketApp] | None = None


def set_default_app(provider: Callable[[], WebSocketApp] | None) -> None:
    """Set what :meth:`WebSocketSessionQuerySet.send_message` sends through by default."""
    global _default_app_provider
    _default_app_provider = provider


def _default_app() -> WebSocketApp:
    if _default_app_provider is None:
        raise RuntimeError(
            "send_message() needs an app: pass app=..., or add 'apigw_ws_django' to INSTALLED_APPS"
        )
    return _default_app_provider()


def keyset_pages(
    queryset: models.QuerySet[Any], key: str, value: str, batch_size: int
) -> Iterator[list[str]]:
    """Stream ``value`` of every row of ``queryset`` in batches of ``batch_size``, by keyset
    pagination on the unique, indexed ``key`` (never loads all rows, never ``OFFSET``)."""
    ordered = queryset.order_by(key)
    last: Any = None
    while True:
        page = ordered if last is None else ordered.filter(**{f"{key}__gt": last})
        rows = list(page.values_list(key, value)[:batch_size])
        if not rows:
            return
        last = rows[-1][0]
        yield [item for _, item in rows]
        if len(rows) < batch_size:
            return


class WebSocketSessionQuerySet(models.QuerySet["WebSocketSession"]):
    """Sessions, with bulk sending: ``WebSocketSession.objects.filter(...).send_message()``."""

    def connected(self) -> WebSocketSessionQuerySet:
        """Only sessions whose connection is open."""
        return self.filter(connected=True)

    def in_channel(self, channel_name: str) -> WebSocketSessionQuerySet:
        """Sessions subscribed to ``channel_name`` (the connect channel or a later
        ``subscribe``); ``filter(channel_name=...)`` matches the connect channel only."""
        return self.filter(subscriptions__channel_name=channel_name)

    def iter_connection_ids(self, batch_size: int = 500) -> Iterator[list[str]]:
        """Stream the connection ids of the **connected** sessions in this queryset, in
        batches, with keyset pagination on the primary key (never loads all rows)."""
        return keyset_pages(self.filter(connected=True), "pk", "connection_id", batch_size)

    def send_message(
        self,
        data: Any,
        *,
        app: WebSocketApp | None = None,
        batch_size: int = 500,
        exclude: str | Iterable[str] | None = None,
    ) -> SendReport:
        """Send ``data`` (dict/list → JSON, str, bytes) to every connected session in this
        queryset through the core fan-out (bounded concurrency, retries, gone connections
        marked disconnected). Returns the :class:`~apigw_ws_core.fanout.SendReport`.

        ``exclude`` leaves out a connection id (or several), e.g. the sender's. Uses the
        Django adapter's app unless ``app`` is given.
        """
        if exclude is not None:
            ids = [exclude] if isinstance(exclude, str) else list(exclude)
            return self.exclude(connection_id__in=ids).send_message(
                data, app=app, batch_size=batch_size
            )
        from apigw_ws_core.fanout import check_size
        from apigw_ws_core.reply import encode_payload

        app = app or _default_app()
        return app.deliver(check_size(encode_payload(data)), self.iter_connection_ids(batch_size))


class WebSocketSession(models.Model):
    """One WebSocket connection through API Gateway (one row per connection id).

    ``channel_name`` is the channel chosen at ``$connect``; the full channel membership is in
    :class:`WebSocketSubscription`. Rows stay after disconnect (``connected=False``) until
    ``apigw_ws_cleanup`` removes them.
    """

    connection_id = CaseSensitiveCharField(
        max_length=128, unique=True, help_text="API Gateway's connection id (case-sensitive)."
    )
    channel_name = CaseSensitiveCharField(
        max_length=100, help_text="The channel chosen when the connection opened."
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="websocket_sessions",
        db_index=False,  # covered by the (user, connected, id) index
        help_text="The user the connection token was issued to (empty: anonymous).",
    )
    connected = models.BooleanField(default=True)
    source_ip = models.CharField(max_length=64, blank=True, default="")
    user_agent = models.CharField(max_length=255, blank=True, default="")
    stage = models.CharField(max_length=64, blank=True, default="")
    api_id = models.CharField(max_length=64, blank=True, default="")
    connected_at = models.DateTimeField()
    disconnected_at = models.DateTimeField(null=True, blank=True)
    attributes = models.JSONField(
        default=dict,
        blank=True,
        help_text="Declared $connect query parameters and headers (name: value).",
    )

    objects = WebSocketSessionQuerySet.as_manager()

    class Meta:
        verbose_name = "WebSocket session"
        indexes = [
            models.Index(fields=["connected", "id"], name="apigw_ws_sess_conn_id"),
            models.Index(fields=["user", "connected", "id"], name="apigw_ws_sess_user"),
            models.Index(fields=["channel_name", "connected", "id"], name="apigw_ws_sess_channel"),
            models.Index(fields=["connected", "connected_at"], name="apigw_ws_sess_stale"),
            models.Index(fields=["connected", "disconnected_at"], name="apigw_ws_sess_gone"),
        ]

    def __str__(self) -> str:
        state = "connected" if self.connected else "disconnected"
        return f"{self.connection_id} ({self.channel_name}, {state})"

    def send_message(self, data: Any, *, app: WebSocketApp | None = None) -> SendReport:
        """Send ``data`` to this connection (``app.send(data, connection_id=...)``)."""
        return (app or _default_app()).send(data, connection_id=self.connection_id)

    def to_record(self) -> Session:
        """The core :class:`~apigw_ws_core.storage.Session` record of this row."""
        return Session(
            connection_id=self.connection_id,
            channel_name=self.channel_name,
            user_id=None if self.user_id is None else str(self.user_id),
            connected=self.connected,
            source_ip=self.source_ip,
            user_agent=self.user_agent,
            stage=self.stage,
            api_id=self.api_id,
            connected_at=self.connected_at,
            disconnected_at=self.disconnected_at,
            attributes={str(k): str(v) for k, v in (self.attributes or {}).items()},
        )


class WebSocketSubscription(models.Model):
    """Membership of a connected session in a channel. Deleted when the session
    disconnects, so every row belongs to a live connection."""

    session = models.ForeignKey(
        WebSocketSession,
        on_delete=models.CASCADE,
        related_name="subscriptions",
        db_index=False,  # covered by the (session, channel_name) unique constraint
    )
    channel_name = CaseSensitiveCharField(max_length=100)
    created_at = models.DateTimeField()

    class Meta:
        verbose_name = "WebSocket subscription"
        constraints = [
            models.UniqueConstraint(fields=["session", "channel_name"], name="apigw_ws_sub_unique"),
        ]
        indexes = [
            models.Index(fields=["channel_name", "session"], name="apigw_ws_sub_channel"),
        ]

    def __str__(self) -> str:
        return f"{self.channel_name}: {self.session_id}"


class WebSocketToken(models.Model):
    """The spent-token ledger: one row per connection token a ``$connect`` redeemed
    (tokens are signed, not stored; see :mod:`apigw_ws_core.tokens`). ``token_hash`` is the
    SHA-256 hex digest of the token's signed bytes, unique, so a token opens one
    connection; cleanup deletes a row once ``expires_at`` (the token's expiry plus a
    margin) has passed."""

    token_hash = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="websocket_tokens"
    )
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)
    channel = CaseSensitiveCharField(max_length=100, null=True, blank=True)
    origin = models.CharField(max_length=255, null=True, blank=True)

    class Meta:
        verbose_name = "WebSocket token"

    def __str__(self) -> str:
        return f"token {self.token_hash[:8]}… for user {self.user_id}"


class RateLimitCounter(models.Model):
    """A fixed-window rate-limit counter: hits of ``key`` in the window starting at
    ``window_start``. Incremented with one atomic upsert."""

    key = CaseSensitiveCharField(max_length=255)
    window_start = models.DateTimeField()
    count = models.PositiveIntegerField(default=0)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = "rate-limit counter"
        constraints = [
            models.UniqueConstraint(fields=["key", "window_start"], name="apigw_ws_counter_key"),
        ]

    def __str__(self) -> str:
        return f"{self.key}@{self.window_start:%Y-%m-%d %H:%M:%S}={self.count}"


class GatewayRecord(models.Model):
    """What provisioning created for one named WebSocket API and where to reach it
    (the core's :class:`~apigw_ws_core.storage.GatewayRecord`)."""

    name = models.CharField(max_length=128, unique=True)
    api_id = models.CharField(max_length=64, blank=True, default="")
    region = models.CharField(max_length=64, blank=True, default="")
    stage = models.CharField(max_length=128, blank=True, default="")
    api_endpoint = models.CharField(max_length=255, blank=True, default="")
    management_endpoint = models.CharField(max_length=255, blank=True, default="")
    custom_domain = models.CharField(max_length=255, blank=True, default="")
    resources = models.JSONField(default=dict, blank=True)
    spec_hash = models.CharField(max_length=128, blank=True, default="")
    status = models.CharField(max_length=32, default="partial")
    updated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API Gateway record"

    def __str__(self) -> str:
        return f"{self.name} ({self.api_id or 'not created'}, {self.status})"


class ChannelHistory(models.Model):
    """The history position of one channel: the epoch and the last offset given out."""

    channel = CaseSensitiveCharField(max_length=100, unique=True)
    epoch = models.CharField(max_length=16)
    last_offset = models.BigIntegerField()
    updated_at = models.DateTimeField()

    class Meta:
        verbose_name = "channel history"
        verbose_name_plural = "channel histories"

    def __str__(self) -> str:
        return f"{self.channel}@{self.epoch}:{self.last_offset}"


class HistoryMessage(models.Model):
    """A message kept in a channel's history (the payload as sent, before the envelope)."""

    channel = CaseSensitiveCharField(max_length=100)
    offset = models.BigIntegerField()
    epoch = models.CharField(max_length=16)
    payload = models.BinaryField()
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        verbose_name = "history message"
        constraints = [
            models.UniqueConstraint(fields=["channel", "offset"], name="apigw_ws_history_offset"),
        ]

    def __str__(self) -> str:
        return f"{self.channel}#{self.offset}"


class SendJobPart(models.Model):
    """One part of a durable send job (the core's :class:`~apigw_ws_core.storage.JobPart`):
    a keyset range of the job's recipients, its checkpoint (``cursor``) and its counts.
    A job is the set of parts with the same ``job_id``; see :mod:`apigw_ws_core.jobs`."""

    job_id = models.CharField(max_length=64)
    part = models.PositiveIntegerField(default=0)
    target = models.JSONField(default=dict, blank=True)
    lower = CaseSensitiveCharField(max_length=128, null=True, blank=True)
    upper = CaseSensitiveCharField(max_length=128, null=True, blank=True)
    cursor = CaseSensitiveCharField(max_length=128, null=True, blank=True)
    status = models.CharField(max_length=16, default="pending")
    expected = models.PositiveIntegerField(default=0)
    recipients = models.PositiveIntegerField(default=0)
    delivered = models.PositiveIntegerField(default=0)
    gone = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    retried = models.PositiveIntegerField(default=0)
    throttled = models.PositiveIntegerField(default=0)
    ambiguous = models.PositiveIntegerField(default=0)
    runs = models.PositiveIntegerField(default=0)
    first_error = models.CharField(max_length=500, null=True, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField(db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "send job part"
        constraints = [
            models.UniqueConstraint(fields=["job_id", "part"], name="apigw_ws_job_part"),
        ]

    def __str__(self) -> str:
        return f"job {self.job_id} part {self.part} ({self.status})"
