"""Short-lived, single-use connection tokens, and the token endpoint.

A browser fetches a token from an authenticated endpoint, then opens
``wss://.../?ws_token=<token>``. We store only the SHA-256 digest of the 256-bit random
token; consuming it is one atomic storage call, so a replayed or raced token fails.

The endpoint's logic is :func:`token_endpoint` (parse the body, check the login, bind the
origin and channel, rate limit, issue, reply); the Django and Flask token views only build a
:class:`TokenRequest` from their request and turn the :class:`~apigw_ws_core.reply.Reply`
into a response.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import attrs

from apigw_ws_core.errors import (
    BadRequest,
    BodyTooLarge,
    InvalidChannel,
    InvalidToken,
    LoginRequired,
    MethodNotAllowed,
    RequestError,
)
from apigw_ws_core.http import BodyReader, content_length, lower_keys, no_body, read_bounded
from apigw_ws_core.reply import Reply
from apigw_ws_core.storage import CounterHit, Storage, Token

if TYPE_CHECKING:
    from apigw_ws_core.app import WebSocketApp

__all__ = [
    "MAX_TOKEN_BODY",
    "TOKEN_BYTES",
    "TokenRequest",
    "check_bindings",
    "hash_token",
    "issue_token",
    "take_token",
    "token_digest",
    "token_endpoint",
]

#: Random bytes per token (256 bits; the issue asks for at least 128).
TOKEN_BYTES = 32


def hash_token(token: str) -> str:
    """The stored form of a token: SHA-256 hex. A plain hash suffices: tokens are
    high-entropy random values, not passwords."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def issue_token(
    storage: Storage,
    user_id: str,
    *,
    now: datetime,
    ttl: int,
    channel: str | None = None,
    origin: str | None = None,
    counters: Sequence[CounterHit] = (),
) -> tuple[str, Token]:
    """Create and store a token for ``user_id``; return ``(plaintext, record)``.

    ``counters`` (rate limits) are counted in the same storage transaction
    (:meth:`~apigw_ws_core.storage.Storage.store_token_counted`): one commit; past a
    limit ``RateLimited`` is raised and no token stored. The plaintext is returned once
    and never stored or logged.
    """
    plaintext = secrets.token_urlsafe(TOKEN_BYTES)
    record = Token(
        token_hash=hash_token(plaintext),
        user_id=str(user_id),
        created_at=now,
        expires_at=now + timedelta(seconds=ttl),
        channel=channel,
        origin=origin,
    )
    if counters:
        storage.store_token_counted(record, counters)
    else:
        storage.store_token(record)
    return plaintext, record


def token_digest(token: str) -> str:
    """The stored form of a presented token; ``InvalidToken`` if it is malformed (empty
    or over 256 characters), before any storage call."""
    if not token or len(token) > 256:
        raise InvalidToken()
    return hash_token(token)


def take_token(storage: Storage, token: str, *, now: datetime) -> Token:
    """Atomically take a token (whatever its bindings); raise ``InvalidToken`` if it is
    malformed, unknown, used or expired."""
    record = storage.consume_token(token_digest(token), now)
    if record is None:
        raise InvalidToken()
    return record


def check_bindings(record: Token, *, channel: str | None, origin: str | None) -> Token:
    """Raise ``InvalidToken`` unless the token may open ``channel`` from ``origin``."""
    if record.channel is not None and record.channel != channel:
        raise InvalidToken()
    if record.origin is not None and record.origin != origin:
        raise InvalidToken()
    return record


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
    it), the origin, the per-user rate limit (``429``), then the token. The origin bound
    is the request's ``Origin`` header when ``config.token_bind_origin`` (the default),
    else an ``origin`` field; a field that contradicts the header is ``400 bad_request``.
    Every answer is ``Cache-Control: no-store``.
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
