"""Identifiers shaped like the ones API Gateway hands out.

Connection ids, request ids and message ids on AWS are 16 characters: the
standard base64 encoding of 11 random bytes, so they always end in ``=`` and
may contain ``+`` and ``/``. Code that forgets to URL-encode an id before
putting it in a path breaks on exactly those characters, so the local gateway
can be told to hand out only ids that contain both (``special_chars=True``).
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import time

__all__ = [
    "is_valid_connection_id",
    "new_connection_id",
    "new_request_id",
    "new_trace_id",
]

_ID_PATTERN = re.compile(r"[A-Za-z0-9+/_-]{15}=")


def _random_id() -> str:
    """Return base64 of 11 random bytes: 16 characters ending in ``=``."""
    return base64.b64encode(os.urandom(11)).decode("ascii")


def new_connection_id(*, special_chars: bool = False) -> str:
    """Return a new AWS-format connection id.

    :param special_chars: when true, only return ids that contain both ``+``
        and ``/`` (useful to prove that callers URL-encode ids).
    """
    while True:
        candidate = _random_id()
        if not special_chars or ("+" in candidate and "/" in candidate):
            return candidate


def new_request_id() -> str:
    """Return a request/message id in the same format AWS uses for them."""
    return _random_id()


def is_valid_connection_id(value: str) -> bool:
    """Tell whether ``value`` has the shape of an AWS WebSocket connection id."""
    return _ID_PATTERN.fullmatch(value) is not None


def new_trace_id() -> str:
    """Return an ``X-Amzn-Trace-Id`` value: ``Root=1-<epoch hex>-<24 hex>``."""
    return f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)}"
