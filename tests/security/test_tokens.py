"""Connection tokens: random, stored hashed, single-use, TTL honoured, bound to a user and
optionally a channel and an origin, never logged, and failed attempts count."""

from __future__ import annotations

import base64
import hashlib
import logging
import math
from collections import Counter
from datetime import timedelta

import attrs
import pytest

from apigw_ws_core.errors import RequestError
from apigw_ws_core.events import from_http
from apigw_ws_core.testing import gateway_headers, new_connection_id
from apigw_ws_core.tokens import TOKEN_BYTES, hash_token

from .support import SECRET, capture_logs, connect, make_app, message, snapshot, status_and_code


def test_tokens_are_random_with_at_least_128_bits():
    app = make_app(token_rate_per_user=None)
    tokens = [app.issue_token("1")[0] for _ in range(2000)]
    assert len(set(tokens)) == len(tokens)
    assert TOKEN_BYTES * 8 >= 128
    for token in tokens[:50]:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        assert len(raw) * 8 >= 128
    # characters are spread evenly over the URL-safe alphabet (no fixed structure); the
    # last character carries only the 4 leftover bits, so it is left out
    counts = Counter("".join(t[:-1] for t in tokens))
    assert len(counts) == 64
    expected = sum(counts.values()) / 64
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 150  # 63 degrees of freedom: p < 1e-8 for a fair source to exceed this
    # and every token is URL-safe as it is (goes into ?ws_token= unescaped)
    assert all(
        set(t) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        for t in tokens
    )
    assert math.log2(64) * min(len(t) for t in tokens) >= 128


def test_only_the_sha256_digest_is_stored():
    app = make_app()
    token, _ = app.issue_token("42", channel="room", origin="https://app.example.com")
    stored = list(app.storage.tokens.values())
    assert len(stored) == 1
    assert stored[0].token_hash == hashlib.sha256(token.encode()).hexdigest() == hash_token(token)
    assert token not in repr(app.storage.tokens)
    assert token not in repr(stored)


def test_single_use_and_a_replay_changes_nothing():
    app = make_app()
    token, _ = app.issue_token("7")
    assert connect(app, query=f"ws_token={token}")[0].status == 200
    before = snapshot(app.storage)
    reply, cid = connect(app, query=f"ws_token={token}")
    assert status_and_code(reply) == (401, "invalid_token")
    assert snapshot(app.storage) == before
    assert app.storage.get_session(cid) is None


@pytest.mark.parametrize("ttl", [1, 5, 60, 600])
def test_the_configured_ttl_is_honoured(ttl):
    app = make_app(token_ttl=ttl)
    start = app.clock()
    app.clock = lambda: start
    token, expires_in = app.issue_token("7")
    assert expires_in == ttl
    assert next(iter(app.storage.tokens.values())).expires_at == start + timedelta(seconds=ttl)
    app.clock = lambda: start + timedelta(seconds=ttl)  # exactly at expiry: too late
    assert status_and_code(connect(app, query=f"ws_token={token}")[0]) == (401, "invalid_token")
    app.clock = lambda: start
    token, _ = app.issue_token("7")
    app.clock = lambda: start + timedelta(seconds=ttl) - timedelta(microseconds=1)
    assert connect(app, query=f"ws_token={token}")[0].status == 200


def test_token_binds_the_user():
    app = make_app()
    token, _ = app.issue_token(1234)
    reply, cid = connect(app, query=f"ws_token={token}")
    assert reply.status == 200
    assert app.storage.get_session(cid).user_id == "1234"
    # the user of a session can only come from a token: query parameters are ignored
    app2 = make_app(require_token=False)
    _, cid2 = connect(app2, query="user_id=1&user=1&uid=1")
    assert app2.storage.get_session(cid2).user_id is None


@pytest.mark.parametrize(
    ("bound", "query", "origin"),
    [
        ({"channel": "room-a"}, "channel=room-b", None),
        ({"channel": "room-a"}, "", None),  # default channel
        ({"channel": "room-a"}, "channel=ROOM-A", None),
        ({"origin": "https://app.example.com"}, "", "https://evil.example"),
        ({"origin": "https://app.example.com"}, "", None),
        ({"origin": "https://app.example.com"}, "", "https://app.example.com.evil.example"),
        ({"origin": "https://app.example.com"}, "", "http://app.example.com"),
    ],
)
def test_bound_token_refuses_other_channel_or_origin_and_is_burnt(bound, query, origin):
    app = make_app()
    token, _ = app.issue_token("7", **bound)
    q = f"{query}&ws_token={token}" if query else f"ws_token={token}"
    before_sessions = dict(app.storage.sessions)
    reply, _ = connect(app, query=q, origin=origin)
    assert status_and_code(reply) == (401, "invalid_token")
    assert app.storage.sessions == before_sessions
    # burnt: a leaked token cannot be probed against several channels/origins
    assert app.storage.tokens == {}
    right = bound.get("channel")
    q = f"channel={right}&ws_token={token}" if right else f"ws_token={token}"
    assert connect(app, query=q, origin=bound.get("origin"))[0].status == 401


def test_issue_token_refuses_what_cannot_be_bound():
    app = make_app()
    for bad_user in (None, "", "x" * 65):
        with pytest.raises(ValueError):
            app.issue_token(bad_user)
    for bad_channel in ("", "a b", "x" * 101, "ch\x00"):
        with pytest.raises(RequestError) as exc:
            app.issue_token("1", channel=bad_channel)
        assert exc.value.code == "invalid_channel"
    for bad_origin in ("null", "https://a.example/path", "https://a.example:99999", "x" * 300):
        with pytest.raises(RequestError) as exc:
            app.issue_token("1", origin=bad_origin)
        assert exc.value.code == "bad_request"
    assert app.storage.tokens == {}


