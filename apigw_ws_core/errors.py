"""One hierarchy of errors for apigw-ws.

Every error that can be caused by a request carries an HTTP ``status`` and a stable,
machine-readable ``code``. The pipeline turns them into ``{"error": code, "message": ...}``
replies; nothing else in the library decides statuses or codes.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ApigwWsError",
    "BadRequest",
    "BodyTooLarge",
    "ChannelForbidden",
    "ConfigurationError",
    "ConnectionExists",
    "DependencyUnavailable",
    "Forbidden",
    "GoneError",
    "HandlerFailed",
    "HandlerForbidden",
    "IncompleteBody",
    "InternalError",
    "InvalidAttribute",
    "InvalidChannel",
    "InvalidConnectionId",
    "InvalidHandlerName",
    "InvalidJson",
    "InvalidMessage",
    "InvalidToken",
    "LoginRequired",
    "MethodNotAllowed",
    "NotFound",
    "OriginNotAllowed",
    "PayloadTooLarge",
    "RateLimited",
    "RateLimiterUnavailable",
    "RequestError",
    "StorageUnavailable",
    "ThrottledError",
    "TokenRequired",
    "TooManyChannels",
    "TransportError",
    "TransportUnavailable",
    "UnknownConnection",
    "UnknownHandler",
]


class ApigwWsError(Exception):
    """Base class of every error raised by apigw-ws."""


class ConfigurationError(ApigwWsError):
    """The library was configured inconsistently (raised at start-up, never per request)."""


class RequestError(ApigwWsError):
    """A request was rejected. Maps to ``status`` and the stable ``code``.

    ``message`` is safe to show to the caller: it never contains secrets or tokens.
    """

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    default_message: ClassVar[str] = "Bad request."

    def __init__(self, message: str | None = None, *, headers: dict[str, str] | None = None):
        self.message = message or self.default_message
        self.headers: dict[str, str] = dict(headers or {})
        super().__init__(self.message)

    def as_dict(self) -> dict[str, str]:
        """The JSON body of the reply: ``{"error": code, "message": message}``."""
        return {"error": self.code, "message": self.message}


class BadRequest(RequestError):
    """Generic malformed request (missing headers, unknown route, bad event shape)."""

    code = "bad_request"


class InvalidConnectionId(RequestError):
    """The connection id is missing or not in API Gateway's format."""

    code = "invalid_connection_id"
    default_message = "Missing or malformed connection id."


class BodyTooLarge(RequestError):
    """The request body exceeds API Gateway's 128 KiB message limit."""

    status = 413
    code = "body_too_large"
    default_message = "Message body exceeds 131072 bytes."


class IncompleteBody(RequestError):
    """The request body ended before its ``Content-Length`` (the caller hung up or lied).
    Nothing is run: a truncated body could still parse as a valid message."""

    code = "incomplete_body"
    default_message = "The request body is shorter than its Content-Length."


class MethodNotAllowed(RequestError):
    """API Gateway's integrations always ``POST``."""

    status = 405
    code = "method_not_allowed"
    default_message = "Use POST."


class NotFound(RequestError):
    """No such route under the integration prefix."""

    status = 404
    code = "not_found"
    default_message = "No such route."


class InvalidJson(RequestError):
    """The message body is not valid UTF-8 JSON (or is nested too deeply)."""

    code = "invalid_json"
    default_message = "Message body is not valid JSON."


class InvalidMessage(RequestError):
    """The JSON message is not an object, or a field has the wrong type."""

    code = "invalid_message"
    default_message = "Message must be a JSON object."


class InvalidHandlerName(RequestError):
    """The handler name is not a string or not an acceptable identifier."""

    code = "invalid_handler_name"
    default_message = "Handler name must be a string identifier."


class UnknownHandler(RequestError):
    """No registered handler has this name."""

    code = "unknown_handler"
    default_message = "No such handler."


class HandlerForbidden(RequestError):
    """The handler's permission check denied this connection."""

    status = 403
    code = "handler_forbidden"
    default_message = "Not allowed to call this handler."


class InvalidAttribute(RequestError):
    """A declared connection attribute (a ``$connect`` query parameter or header) is
    missing, repeated, too long or not one of the allowed values."""

    code = "invalid_attribute"
    default_message = "Invalid connection attribute."


class InvalidChannel(RequestError):
    """A channel name breaks the channel naming rule."""

    code = "invalid_channel"
    default_message = "Invalid channel name."


class Forbidden(RequestError):
    """The call did not prove it came from our API Gateway (secret, stage or API id)."""

    status = 403
    code = "forbidden"
    default_message = "Forbidden."


class ChannelForbidden(RequestError):
    """The channel policy denies this user the channel."""

    status = 403
    code = "channel_forbidden"
    default_message = "Not allowed to join this channel."


