"""Transports deliver bytes to one connection through API Gateway's Management API.

:class:`Transport` is the one-method contract (plus optional ``delete``/``get``);
:class:`ManagementApiTransport` talks to ``@connections`` over pooled HTTPS signed with
botocore's SigV4; :class:`RecordingTransport` keeps what was sent, for tests.
"""

from __future__ import annotations

import abc
import json
import threading
from collections import defaultdict
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, urlsplit

import attrs
import botocore.session
import urllib3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from apigw_ws_core.errors import (
    ConfigurationError,
    GoneError,
    PayloadTooLarge,
    ThrottledError,
    TransportError,
)
from apigw_ws_core.events import MAX_BODY_BYTES

__all__ = [
    "ManagementApiTransport",
    "RecordingTransport",
    "SentMessage",
    "Transport",
    "region_from_endpoint",
]


class Transport(abc.ABC):
    """Sends one message to one connection.

    Contract for :meth:`post`: deliver ``data`` (at most 131072 bytes, already checked by
    the caller) or raise :class:`~apigw_ws_core.errors.GoneError` (410, do not retry),
    :class:`~apigw_ws_core.errors.ThrottledError` (429, retry later) or
    :class:`~apigw_ws_core.errors.TransportError` (``status`` 5xx or ``None`` for network
    errors: retry; other 4xx: do not). Implementations must be thread-safe: fan-out calls
    ``post`` from several threads at once.
    """

    @abc.abstractmethod
    def post(self, connection_id: str, data: bytes) -> None:
        """Deliver ``data`` to ``connection_id`` as one text frame."""

    def delete(self, connection_id: str) -> None:
        """Close the connection (API Gateway answers 204; 410 if already gone)."""
        raise NotImplementedError

    def get(self, connection_id: str) -> dict[str, Any]:
        """Connection info: ``connectedAt``, ``lastActiveAt``, ``identity``."""
        raise NotImplementedError

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release pooled connections."""


@attrs.frozen
class SentMessage:
    """One message a :class:`RecordingTransport` delivered."""

    connection_id: str
    data: bytes

    def json(self) -> Any:
        """The payload decoded as JSON."""
        return json.loads(self.data)


class RecordingTransport(Transport):
    """Test transport: records deliveries; ids in ``gone`` answer 410, ``throttle`` ids
    answer 429 that many times first. Thread-safe."""

    def __init__(self, gone: Iterable[str] = (), throttle: dict[str, int] | None = None):
        self._lock = threading.Lock()
        self.sent: list[SentMessage] = []
        self.deleted: list[str] = []
        self.gone: set[str] = set(gone)
        self.throttle: dict[str, int] = defaultdict(int, throttle or {})
        self.attempts = 0

    def post(self, connection_id: str, data: bytes) -> None:
        """Record the message (or raise as configured)."""
        if len(data) > MAX_BODY_BYTES:
            raise TransportError("payload too large", status=413)
        with self._lock:
            self.attempts += 1
            if connection_id in self.gone:
                raise GoneError(connection_id)
            if self.throttle[connection_id] > 0:
                self.throttle[connection_id] -= 1
                raise ThrottledError()
            self.sent.append(SentMessage(connection_id, bytes(data)))

    def delete(self, connection_id: str) -> None:
        """Record the close; later posts to it answer 410."""
        with self._lock:
            if connection_id in self.gone:
                raise GoneError(connection_id)
            self.gone.add(connection_id)
            self.deleted.append(connection_id)

    def get(self, connection_id: str) -> dict[str, Any]:
        """Minimal info for a live id."""
        if connection_id in self.gone:
            raise GoneError(connection_id)
        return {"connectionId": connection_id}

    def messages_for(self, connection_id: str) -> list[Any]:
        """Decoded JSON payloads delivered to one connection, in order."""
        with self._lock:
            return [m.json() for m in self.sent if m.connection_id == connection_id]

    def clear(self) -> None:
        """Forget what was sent."""
        with self._lock:
            self.sent.clear()
            self.deleted.clear()


def region_from_endpoint(endpoint: str) -> str | None:
    """``https://abc.execute-api.eu-west-1.amazonaws.com/prod`` → ``eu-west-1``."""
    host = urlsplit(endpoint).hostname or ""
    parts = host.split(".")
    if "execute-api" in parts:
        idx = parts.index("execute-api")
        if idx + 1 < len(parts):
            return parts[idx + 1]
    return None


class ManagementApiTransport(Transport):
    """The API Gateway Management API over a pooled urllib3 connection pool.

    Signs each request with botocore's SigV4 using the standard credential chain (env,
    profile, role; refreshable credentials are re-read per request). Thread-safe; one
    instance per process is enough. ``endpoint`` is
    ``https://{api_id}.execute-api.{region}.amazonaws.com/{stage}`` (or a custom domain or
    the local gateway's management URL).
    """

    def __init__(
        self,
        endpoint: str,
        *,
        region: str | None = None,
        credentials: Credentials | None = None,
        session: botocore.session.Session | None = None,
        maxsize: int = 64,
        timeout: float = 10.0,
    ):
        if not endpoint.startswith(("http://", "https://")):
            raise ConfigurationError(f"management endpoint must be an http(s) URL: {endpoint!r}")
        self.endpoint = endpoint.rstrip("/")
        self.region = region or region_from_endpoint(endpoint) or "us-east-1"
        self._session = session or botocore.session.get_session()
        self._credentials = credentials
        self._pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=maxsize,
            block=True,
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            retries=False,
        )

    def _creds(self) -> Credentials:
        creds = self._credentials or self._session.get_credentials()
        if creds is None:
            raise ConfigurationError("no AWS credentials found for the Management API")
        return creds

    def _request(
        self, method: str, connection_id: str, data: bytes = b""
    ) -> urllib3.BaseHTTPResponse:
        url = f"{self.endpoint}/@connections/{quote(connection_id, safe='')}"
        request = AWSRequest(method=method, url=url, data=data)
        frozen = self._creds().get_frozen_credentials()
        SigV4Auth(frozen, "execute-api", self.region).add_auth(request)
        try:
            return self._pool.request(
                method, url, body=data or None, headers=dict(request.headers.items())
            )
        except urllib3.exceptions.HTTPError as exc:
            raise TransportError(f"network error: {exc}") from exc

    @staticmethod
    def _raise_for(resp: urllib3.BaseHTTPResponse, connection_id: str) -> None:
        status = resp.status
        if status < 300:
            return
        if status == 410:
            raise GoneError(connection_id)
        if status == 429:
            after = resp.headers.get("Retry-After")
            raise ThrottledError(retry_after=float(after) if after and after.isdigit() else None)
        if status == 413:
            raise PayloadTooLarge("the Management API refused the payload as too large")
        kind = resp.headers.get("x-amzn-ErrorType", "").split(":")[0]
        raise TransportError(f"Management API answered {status} {kind}".strip(), status=status)

    def post(self, connection_id: str, data: bytes) -> None:
        """``POST @connections/{id}``."""
        self._raise_for(self._request("POST", connection_id, data), connection_id)

    def delete(self, connection_id: str) -> None:
        """``DELETE @connections/{id}``."""
        self._raise_for(self._request("DELETE", connection_id), connection_id)

    def get(self, connection_id: str) -> dict[str, Any]:
        """``GET @connections/{id}``."""
        resp = self._request("GET", connection_id)
        self._raise_for(resp, connection_id)
        result: dict[str, Any] = json.loads(resp.data or b"{}")
        return result

    def close(self) -> None:
        """Close pooled connections."""
        self._pool.clear()