@pytest.mark.parametrize(
    "value",
    [
        "",
        "x",
        "x" * 257,
        "x" * 100_000,
        "%00",
        "\x00",
        "' OR 1=1 --",
        "a" * 64,  # looks like a stored digest
        "\ud800",
        "\u00e9\u00e9",
    ],
)
def test_garbage_tokens_are_401_never_500(value):
    app = make_app()
    real, _ = app.issue_token("7")
    # a digest of a real token presented as a token does not work either
    values = [value, hash_token(real)]
    for v in values:
        event = from_http("connect", gateway_headers("connect", new_connection_id(), secret=SECRET))
        event = type(event)(**{**_fields(event), "query": {"ws_token": v}})
        reply = app.handle(event)
        expected = (401, "token_required") if v == "" else (401, "invalid_token")
        assert status_and_code(reply) == expected
    assert len(app.storage.tokens) == 1


def _fields(event):
    return {f.name: getattr(event, f.name) for f in attrs.fields(type(event)) if f.init}


def test_repeated_token_or_channel_parameter_is_refused_before_use():
    """``?ws_token=a&ws_token=b``: a proxy, an authorizer and the app may each pick a
    different one. Refused with 400; the token stays unused."""
    app = make_app()
    token, _ = app.issue_token("7")
    for query in (
        f"ws_token={token}&ws_token={token}",
        f"ws_token=x&ws_token={token}",
        f"ws_token={token}&channel=a&channel=user.7",
    ):
        reply, _ = connect(app, query=query)
        assert status_and_code(reply) == (400, "bad_request")
    assert len(app.storage.tokens) == 1
    assert connect(app, query=f"ws_token={token}&tag=a&tag=b")[0].status == 200


def test_failed_token_attempts_count_toward_the_per_ip_limit():
    app = make_app(connect_rate_per_ip="5/60")
    for _ in range(5):
        assert connect(app, query="ws_token=guess")[0].status == 401
    token, _ = app.issue_token("7")
    reply, _ = connect(app, query=f"ws_token={token}")
    assert status_and_code(reply) == (429, "rate_limited")
    assert "Retry-After" in dict(reply.headers)
    assert len(app.storage.tokens) == 1  # not consumed by the throttled attempt
    # another address is not affected
    assert connect(app, query=f"ws_token={token}", source_ip="198.51.100.99")[0].status == 200


def test_wrongly_bound_token_attempts_count_toward_the_per_user_limit():
    app = make_app(connect_rate_per_user="2/60", connect_rate_per_ip=None)
    for _ in range(2):
        token, _ = app.issue_token("7", channel="room")
        assert connect(app, query=f"ws_token={token}&channel=other")[0].status == 401
    token, _ = app.issue_token("7", channel="room")
    reply, _ = connect(app, query=f"ws_token={token}&channel=room")
    assert status_and_code(reply) == (429, "rate_limited")
    token, _ = app.issue_token("8")
    assert connect(app, query=f"ws_token={token}")[0].status == 200


def test_token_plaintext_never_reaches_the_logs():
    app = make_app(token_ttl=1, connect_rate_per_ip="3/60")
    tokens = [app.issue_token("7", channel="room")[0] for _ in range(6)]
    with capture_logs() as logs:
        connect(app, query=f"channel=room&ws_token={tokens[0]}")  # ok
        connect(app, query=f"channel=room&ws_token={tokens[0]}")  # replay
        connect(app, query=f"channel=other&ws_token={tokens[1]}")  # wrong channel
        connect(app, query=f"channel=room&ws_token={tokens[2]}")  # rate limited
        connect(app, query=f"channel=room&ws_token={tokens[3]}", secret="bad")  # forged
        later = app.clock() + timedelta(seconds=5)
        app.clock = lambda: later
        connect(app, query=f"channel=room&ws_token={tokens[4]}", source_ip="192.0.2.1")
        event = from_http(
            "connect",
            gateway_headers("connect", new_connection_id(), secret=SECRET),
            f"ws_token={tokens[5]}",
        )
        logging.getLogger("test").error("event was %r", event)
    assert "invalid_token" in logs.text and "rate_limited" in logs.text
    logs.assert_absent(*tokens, SECRET)
    for token in tokens:
        logs.assert_absent(hash_token(token))


def test_a_handler_cannot_learn_the_token_of_its_connection():
    app = make_app()
    token, _ = app.issue_token("7")
    seen: list[str] = []
    app.add_handler("peek", lambda ctx, m: seen.append(repr(ctx.event) + repr(ctx.session)))
    _, cid = connect(app, query=f"ws_token={token}")
    assert message(app, cid, '{"action": "peek"}').status == 200
    assert token not in seen[0]


@pytest.mark.parametrize("ttl", [0, -1, 86401, "60", 1.5, True, None])
def test_a_ttl_that_would_not_be_honoured_is_a_configuration_error(ttl):
    from apigw_ws_core import Config
    from apigw_ws_core.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        Config(secret=SECRET, token_ttl=ttl)
    with pytest.raises(ConfigurationError):
        Config.from_mapping({"SECRET": SECRET, "TOKEN_TTL": ttl})
