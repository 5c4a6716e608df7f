"""Hypothesis strategies for hostile requests, shared by the property tests of every entry
point (plain WSGI, Lambda, Django, Flask), and the invariants every reply must keep.

A generated :class:`HostileRequest` starts from what API Gateway would send and then
mutates it: wrong or missing secrets, foreign or malformed connection ids, mismatched event
types, forged headers, odd header values, repeated and odd query parameters, and bodies
from random bytes to deeply nested JSON with framework method names as handlers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import attrs
from hypothesis import strategies as st

from apigw_ws_core.testing import gateway_headers
from apigw_ws_core.tokens import token_keys, verify_token

if TYPE_CHECKING:
    from apigw_ws_core import Config

#: Error codes a reply may carry; anything else (or a 5xx) is a bug.
STABLE_CODES = frozenset(
    {
        "bad_request",
        "invalid_connection_id",
        "body_too_large",
        "invalid_json",
        "invalid_message",
        "invalid_handler_name",
        "unknown_handler",
        "invalid_channel",
        "invalid_attribute",
        "forbidden",
        "channel_forbidden",
        "origin_not_allowed",
        "token_required",
        "invalid_token",
        "unknown_connection",
        "rate_limited",
        "not_found",
        "method_not_allowed",
        "handler_forbidden",
        "incomplete_body",
        "connection_exists",
    }
)

#: The live connection every test app holds before the request (a victim to target).
LIVE_CID = "LiveConnAAAAAA0="
ALLOWED_ORIGIN = "https://app.example.com"

_HEADER_TEXT = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=40,
)
_ID_TEXT = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=0, max_size=140)

CHANNELS = st.sampled_from(
    [
        "lobby",
        "room-1",
        "user.7",
        "user.8",
        "USER.8",
        "private-x",
        "presence-x",
        "",
        "bad name",
        "a" * 101,
        "x*",
        "ch%00",
        "ümlaut",
    ]
)

HANDLER_NAMES = st.one_of(
    st.sampled_from(
        [
            "echo",
            "chat_message",
            "subscribe",
            "unsubscribe",
            "invoke",
            "handler_methods",
            "websocket_session",
            "context",
            "__init__",
            "__class__",
            "_private",
            "dispatch",
            "get",
            "post",
            "Echo",
            "echo ",
            "",
        ]
    ),
    st.text(max_size=12),
    st.integers(),
    st.none(),
    st.booleans(),
    st.lists(st.text(max_size=3), max_size=2),
)

JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=12,
)


@st.composite
def json_messages(draw: st.DrawFn) -> bytes:
    """A JSON object that looks like a message, with hostile values."""
    obj: dict[str, Any] = {}
    key = draw(st.sampled_from(["action", "handler", "Action", "route", "action"]))
    obj[key] = draw(HANDLER_NAMES)
    if draw(st.booleans()):
        obj["channel"] = draw(CHANNELS | JSON_LEAVES)
    extra = draw(st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=3))
    obj.update({k: v for k, v in extra.items() if k not in obj})
    return json.dumps(obj).encode()


_NESTING = st.integers(min_value=20, max_value=3000).map(
    lambda n: b'{"action": "echo", "x": ' + b"[" * n + b"]" * n + b"}"
)

BODIES = st.one_of(
    json_messages(),
    json_messages(),
    json_messages(),
    st.binary(max_size=120),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.text(max_size=60).map(lambda t: t.encode("utf-8", "surrogatepass")),
    _NESTING,
    st.sampled_from(
        [
            b"",
            b'{"action": "echo", "x": 1e999999}',
            b'{"action": "echo", "action": "chat_message"}',
            b'{"action": "echo", "t": "\\ud800"}',
            b"\xef\xbb\xbf{}",
            b"[" * 50_000,
            b'{"action": "echo", "pad": "' + b"a" * 140_000 + b'"}',
        ]
    ),
)


@attrs.frozen
class HostileRequest:
    """One generated call: where it goes, what it carries, and what the forger knows."""

    method: str
    route: str
    headers: tuple[tuple[str, str], ...]
    query: str
    body: bytes
    secret_ok: bool
    token_presented: bool

    def header_dict(self) -> dict[str, str]:
        """Headers as a dict (the last value of a repeated name wins)."""
        return dict(self.headers)


@st.composite
def hostile_requests(
    draw: st.DrawFn, *, secret: str, token: str, origin: str = ALLOWED_ORIGIN
) -> HostileRequest:
    """A request to one of our routes, built like API Gateway's and then mutated.

    ``token`` is a live token the forger may have stolen; ``origin`` the allowed origin."""
    route = draw(st.sampled_from(["connect"] * 5 + ["default"] * 5 + ["disconnect"] * 2 + ["*"]))
    if route == "*":  # a custom route slug, or garbage
        route = draw(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=8))
    cid = draw(st.sampled_from([LIVE_CID] * 3 + ["NewConnBBBBBBB0=", "lIVEcONNaaaaaa0=", "*"]))
    if cid == "*":
        cid = draw(_ID_TEXT)
    secret_kind = draw(st.sampled_from(["ok"] * 9 + ["missing", "wrong", "case"]))
    presented = {
        "ok": secret,
        "missing": None,
        "wrong": draw(_HEADER_TEXT.filter(lambda s: s != secret)),
        "case": secret.swapcase(),
    }[secret_kind]
    headers = gateway_headers(
        route if route in ("connect", "disconnect", "default") else "default",
        cid,
        secret=presented,
        source_ip=draw(st.sampled_from(["203.0.113.10", "2001:db8::1", "garbage", ""])),
    )
    if route == "connect" and draw(st.integers(0, 4)) < 3:  # browsers send an Origin
        headers["Origin"] = origin
    for name in draw(st.lists(st.sampled_from(sorted(headers)), max_size=2, unique=True)):
        if name != "X-Apigw-Ws-Secret":
            del headers[name]
    optional = {
        "Origin": st.sampled_from([origin, origin, "https://evil.example", "null"]) | _HEADER_TEXT,
        "connectionId": st.sampled_from([cid, LIVE_CID]) | _ID_TEXT,
        "X-Apigw-Ws-Event-Type": st.sampled_from(["CONNECT", "MESSAGE", "DISCONNECT"])
        | _HEADER_TEXT,
        "X-Forwarded-For": _HEADER_TEXT,
        "Sec-WebSocket-Protocol": _HEADER_TEXT,
        "User-Agent": st.just("AmazonAPIGateway_abcdef1234") | _HEADER_TEXT,
        "X-Amzn-Apigateway-Api-Id": st.just("abcdef1234") | _HEADER_TEXT,
        "X-Apigw-Ws-Stage": _HEADER_TEXT,
        "Content-Type": st.sampled_from(["application/json", "text/plain; charset=latin-1"]),
        "X-Apigw-Secret": st.just(secret),
    }
    for name in draw(st.lists(st.sampled_from(sorted(optional)), max_size=4, unique=True)):
        headers[name] = draw(optional[name])
    extra = draw(
        st.lists(
            st.tuples(
                st.text(
                    st.characters(min_codepoint=0x41, max_codepoint=0x5A), min_size=1, max_size=8
                ),
                _HEADER_TEXT,
            ),
            max_size=2,
        )
    )
    pairs = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["channel", "ws_token", "channel", "ws_token", "x", "user_id"]),
                CHANNELS | st.sampled_from([token, token, token[:-1], "x" * 300]) | _HEADER_TEXT,
            ),
            max_size=4,
        )
    )
    if draw(st.integers(0, 2)) == 0:  # the well-formed connect a browser would make
        pairs = [("channel", draw(CHANNELS)), ("ws_token", token)]
    query = "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in pairs)
    if draw(st.integers(0, 9)) == 0:
        query = draw(_HEADER_TEXT.map(lambda t: quote(t, safe="=&%+")))
    method = draw(st.sampled_from(["POST"] * 20 + ["GET", "PUT"]))
    body = b"" if route in ("connect", "disconnect") and draw(st.booleans()) else draw(BODIES)
    return HostileRequest(
        method=method,
        route=route,
        headers=tuple(headers.items()) + tuple(extra),
        query=query,
        body=body,
        secret_ok=secret_kind == "ok",
        token_presented=token in query,
    )


def check_reply(
    request: HostileRequest,
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    secret_checked: bool = True,
    framework_statuses: frozenset[int] = frozenset(),
) -> None:
    """The invariants of every reply: no 5xx, a stable JSON error for every 4xx, 403 for
    every call without the secret, and no header value that could split a response.

    ``framework_statuses``: statuses a web framework may answer itself, before our view
    runs (a URL that matches no route: Django's and Flask's own 404/405 pages)."""
    assert status < 500, (status, body[:200])
    if status >= 400 and not (status in framework_statuses and not body.startswith(b"{")):
        data = json.loads(body)
        assert data["error"] in STABLE_CODES, data
        assert isinstance(data["message"], str)
    if secret_checked and not request.secret_ok:
        assert status == 403, (status, body[:200])
    for value in headers.values():
        assert "\r" not in value and "\n" not in value


def ledger_key(config: Config, token: str) -> str:
    """The key of ``token`` in the spent-token ledger (SHA-256 of its signed bytes)."""
    return verify_token(token_keys(config), token, now=datetime.now(UTC)).digest


def check_unchanged(
    before: Mapping[str, Any], after: Mapping[str, Any], *, presented_token_digest: str | None
) -> None:
    """A rejected call changed nothing: sessions and subscriptions are equal, and the
    spent-token ledger too, except that a token the call presented may have been spent (a
    presented token is burnt even when the connect is then refused, so it cannot be
    probed). The ledger never loses a row (only cleanup removes expired ones)."""
    assert after["sessions"] == before["sessions"]
    assert after["subs"] == before["subs"]
    assert set(before["tokens"]) <= set(after["tokens"]), "a spent token was forgotten"
    added = set(after["tokens"]) - set(before["tokens"])
    assert added <= ({presented_token_digest} if presented_token_digest else set()), added
