"""Configuration of a :class:`~apigw_ws_core.app.WebSocketApp`, with documented defaults.

Adapters build a :class:`Config` from their framework's settings (``APIGW_WS = {...}`` in
Django, ``APIGW_WS_*`` keys in Flask) with :meth:`Config.from_mapping`, which rejects unknown
keys and wrong types with a :class:`~apigw_ws_core.errors.ConfigurationError`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Any

import attrs

from apigw_ws_core.attributes import AttributeSpec, attribute_specs
from apigw_ws_core.errors import ConfigurationError
from apigw_ws_core.events import MAX_BODY_BYTES
from apigw_ws_core.history import HistoryRule, history_rules

__all__ = ["FAILURE_POLICIES", "Config", "RateLimit"]


@attrs.frozen
class RateLimit:
    """``limit`` events per ``window`` seconds (fixed window). ``RateLimit.parse("30/60")``."""

    limit: int
    window: int

    @classmethod
    def parse(cls, value: str | RateLimit | None) -> RateLimit | None:
        """Read ``"N/SECONDS"`` (or ``"N/s"``, ``"N/m"``, ``"N/h"``); ``None`` disables."""
        if value is None or isinstance(value, RateLimit):
            return value
        try:
            count, _, per = str(value).partition("/")
            units = {"s": 1, "m": 60, "h": 3600}
            window = units[per] if per in units else int(per)
            limit = int(count)
        except (ValueError, KeyError) as exc:
            raise ConfigurationError(f"bad rate limit {value!r}; use 'N/SECONDS'") from exc
        if limit < 1 or window < 1:
            raise ConfigurationError(f"bad rate limit {value!r}; both parts must be >= 1")
        return cls(limit, window)


def _tuple_of_str(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


def _check_ttl(instance: Any, attribute: Any, value: Any) -> None:
    """A token lifetime in whole seconds, 1 to 86400: a string, 0 or a negative number
    would fail (or silently expire every token) at the first request instead."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 86400:
        raise ConfigurationError(f"token_ttl must be whole seconds from 1 to 86400, not {value!r}")


def _rate(value: Any) -> RateLimit | None:
    return RateLimit.parse(value)


def _check_secret(instance: Any, attribute: Any, value: str | None) -> None:
    """The secret travels in an HTTP header: printable ASCII, no surrounding spaces.

    Servers decode header bytes as Latin-1 (PEP 3333) and strip surrounding whitespace, so
    anything else would never compare equal (or would compare equal to something else).
    """
    if value is None or value == "":  # no secret: HTTP calls are refused (see verify)
        return
    if not isinstance(value, str):
        raise ConfigurationError("secret must be a string (or None)")
    if value != value.strip() or not all(" " <= ch <= "~" for ch in value):
        raise ConfigurationError(
            "secret must be printable ASCII without leading or trailing spaces; "
            "generate one with secrets.token_urlsafe(32)"
        )


def _check_token_key(instance: Any, attribute: Any, value: str | None) -> None:
    """A token key must be long enough not to be guessed (32 characters or more)."""
    if value is None:
        return
    if not isinstance(value, str) or len(value) < 32:
        raise ConfigurationError(
            "token_key must be a string of at least 32 characters; "
            "generate one with secrets.token_urlsafe(32)"
        )


def _check_range(low: int, high: int) -> Any:
    """Validator: a whole number from ``low`` to ``high`` (not a bool or a string)."""

    def check(instance: Any, attribute: Any, value: Any) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ConfigurationError(
                f"{attribute.name} must be a whole number from {low} to {high}, not {value!r}"
            )

    return check


#: What a rate limiter that cannot count does: let the request through, or refuse it.
FAILURE_POLICIES = ("open", "closed")


def _check_policy(instance: Any, attribute: Any, value: Any) -> None:
    if value not in FAILURE_POLICIES:
        raise ConfigurationError(f"{attribute.name} must be 'open' or 'closed', not {value!r}")


