"""The framework-neutral answer to a request: :class:`Reply` ``(status, body, headers)``.

Every entry point (HTTP intake, the token endpoint, Lambda) produces one; each adapter turns
it into its framework's response and does nothing else with it.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from apigw_ws_core.errors import RequestError

__all__ = ["Reply", "encode_payload"]


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
