r"""Short-lived, single-use connection tokens, and the token endpoint.

A browser fetches a token from an authenticated endpoint, then opens
``wss://.../?ws_token=<token>``. A token is **signed, not stored**: issuing one is an HMAC
(no storage call, no commit), and ``$connect`` verifies it without storage. Single use is
kept by the spent-token ledger: the ``$connect`` that redeems a token records its digest
inside its own one transaction (:meth:`~apigw_ws_core.storage.Storage.spend_token`), and of
several ``$connect``\ s racing with one token exactly one records it first.

Layout (base64url, no padding, at most :data:`MAX_TOKEN_LENGTH` characters)::

    version (1) | flags (1) | expiry, Unix microseconds (8) | nonce (16) | binding tag (16)
    | user id (UTF-8, 1-64 characters) | HMAC-SHA256 of all that (32)

The key is :attr:`~apigw_ws_core.config.Config.token_key`, else derived from the gateway
``secret`` (and ``previous_secret`` during a rotation, for verifying only). The binding tag
is an HMAC of the channel and origin the token is bound to (flags say which), so a token
carries its user and expiry but not its channel or origin; ``$connect`` recomputes the tag
from the channel and ``Origin`` it was given. A token is signed, not encrypted: whoever
holds it can read the user id in it (the browser that asked for it, or a log that records
query strings: the subprotocol carriage keeps it out of access logs).

The endpoint's logic is :func:`token_endpoint` (parse the body, check the login, bind the
origin and channel, issue, reply); the Django and Flask token views only build a
:class:`TokenRequest` from their request and turn the :class:`~apigw_ws_core.reply.Reply`
into a response.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import secrets
import struct
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import attrs

from apigw_ws_core.errors import (
    BadRequest,
    BodyTooLarge,
    ConfigurationError,
    InvalidChannel,
    InvalidToken,
    LoginRequired,
    MethodNotAllowed,
    RequestError,
)
from apigw_ws_core.http import BodyReader, content_length, lower_keys, no_body, read_bounded
from apigw_ws_core.reply import Reply
from apigw_ws_core.storage import Token

if TYPE_CHECKING:
    from apigw_ws_core.app import WebSocketApp
    from apigw_ws_core.config import Config

__all__ = [
    "MAX_TOKEN_BODY",
    "MAX_TOKEN_LENGTH",
    "SPENT_GRACE",
    "TokenClaims",
    "TokenRequest",
    "sign_token",
    "token_endpoint",
    "token_keys",
    "verify_token",
]

#: Longest token accepted: the longest a 64-character user id can make (four UTF-8 bytes
#: each) is 447 characters. Anything longer is refused before it is decoded.
MAX_TOKEN_LENGTH = 512

#: How long a spent token's ledger row outlives the token: hosts whose clocks disagree by
#: up to this much still cannot replay a token after cleanup removed its row.
SPENT_GRACE = timedelta(minutes=5)

_VERSION = 1
_HEAD = struct.Struct(">BBQ")  # version, flags, expiry (Unix microseconds)
_NONCE = 16  # 128 random bits: no two tokens share a digest
_TAG = 16  # binding tag (truncated HMAC-SHA256)
_MAC = 32  # HMAC-SHA256
_FIXED = _HEAD.size + _NONCE + _TAG
_CHANNEL_BOUND = 1
_ORIGIN_BOUND = 2
_MAX_USER_ID = 64
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

#: The key of an app without ``token_key`` and without a secret
#: (``allow_insecure_no_secret``, tests): random per process, so its tokens verify only in
#: the process that issued them.
_PROCESS_KEY = secrets.token_bytes(32)


@functools.lru_cache(maxsize=16)
def _derive(secret: str) -> bytes:
    """The token key derived from a configured secret (never the secret itself)."""
    return hmac.new(
        secret.encode("utf-8", "surrogatepass"), b"apigw-ws token key v1", hashlib.sha256
    ).digest()


def token_keys(config: Config) -> tuple[bytes, ...]:
    """The keys tokens are verified with, the signing key first.

    ``token_key`` when set (one key); else keys derived from ``secret`` and
    ``previous_secret`` (a token signed before a secret rotation still verifies while the
    previous secret is accepted). Without either, a per-process random key when
    ``allow_insecure_no_secret`` (tests), else ``ConfigurationError``.
    """
    if config.token_key:
        return (_derive(config.token_key),)
    if config.secret:
        return tuple(_derive(k) for k in (config.secret, config.previous_secret) if k)
    if config.allow_insecure_no_secret:
        return (_PROCESS_KEY,)
    raise ConfigurationError(
        "Connection tokens are signed: set Config.token_key (or the gateway secret), the "
        "same value wherever tokens are issued and where $connect is handled."
    )


def _field(value: str | None) -> bytes:
    """One bound value in the binding tag's input, unambiguous (length-prefixed)."""
    if value is None:
        return b"\x00"
    raw = value.encode("utf-8", "surrogatepass")
    return b"\x01" + struct.pack(">I", len(raw)) + raw