#: Characters of an RFC 7230 token: all a ``Sec-WebSocket-Protocol`` value may hold.
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def _check_subprotocol_prefix(instance: Any, attribute: Any, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value or not set(value) <= _TOKEN_CHARS:
        raise ConfigurationError(
            f"{attribute.name} must be a non-empty subprotocol token prefix "
            f"(letters, digits, '.', '-', ...) or None, not {value!r}"
        )


@attrs.frozen(kw_only=True)
class Config:
    """Everything the pipeline needs to know. Every field has a safe default.

    Security-relevant defaults: a ``secret`` is required for HTTP calls unless
    ``allow_insecure_no_secret`` is set (for unit tests only); tokens are required.
    """

    #: Shared secret that API Gateway sends in ``X-Apigw-Ws-Secret`` (set at provisioning).
    secret: str | None = attrs.field(default=None, repr=False, validator=_check_secret)
    #: During a rotation, the old secret, still accepted next to ``secret``. Remove it once
    #: API Gateway sends the new one everywhere.
    previous_secret: str | None = attrs.field(default=None, repr=False, validator=_check_secret)
    #: Key that signs connection tokens (at least 32 characters; e.g.
    #: ``secrets.token_urlsafe(32)``). Unset: a key derived from ``secret`` (and
    #: ``previous_secret``, for verifying during a rotation). Set it where there is no
    #: gateway secret (Lambda integrations), or to keep tokens valid across a secret
    #: rotation; every process that issues tokens or handles ``$connect`` needs the same.
    token_key: str | None = attrs.field(default=None, repr=False, validator=_check_token_key)
    #: Accept HTTP calls without a secret. Never in production.
    allow_insecure_no_secret: bool = False
    #: If non-empty, only these API ids / stages are accepted (on top of the secret).
    allowed_api_ids: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)
    allowed_stages: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)
    #: Browser origins allowed at ``$connect`` (``scheme://host[:port]``); empty allows any.
    #: ``https://*.example.com`` matches subdomains only when ``allow_origin_wildcards``.
    allowed_origins: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)
    allow_origin_wildcards: bool = False
    #: Require ``?ws_token=`` at ``$connect``. Off means anonymous connections are allowed,
    #: but a token, when given, must still be valid.
    require_token: bool = True
    token_ttl: int = attrs.field(default=60, validator=_check_ttl)
    #: Take the user id at ``$connect`` from a Lambda REQUEST authorizer's result:
    #: ``"principalId"`` or a context key (the key must be in the provisioned authorizer's
    #: ``context_keys`` for HTTP backends). When the authorizer gave it, no ``ws_token`` is
    #: needed or read; when it did not, the token rules apply. Only set this when API Gateway
    #: really runs the authorizer: on ``$connect`` it forwards the client's own headers, so
    #: without the provisioned mapping a client could send ``X-Apigw-Ws-Authorizer-*`` itself.
    user_from_authorizer: str | None = None
    #: Bind each token to the ``Origin`` header of the request that fetched it, so a token
    #: stolen from the page fails from any other site's page (the token endpoint).
    token_bind_origin: bool = True
    token_query_param: str = "ws_token"
    #: A ``$connect`` may carry its token as an offered subprotocol
    #: ``{token_subprotocol_prefix}{token}`` (``Sec-WebSocket-Protocol``), which no access
    #: log records, instead of ``?ws_token=``. The reply selects the first *other* protocol
    #: the client offered (the browser client offers ``apigw-ws`` first); the token is never
    #: echoed. ``None`` turns this off.
    token_subprotocol_prefix: str | None = attrs.field(
        default="apigw-ws.token.", validator=_check_subprotocol_prefix
    )
    channel_query_param: str = "channel"
    default_channel: str = "default"
    #: JSON keys that name the handler, tried in order.
    handler_keys: tuple[str, ...] = attrs.field(
        default=("handler", "action"), converter=_tuple_of_str
    )
    #: Enable the built-in ``subscribe``/``unsubscribe`` handlers.
    enable_subscribe: bool = False
    #: Enable the built-in ``ping`` handler (answers ``{"type": "pong"}``) that the browser
    #: client uses as a keepalive. An app handler named ``ping`` replaces it.
    enable_ping: bool = True
    #: Channels one connection may belong to at once (its ``$connect`` channel included).
    #: One more ``subscribe`` is refused with ``409 too_many_channels`` and changes nothing.
    #: 100 is far above what a page needs (a chat joins a handful of rooms) and bounds the
    #: subscription rows one connection can create to 100 whatever it sends.
    max_channels_per_connection: int = attrs.field(default=100, validator=_check_range(1, 10_000))
    max_body_bytes: int = MAX_BODY_BYTES
    max_json_depth: int = 32
    #: Rate limits (``"N/SECONDS"``) or ``None`` to disable one.
    connect_rate_per_ip: RateLimit | None = attrs.field(default=RateLimit(60, 60), converter=_rate)
    #: Off by default: connects with a token are already bounded by ``token_rate_per_user``
    #: (each token opens one connection), and every counter costs a statement.
    connect_rate_per_user: RateLimit | None = attrs.field(default=None, converter=_rate)
    message_rate_per_connection: RateLimit | None = attrs.field(
        default=RateLimit(120, 10), converter=_rate
    )
    #: Tokens a user may redeem: counted at each ``$connect`` that carries a token, inside
    #: its one transaction (issuing a token is an HMAC and costs nothing to limit).
    token_rate_per_user: RateLimit | None = attrs.field(default=RateLimit(30, 60), converter=_rate)
    #: Channels that keep history (first matching rule wins), e.g.
    #: ``[{"pattern": "room-*", "size": 200, "ttl": 3600}]``; see :mod:`apigw_ws_core.history`.
    history: tuple[HistoryRule, ...] = attrs.field(default=(), converter=history_rules)
    #: Most history messages one ``$recover`` answers per channel (the client asks again
    #: for the rest).
    history_recover_limit: int = 500
    #: Glob patterns of channels with presence events (``member_added`` /
    #: ``member_removed``) and the ``$presence`` request, e.g. ``["presence-*"]``.
    presence_channels: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)
    #: Seconds after its ``$connect`` during which a fan-out's 410 does not mark a session
    #: disconnected (API Gateway answers 410 until the handshake completes; ``$disconnect``
    #: or cleanup marks it if it really went). ``None``: 30 with ``presence_channels``,
    #: else 0 (every 410 marks at once).
    gone_grace_seconds: int | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(
            [attrs.validators.instance_of(int), attrs.validators.ge(0)]
        ),
    )
    #: Declared ``$connect`` query parameters / headers kept with the session; see
    #: :mod:`apigw_ws_core.attributes`.
    connection_attributes: tuple[AttributeSpec, ...] = attrs.field(
        default=(), converter=attribute_specs
    )
    #: What happens when a rate limiter cannot count (Redis down or timed out, its storage
    #: failing): ``"open"`` lets the request through (logged as a warning), ``"closed"``
    #: answers ``503 rate_limiter_unavailable``. Open by default: the limits guard against
    #: floods, not against token forging (tokens carry an HMAC-SHA256), and a closed
    #: limiter turns a cache outage into a full outage. See docs/security.rst.
    rate_limiter_failure: str = attrs.field(default="open", validator=_check_policy)
    #: ``Retry-After`` seconds of a ``503`` answered because a dependency failed.
    unavailable_retry_after: int = attrs.field(default=2, validator=_check_range(1, 3600))
    #: Management API endpoint ``https://{api}.execute-api.{region}.amazonaws.com/{stage}``.
    management_endpoint: str | None = None
    region: str | None = None
    #: Gateway record to read the endpoint from when ``management_endpoint`` is not set.
    gateway_name: str = "default"
    #: Fan-out: concurrent Management API calls at first, overall deadline, retries per
    #: call. While no 429 comes back, calls in flight double every round trip up to
    #: ``send_max_concurrency`` (then halve on throttling and grow by one per round trip),
    #: so a broadcast keeps up with the Management API's latency; set both equal to pin it.
    send_concurrency: int = 64
    send_max_concurrency: int = attrs.field(default=256, validator=attrs.validators.ge(1))
    send_deadline: float = 25.0
    send_max_attempts: int = 5
    #: Seconds one Management API call may take before it is given up and retried
    #: (separate from ``send_deadline``: a call that never answers costs this, not the send).
    send_call_timeout: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))

    def history_rule(self, channel: str) -> HistoryRule | None:
        """The history rule of ``channel`` (first match), or ``None`` if it keeps none."""
        return next((rule for rule in self.history if rule.matches(channel)), None)

    def has_presence(self, channel: str) -> bool:
        """Whether ``channel`` matches ``presence_channels`` (case-insensitively)."""
        name = channel.lower()
        return any(fnmatch.fnmatchcase(name, p.lower()) for p in self.presence_channels)

    @property
    def effective_gone_grace(self) -> int:
        """``gone_grace_seconds``, or when unset 30 with ``presence_channels`` (presence
        events are sent during ``$connect``, when other members may be connecting) and 0
        without."""
        if self.gone_grace_seconds is not None:
            return self.gone_grace_seconds
        return 30 if self.presence_channels else 0

    def send_options(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for :func:`~apigw_ws_core.fanout.fanout` from these settings
        (concurrency, deadline, attempts, call timeout), with ``overrides`` applied
        (``None`` values are ignored)."""
        options: dict[str, Any] = {
            "concurrency": self.send_concurrency,
            "max_concurrency": max(self.send_concurrency, self.send_max_concurrency),
            "deadline": self.send_deadline,
            "max_attempts": self.send_max_attempts,
            "call_timeout": self.send_call_timeout,
            "gone_grace": self.effective_gone_grace,
        }
        options.update({k: v for k, v in overrides.items() if v is not None})
        return options

    #: Durable send jobs (:mod:`apigw_ws_core.jobs`): recipients per checkpoint (a killed
    #: worker re-sends at most this many), recipients per shard (a bigger channel or
    #: everyone-send is split into shards run by separate tasks), and how long a job's
    #: status is kept after its last update (``cleanup`` deletes it then).
    job_batch_size: int = attrs.field(default=500, validator=attrs.validators.ge(1))
    job_shard_size: int = attrs.field(default=50_000, validator=attrs.validators.ge(1))
    job_keep_seconds: int = attrs.field(default=86_400, validator=attrs.validators.ge(0))
    #: Management API calls per second at most for all durable jobs together, shared by
    #: every worker through Redis when ``job_rate_redis_url`` is set (else per process).
    #: API Gateway's account quota is 10,000 requests/s for every API and ``@connections``
    #: call together; the default leaves half of it to everything else. ``None``: no cap.
    job_rate_limit: float | None = 5000.0
    job_rate_redis_url: str | None = None
    #: Healing (:mod:`apigw_ws_core.heal`, run by ``cleanup``): sessions younger than
    #: ``heal_min_age`` seconds are not asked about (their ``$connect`` may still run);
    #: ``GET @connections`` calls per second at most (``None``: unpaced; 500/s checks
    #: 100,000 sessions in under 4 minutes and leaves the account quota to sends); seconds
    #: for one healing run (sessions not asked by then wait for the next run).
    heal_min_age: float = attrs.field(default=60.0, validator=attrs.validators.ge(0))
    heal_max_rate: float | None = 500.0
    heal_deadline: float = attrs.field(default=600.0, validator=attrs.validators.gt(0))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Config:
        """Build from a settings mapping (lower- or upper-case keys), rejecting unknown keys."""
        fields = {f.name for f in attrs.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            name = key.lower()
            if name not in fields:
                raise ConfigurationError(
                    f"unknown apigw-ws setting {key!r}; known: {', '.join(sorted(fields))}"
                )
            kwargs[name] = value
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"invalid apigw-ws settings: {exc}") from exc