class OriginNotAllowed(RequestError):
    """The browser's ``Origin`` is not in the configured allowlist."""

    status = 403
    code = "origin_not_allowed"
    default_message = "Origin not allowed."


class TokenRequired(RequestError):
    """A connection token is required and none was given."""

    status = 401
    code = "token_required"
    default_message = "A connection token is required."


class LoginRequired(RequestError):
    """The token endpoint was called without a logged-in user."""

    status = 401
    code = "login_required"
    default_message = "Log in to get a connection token."


class InvalidToken(RequestError):
    """The token is unknown, used, expired, or bound to another channel or origin.

    One code for every reason, so that the reply is no oracle for attackers.
    """

    status = 401
    code = "invalid_token"
    default_message = "Invalid or expired token."


class ConnectionExists(RequestError):
    """A ``$connect`` for a connection id that already has a live session: refused so that
    the session's owner and channels cannot be rebound; nothing is changed."""

    status = 409
    code = "connection_exists"
    default_message = "This connection is already connected."


class UnknownConnection(RequestError):
    """A message or send named a connection that is not (or no longer) connected."""

    status = 404
    code = "unknown_connection"
    default_message = "Unknown or closed connection."


class RateLimited(RequestError):
    """A rate limit was hit; ``retry_after`` seconds until the next attempt may pass."""

    status = 429
    code = "rate_limited"
    default_message = "Too many requests."

    def __init__(self, message: str | None = None, *, retry_after: int = 1):
        self.retry_after = max(1, int(retry_after))
        super().__init__(message, headers={"Retry-After": str(self.retry_after)})


class TooManyChannels(RequestError):
    """The connection already belongs to ``max_channels_per_connection`` channels."""

    status = 409
    code = "too_many_channels"
    default_message = "This connection is in too many channels; unsubscribe from one first."


class HandlerFailed(RequestError):
    """A user handler raised an unexpected exception (a server bug, not client input)."""

    status = 500
    code = "handler_failed"
    default_message = "The message handler failed."


class InternalError(RequestError):
    """An unexpected exception outside a handler (a server bug): a JSON 500, never a
    framework's HTML page. The cause is logged, never sent."""

    status = 500
    code = "internal_error"
    default_message = "Internal server error."


class DependencyUnavailable(RequestError):
    """A dependency (storage, rate limiter, Management API) failed or timed out while an
    event was handled: ``503`` with ``Retry-After``. Nothing the request asked for is
    half-done that a retry would repeat wrongly (each storage call is one transaction).
    """

    status = 503
    code = "dependency_unavailable"
    default_message = "A backend dependency is unavailable; retry shortly."

    def __init__(self, message: str | None = None, *, retry_after: int = 2):
        self.retry_after = max(1, int(retry_after))
        super().__init__(message, headers={"Retry-After": str(self.retry_after)})


class StorageUnavailable(DependencyUnavailable):
    """The storage backend (database) could not be reached, failed or timed out."""

    code = "storage_unavailable"
    default_message = "Storage is unavailable; retry shortly."


class RateLimiterUnavailable(DependencyUnavailable):
    """The rate limiter's backend failed and its failure policy is ``closed``."""

    code = "rate_limiter_unavailable"
    default_message = "Rate limiting is unavailable; retry shortly."


class TransportUnavailable(DependencyUnavailable):
    """The Management API could not be reached while handling an event."""

    code = "transport_unavailable"
    default_message = "The WebSocket gateway is unavailable; retry shortly."


# --- sending -------------------------------------------------------------------------


class PayloadTooLarge(ApigwWsError, ValueError):
    """A message to send exceeds 131072 bytes; refused before any network call."""


class TransportError(ApigwWsError):
    """A Management API call failed in a way that may be retried or reported.

    ``status`` is the HTTP status when one was received (``None`` for network errors).
    ``sent`` says whether the request went out: always for a status; for a network error
    only when it happened after the request was written (a reset or timeout while waiting
    for the answer), not for a refused connection or a connect timeout.
    """

    def __init__(self, message: str, *, status: int | None = None, sent: bool | None = None):
        self.status = status
        self.sent = status is not None if sent is None else sent
        super().__init__(message)

    @property
    def ambiguous(self) -> bool:
        """The request went out and its outcome is unknown: it may have been delivered.

        True for a 5xx answer and for a network error after the request was written.
        A retry after such an outcome may deliver the message a second time.
        """
        if self.status is None:
            return self.sent
        return self.status >= 500


class GoneError(TransportError):
    """The connection is gone (HTTP 410): mark it disconnected, never retry."""

    def __init__(self, connection_id: str):
        self.connection_id = connection_id
        super().__init__(f"connection {connection_id!r} is gone", status=410)


class ThrottledError(TransportError):
    """The Management API answered 429 (throttled or the client's buffer is full)."""

    def __init__(self, message: str = "throttled", *, retry_after: float | None = None):
        self.retry_after = retry_after
        super().__init__(message, status=429)