def _binding(key: bytes, channel: str | None, origin: str | None) -> bytes:
    message = b"apigw-ws token binding\x00" + _field(channel) + _field(origin)
    return hmac.new(key, message, hashlib.sha256).digest()[:_TAG]


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def sign_token(
    key: bytes,
    user_id: str,
    *,
    expires_at: datetime,
    channel: str | None = None,
    origin: str | None = None,
) -> str:
    """A new token for ``user_id`` valid until ``expires_at`` (to the microsecond), bound
    to ``channel`` and ``origin`` when given. No storage involved."""
    raw_user = user_id.encode("utf-8", "surrogatepass")
    if not 1 <= len(user_id) <= _MAX_USER_ID:
        raise ValueError("a token's user id has 1-64 characters")
    flags = (_CHANNEL_BOUND if channel is not None else 0) | (
        _ORIGIN_BOUND if origin is not None else 0
    )
    body = (
        _HEAD.pack(_VERSION, flags, (expires_at - _EPOCH) // _MICROSECOND)
        + secrets.token_bytes(_NONCE)
        + _binding(key, channel, origin)
        + raw_user
    )
    return _encode(body + hmac.new(key, body, hashlib.sha256).digest())


@attrs.frozen(kw_only=True)
class TokenClaims:
    """What a verified token says: whose it is, until when, and what it is bound to.

    ``digest`` (SHA-256 hex of the signed bytes) is the token's key in the spent-token
    ledger. :meth:`binds` checks the channel and origin of a ``$connect`` against the
    token's binding tag.
    """

    digest: str
    user_id: str
    expires_at: datetime
    channel_bound: bool
    origin_bound: bool
    _binding: bytes = attrs.field(repr=False, alias="binding")
    _key: bytes = attrs.field(repr=False, alias="key")

    def binds(self, channel: str | None, origin: str | None) -> bool:
        """Whether the token may open ``channel`` from ``origin`` (constant time)."""
        if (self.channel_bound and channel is None) or (self.origin_bound and origin is None):
            return False
        expected = _binding(
            self._key,
            channel if self.channel_bound else None,
            origin if self.origin_bound else None,
        )
        return hmac.compare_digest(expected, self._binding)

    def spent(self, now: datetime) -> Token:
        """The token's row in the spent-token ledger: kept until :data:`SPENT_GRACE`
        after the token expires, then removed by cleanup."""
        return Token(
            token_hash=self.digest,
            user_id=self.user_id,
            created_at=now,
            expires_at=self.expires_at + SPENT_GRACE,
        )


def verify_token(keys: tuple[bytes, ...], token: str, *, now: datetime) -> TokenClaims:
    """Check a presented token's form, signature and expiry, without storage.

    Raises ``InvalidToken`` (one code for every reason) if it is empty, longer than
    :data:`MAX_TOKEN_LENGTH`, not canonical base64url, of another version, signed with
    none of ``keys``, or expired at ``now``. Whether it was spent is the ledger's
    question (:meth:`~apigw_ws_core.storage.Storage.spend_token`).
    """
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken()
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii") + b"=" * (-len(token) % 4))
    except (UnicodeEncodeError, ValueError, binascii.Error):
        raise InvalidToken() from None
    # one spelling per token: no padding, no stray characters, no unused low bits
    if len(raw) < _FIXED + 1 + _MAC or _encode(raw) != token:
        raise InvalidToken()
    body, mac = raw[:-_MAC], raw[-_MAC:]
    key = next(
        (k for k in keys if hmac.compare_digest(hmac.new(k, body, hashlib.sha256).digest(), mac)),
        None,
    )
    if key is None:
        raise InvalidToken()
    version, flags, expires = _HEAD.unpack_from(body)
    if version != _VERSION or flags & ~(_CHANNEL_BOUND | _ORIGIN_BOUND):
        raise InvalidToken()
    try:
        user_id = body[_FIXED:].decode("utf-8", "surrogatepass")
        expires_at = _EPOCH + timedelta(microseconds=expires)
    except (UnicodeDecodeError, ValueError, OverflowError, OSError):
        raise InvalidToken() from None
    if expires_at <= now or not 1 <= len(user_id) <= _MAX_USER_ID:
        raise InvalidToken()
    return TokenClaims(
        digest=hashlib.sha256(body).hexdigest(),
        user_id=user_id,
        expires_at=expires_at,
        channel_bound=bool(flags & _CHANNEL_BOUND),
        origin_bound=bool(flags & _ORIGIN_BOUND),
        binding=body[_HEAD.size + _NONCE : _FIXED],
        key=key,
    )


#: Token requests carry a channel, an origin, perhaps a CSRF token: a few hundred bytes.
MAX_TOKEN_BODY = 4096


@attrs.frozen(kw_only=True)
class TokenRequest:
    """A token request as an adapter sees it.

    :param user_id: the logged-in user's id, ``None`` when nobody is logged in.
    :param method: the HTTP method; anything but ``POST`` is ``405 method_not_allowed``.
    :param headers: the request headers (any case); ``Origin``, ``Content-Type`` and
        ``Content-Length`` are read.
    :param read: reads the body (used for JSON bodies, at most :data:`MAX_TOKEN_BODY`).
    :param form: returns the parsed form fields of a non-JSON body (the framework parsed
        them already, e.g. for its CSRF check); ``None``: a form-encoded body is parsed
        here (at most :data:`MAX_TOKEN_BODY`).
    :param check: the adapter's own check before anything else (Flask's CSRF check); it
        gets a function returning the parsed fields and raises a ``RequestError``.
    """

    user_id: Any
    method: str = "POST"
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=lower_keys)
    read: BodyReader = no_body
    form: Callable[[], Mapping[str, Any]] | None = None
    check: Callable[[Callable[[], Mapping[str, Any]]], None] | None = None


