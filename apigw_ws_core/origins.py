"""Browser origins: :func:`parse_origin` and the allowlist match :func:`origin_allowed`.

An origin is exactly ``scheme://host[:port]``; anything else (user info, a path, a query,
whitespace) never matches. Used at ``$connect`` (``allowed_origins``) and by the token
endpoint (a malformed ``origin`` field is refused).
"""

from __future__ import annotations

import re

__all__ = ["origin_allowed", "parse_origin"]


#: ``scheme://host[:port]`` and nothing else (an optional trailing ``/`` is tolerated).
_ORIGIN_RE = re.compile(
    r"\A(?P<scheme>[a-z][a-z0-9+.-]{0,31})://"
    r"(?P<host>\*\.[a-z0-9_.-]{1,253}|[a-z0-9_.-]{1,253}|\[[0-9a-f:.]{2,45}\])"
    r"(?::(?P<port>[0-9]{1,5}))?/?\Z",
    re.IGNORECASE,
)
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def parse_origin(value: str) -> tuple[str, str, int | None] | None:
    """``(scheme, host, port)`` lower-cased with the default port filled in, or ``None``
    if ``value`` is not exactly ``scheme://host[:port]`` (no user info, path, query,
    fragment, whitespace or control characters)."""
    m = _ORIGIN_RE.match(value)
    if m is None:
        return None
    scheme, host = m["scheme"].lower(), m["host"].lower()
    port = int(m["port"]) if m["port"] else _DEFAULT_PORTS.get(scheme)
    if port is not None and not 0 < port < 65536:
        return None
    return scheme, host, port


def origin_allowed(origin: str, allowed: tuple[str, ...], wildcards: bool) -> bool:
    """Whether ``origin`` matches one of ``allowed`` exactly (scheme, host and port; a
    ``*.example.com`` pattern matches subdomains only when ``wildcards``)."""
    parsed = parse_origin(origin)
    if parsed is None or parsed[1].startswith("*"):
        return False
    scheme, host, port = parsed
    for pattern in allowed:
        p = parse_origin(pattern.strip())
        if p is None or p[0] != scheme or p[2] != port:
            continue
        if p[1] == host:
            return True
        if wildcards and p[1].startswith("*."):
            suffix = p[1][1:]
            if host.endswith(suffix) and len(host) > len(suffix):
                return True
    return False