def _fields(app: WebSocketApp, request: TokenRequest) -> Mapping[str, Any]:
    """The body's fields: a JSON object parsed with the pipeline's rules, or the form."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        if request.form is not None:
            return request.form()
        if kind != "application/x-www-form-urlencoded":
            return {}
        raw = _token_body(request)
        try:
            return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError as exc:
            raise BadRequest("Form body is not UTF-8.") from exc
    return app.parse_message(_token_body(request) or b"{}")


def _token_body(request: TokenRequest) -> bytes:
    length = content_length(request.headers)
    if length is not None and length > MAX_TOKEN_BODY:
        raise BodyTooLarge(f"Token request body exceeds {MAX_TOKEN_BODY} bytes.")
    try:
        raw = read_bounded(request.read, MAX_TOKEN_BODY)
    except BodyTooLarge as exc:
        raise BodyTooLarge(f"Token request body exceeds {MAX_TOKEN_BODY} bytes.") from exc
    return raw


def _optional_str(fields: Mapping[str, Any], key: str, error: type[RequestError]) -> str | None:
    value = fields.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise error(f"{key} must be a string.")
    return value


def token_endpoint(app: WebSocketApp, request: TokenRequest) -> Reply:
    """Answer a token request: ``200 {"token": ..., "expires_in": ...}`` or the error.

    Order: the method (``405`` but for ``POST``), the adapter's ``check`` (CSRF), login
    (``401 login_required``), the fields (JSON or form; ``413`` over
    :data:`MAX_TOKEN_BODY`, ``400`` for malformed JSON),
    ``channel`` (a string, else ``400 invalid_channel``; the policy must let the user join
    it), the origin, then the token: signed here, no storage call. The origin bound is the
    request's ``Origin`` header when ``config.token_bind_origin`` (the default), else an
    ``origin`` field; a field that contradicts the header is ``400 bad_request``. The
    per-user limit (``token_rate_per_user``) counts tokens where they are redeemed, at
    ``$connect``. Every answer is ``Cache-Control: no-store``.
    """
    cache: list[Mapping[str, Any]] = []

    def fields() -> Mapping[str, Any]:
        if not cache:
            cache.append(_fields(app, request))
        return cache[0]

    try:
        if request.method != "POST":
            raise MethodNotAllowed(headers={"Allow": "POST"})
        if request.check is not None:
            request.check(fields)
        if request.user_id is None:
            raise LoginRequired()
        channel = _optional_str(fields(), "channel", InvalidChannel)
        field = _optional_str(fields(), "origin", BadRequest)
        header = request.headers.get("origin") if app.config.token_bind_origin else None
        if header and field and field != header:
            raise BadRequest("origin does not match the request's Origin header.")
        token, expires_in = app.issue_token(
            request.user_id, channel=channel, origin=header or field
        )
    except RequestError as error:
        reply = app.reject(error)
    except Exception as exc:  # the storage or a lookup failed: a JSON 503/500, never HTML
        reply = app.failure_reply(exc)
    else:
        reply = Reply.json(200, {"token": token, "expires_in": expires_in})
    return attrs.evolve(reply, headers=(*reply.headers, ("Cache-Control", "no-store")))
