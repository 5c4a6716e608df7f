"""Connection tokens: signed (HMAC), not stored; single-use through the spent-token ledger;
TTL honoured; bound to a user and optionally a channel and an origin; one spelling per
token; never logged; failed attempts count."""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest

from apigw_ws_core import Config, MemoryStorage, WebSocketApp
from apigw_ws_core import tokens as tokens_module
from apigw_ws_core.errors import ConfigurationError, InvalidToken, RequestError
from apigw_ws_core.events import from_http
from apigw_ws_core.storage import Storage
from apigw_ws_core.testing import (
    RecordingTransport,
    gateway_headers,
    new_connection_id,
    redeem_token,
)
from apigw_ws_core.tokens import (
    MAX_TOKEN_LENGTH,
    SPENT_GRACE,
    sign_token,
    token_keys,
    verify_token,
)

from .support import SECRET, capture_logs, connect, make_app, message, snapshot, status_and_code

#: A second gateway secret (the one a rotation moves to) and a shared token key.
NEW_SECRET = "nEw-SeCrEt-7a31c9e0b4-after-rotation"
TOKEN_KEY = "token-key-0123456789abcdefghijklmnopqrstuv"
T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)

#: The token layout (see apigw_ws_core.tokens): byte ranges of each field.
FIELDS = {
    "version": slice(0, 1),
    "flags": slice(1, 2),
    "expiry": slice(2, 10),
    "nonce": slice(10, 26),
    "binding tag": slice(26, 42),
    "user id": slice(42, -32),
    "hmac": slice(-32, None),
}
URLSAFE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _raw(token: str) -> bytes:
    """The token's bytes, decoded leniently (what a sloppy verifier would accept)."""
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _digest(token: str) -> str:
    """The token's key in the spent-token ledger: SHA-256 of its signed bytes."""
    return hashlib.sha256(_raw(token)[:-32]).hexdigest()


def _app_on(storage: Storage, **config: Any) -> WebSocketApp:
    """Another app instance (another process, another host) on ``storage``."""
    config.setdefault("secret", SECRET)
    return WebSocketApp(storage=storage, transport=RecordingTransport(), config=Config(**config))


def _fields(event):
    return {f.name: getattr(event, f.name) for f in attrs.fields(type(event)) if f.init}


def _present(app: WebSocketApp, value: str, *, secret: str = SECRET, **query: str):
    """A ``$connect`` whose ``ws_token`` is exactly ``value`` (no URL decoding on the way:
    a ``+`` stays a ``+``); returns ``(reply, connection id)``."""
    cid = new_connection_id()
    event = from_http("connect", gateway_headers("connect", cid, secret=secret))
    event = type(event)(**{**_fields(event), "query": {**query, "ws_token": value}})
    return app.handle(event), cid


def _connected(app: WebSocketApp) -> list[str]:
    return [cid for cid, s in app.storage.sessions.items() if s.connected]


# --- form: unpredictable, URL-safe, short enough ------------------------------------------


def test_tokens_are_unique_with_128_random_bits_and_url_safe():
    app = make_app()
    tokens = [app.issue_token("1")[0] for _ in range(2000)]
    assert len(set(tokens)) == len(tokens)
    assert len({_digest(t) for t in tokens}) == len(tokens)  # one ledger key each
    nonces = [_raw(t)[FIELDS["nonce"]] for t in tokens]
    assert all(len(n) * 8 >= 128 for n in nonces) and len(set(nonces)) == len(nonces)
    # the nonce bytes are spread evenly over 0-255 (a fair random source)
    counts = Counter(b for n in nonces for b in n)
    expected = sum(counts.values()) / 256
    chi2 = sum((counts.get(b, 0) - expected) ** 2 / expected for b in range(256))
    assert chi2 < 400  # 255 degrees of freedom: p < 1e-8 for a fair source to exceed this
    # the MAC differs in every token too (no two tokens share their signed bytes)
    assert len({_raw(t)[FIELDS["hmac"]] for t in tokens}) == len(tokens)
    # every token is URL-safe as it is (goes into ?ws_token= unescaped), and short
    assert all(set(t) <= URLSAFE and len(t) <= MAX_TOKEN_LENGTH for t in tokens)


def test_the_longest_user_id_makes_a_token_within_max_length_that_works():
    app = make_app()
    uid = "\U0001f600" * 64  # 64 characters of 4 UTF-8 bytes each: the longest token
    token, _ = app.issue_token(uid)
    assert len(token) <= MAX_TOKEN_LENGTH
    reply, cid = connect(app, query=f"ws_token={token}")
    assert reply.status == 200
    assert app.storage.get_session(cid).user_id == uid


def test_nothing_is_stored_at_issuance_and_only_the_signed_bytes_digest_at_connect():
    app = make_app()
    token, _ = app.issue_token("42", channel="room", origin="https://app.example.com")
    assert snapshot(app.storage) == snapshot(MemoryStorage())  # no storage write at all
    assert app.storage.counters == {}
    reply, _ = connect(
        app, query=f"channel=room&ws_token={token}", origin="https://app.example.com"
    )
    assert reply.status == 200
    [(key, row)] = app.storage.tokens.items()
    claims = verify_token(token_keys(app.config), token, now=app.clock())
    assert key == row.token_hash == claims.digest == _digest(token)
    # not the digest of the token's text: another spelling must not be another key
    assert key != hashlib.sha256(token.encode()).hexdigest()
    assert row.user_id == "42" and row.expires_at == claims.expires_at + SPENT_GRACE
    assert token not in repr(app.storage.tokens)
    assert token not in repr(row)


def test_issuing_needs_no_storage_at_all():
    """The token endpoint stays up while storage is down: issuing is an HMAC."""

    class Down(MemoryStorage):
        def __getattribute__(self, name: str) -> Any:
            if not name.startswith("_") and callable(object.__getattribute__(self, name)):
                raise AssertionError(f"storage.{name} called at issuance")
            return object.__getattribute__(self, name)

    app = _app_on(Down())
    token, expires_in = app.issue_token("7", channel="room", origin="https://app.example.com")
    assert token and expires_in == 60
    # and the endpoint itself (channel check, origin, reply) makes no storage call either
    body = b'{"channel": "room"}'
    request = tokens_module.TokenRequest(
        user_id="7",
        headers={"Content-Type": "application/json", "Content-Length": str(len(body))},
        read=io.BytesIO(body).read,
    )
    reply = tokens_module.token_endpoint(app, request)
    assert reply.status == 200, reply.body


# --- single use -------------------------------------------------------------------------


def test_single_use_and_a_replay_changes_nothing():
    app = make_app()
    token, _ = app.issue_token("7")
    assert connect(app, query=f"ws_token={token}")[0].status == 200
    before = snapshot(app.storage)
    reply, cid = connect(app, query=f"ws_token={token}")
    assert status_and_code(reply) == (401, "invalid_token")
    assert snapshot(app.storage) == before
    assert app.storage.get_session(cid) is None


def test_a_replay_through_another_app_instance_on_the_same_storage_is_refused():
    app = make_app()
    other = _app_on(app.storage)
    token, _ = app.issue_token("7")
    assert connect(other, query=f"ws_token={token}")[0].status == 200
    assert status_and_code(connect(app, query=f"ws_token={token}")[0]) == (401, "invalid_token")
    assert status_and_code(connect(other, query=f"ws_token={token}")[0]) == (
        401,
        "invalid_token",
    )
    assert len(_connected(app)) == 1


def test_redeem_token_is_single_use_and_checks_bindings():
    """``testing.redeem_token`` (for tests of token issuers) spends a token once, in the
    same ledger ``$connect`` uses, and like ``$connect`` burns a wrongly bound one."""
    app = make_app()
    token, _ = app.issue_token("7", channel="room")
    assert redeem_token(app, token, channel="room") == "7"
    with pytest.raises(InvalidToken):
        redeem_token(app, token, channel="room")
    assert list(app.storage.tokens) == [_digest(token)]
    assert status_and_code(connect(app, query=f"channel=room&ws_token={token}")[0]) == (
        401,
        "invalid_token",
    )
    with pytest.raises(InvalidToken):
        redeem_token(app, token[:-2] + "AA", channel="room")
    for channel in ("other", None):
        bound, _ = app.issue_token("7", channel="room")
        with pytest.raises(InvalidToken):
            redeem_token(app, bound, channel=channel)
        with pytest.raises(InvalidToken):  # burnt by the wrong binding, as at $connect
            redeem_token(app, bound, channel="room")


def test_a_replay_after_cleanup_is_still_refused():
    """Cleanup keeps a spent token's ledger row until its expiry + SPENT_GRACE (hosts with
    clocks up to that far apart cannot replay it); after that the token is expired."""
    app = make_app(token_ttl=60)
    app.clock = lambda: T0
    token, _ = app.issue_token("7")
    assert connect(app, query=f"ws_token={token}")[0].status == 200
    expiry = T0 + timedelta(seconds=60)

    def replay_at(at: datetime) -> tuple[int, str | None]:
        app.clock = lambda: at
        return status_and_code(connect(app, query=f"ws_token={token}")[0])

    for cleaned_at in (
        T0 + timedelta(seconds=30),
        expiry,
        expiry + SPENT_GRACE - timedelta(seconds=1),
    ):
        app.clock = lambda at=cleaned_at: at
        app.cleanup(heal=False)
        assert list(app.storage.tokens) == [_digest(token)], cleaned_at  # kept
        # a $connect host whose clock is behind the cleanup host's still sees it spent
        assert replay_at(T0 + timedelta(seconds=59)) == (401, "invalid_token")
    app.clock = lambda: expiry + SPENT_GRACE
    assert app.cleanup(heal=False).storage.expired_tokens == 1
    assert app.storage.tokens == {}
    # the row is gone, and the token is long expired: still refused
    assert replay_at(expiry + SPENT_GRACE) == (401, "invalid_token")
    assert replay_at(expiry + SPENT_GRACE + timedelta(days=1)) == (401, "invalid_token")
    assert app.storage.tokens == {}
    assert len(_connected(app)) == 1


# --- expiry ----------------------------------------------------------------------------


@pytest.mark.parametrize("ttl", [1, 5, 60, 600])
def test_the_configured_ttl_is_honoured(ttl):
    app = make_app(token_ttl=ttl)
    start = T0
    app.clock = lambda: start
    token, expires_in = app.issue_token("7")
    assert expires_in == ttl
    assert app.storage.tokens == {}  # not stored
    claims = verify_token(token_keys(app.config), token, now=start)
    assert claims.expires_at == start + timedelta(seconds=ttl)
    app.clock = lambda: start + timedelta(seconds=ttl)  # exactly at expiry: too late
    assert status_and_code(connect(app, query=f"ws_token={token}")[0]) == (401, "invalid_token")
    app.clock = lambda: start
    token, _ = app.issue_token("7")
    app.clock = lambda: start + timedelta(seconds=ttl) - timedelta(microseconds=1)
    assert connect(app, query=f"ws_token={token}")[0].status == 200


@pytest.mark.parametrize("fraction", [1, 500_000, 999_999])
def test_the_ttl_is_honoured_when_issued_between_two_seconds(fraction):
    """The expiry is kept to the microsecond: a token issued at hh:mm:ss.999999 lives the
    whole ``expires_in`` the endpoint promised, and not a microsecond more."""
    app = make_app(token_ttl=1)
    start = T0 + timedelta(microseconds=fraction)
    app.clock = lambda: start
    token, expires_in = app.issue_token("7")
    late, _ = app.issue_token("7")
    assert verify_token(token_keys(app.config), token, now=start).expires_at == start + timedelta(
        seconds=expires_in
    )
    app.clock = lambda: start + timedelta(seconds=expires_in) - timedelta(microseconds=1)
    assert connect(app, query=f"ws_token={token}")[0].status == 200
    app.clock = lambda: start + timedelta(seconds=expires_in)
    assert status_and_code(connect(app, query=f"ws_token={late}")[0]) == (401, "invalid_token")


def test_an_expired_token_is_refused_and_not_spent():
    app = make_app(token_ttl=60)
    app.clock = lambda: T0
    token, _ = app.issue_token("7")
    for late in (60, 61, 3600, 86400 * 365):
        app.clock = lambda late=late: T0 + timedelta(seconds=late)
        reply, cid = connect(app, query=f"ws_token={token}")
        assert status_and_code(reply) == (401, "invalid_token")
        assert app.storage.get_session(cid) is None
    assert app.storage.tokens == {}
    # the refused attempts spent nothing: before its expiry the token still opens a connection
    app.clock = lambda: T0 - timedelta(days=1)
    assert connect(app, query=f"ws_token={token}")[0].status == 200


# --- bindings --------------------------------------------------------------------------


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
    # burnt (in the spent-token ledger): a leaked token cannot be probed against several
    # channels/origins
    assert list(app.storage.tokens) == [_digest(token)]
    right = bound.get("channel")
    q = f"channel={right}&ws_token={token}" if right else f"ws_token={token}"
    assert connect(app, query=q, origin=bound.get("origin"))[0].status == 401
    assert app.storage.sessions == before_sessions


def test_a_bound_token_opens_its_channel_from_its_origin():
    app = make_app()
    origin = "https://app.example.com"
    token, _ = app.issue_token("7", channel="room-a", origin=origin)
    reply, cid = connect(app, query=f"channel=room-a&ws_token={token}", origin=origin)
    assert reply.status == 200
    assert app.storage.get_session(cid).channel_name == "room-a"


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


# --- forgery: tampered bytes, other keys, other spellings --------------------------------


@pytest.mark.parametrize("field", list(FIELDS))
def test_every_tampered_bit_is_401_and_spends_nothing(field):
    """Flip each bit of one field of a valid (channel- and origin-bound) token, re-encoded
    canonically: always ``401 invalid_token``, nothing spent; the genuine token still works."""
    app = make_app(connect_rate_per_ip=None)  # (attempts count: tested below)
    origin = "https://app.example.com"
    token, _ = app.issue_token("7", channel="room", origin=origin)
    raw = _raw(token)
    start, stop, _ = FIELDS[field].indices(len(raw))
    assert stop > start
    for i in range(start, stop):
        for bit in range(8):
            forged = bytearray(raw)
            forged[i] ^= 1 << bit
            reply, cid = connect(
                app, query=f"channel=room&ws_token={_encode(bytes(forged))}", origin=origin
            )
            assert status_and_code(reply) == (401, "invalid_token"), (field, i, bit)
            assert app.storage.get_session(cid) is None
    assert app.storage.tokens == {} and app.storage.sessions == {}
    reply, _ = connect(app, query=f"channel=room&ws_token={token}", origin=origin)
    assert reply.status == 200


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("user id", b"8"),  # another user
        ("user id", b"7" * 2),
        ("expiry", (2**40).to_bytes(8, "big")),  # far in the future
        ("flags", b"\x00"),  # drop the channel and origin binding
        ("binding tag", bytes(16)),
        ("nonce", bytes(16)),  # another nonce: another ledger key
        ("version", b"\x02"),
    ],
)
def test_a_rewritten_field_is_refused(field, value):
    app = make_app()
    token, _ = app.issue_token("7", channel="room", origin="https://app.example.com")
    raw = bytearray(_raw(token))
    raw[FIELDS[field]] = value
    for channel, origin in (("room", "https://app.example.com"), ("lobby", None)):
        reply, _ = connect(
            app, query=f"channel={channel}&ws_token={_encode(bytes(raw))}", origin=origin
        )
        assert status_and_code(reply) == (401, "invalid_token")
    assert app.storage.tokens == {} and app.storage.sessions == {}


def test_a_token_signed_with_another_key_is_refused():
    app = make_app()
    now = app.clock()
    later = now + timedelta(seconds=60)
    forged = [
        sign_token(b"k" * 32, "7", expires_at=later),  # a key of the attacker's choice
        sign_token(b"", "7", expires_at=later),
        make_app(secret=NEW_SECRET).issue_token("7")[0],  # another deployment's secret
        make_app(token_key=TOKEN_KEY).issue_token("7")[0],  # a token key, same secret
        _app_on(MemoryStorage(), secret=None, allow_insecure_no_secret=True).issue_token("7")[0],
        # the secret itself used as the key (it is never used directly)
        sign_token(SECRET.encode(), "7", expires_at=later),
    ]
    for token in forged:
        reply, _ = connect(app, query=f"ws_token={token}")
        assert status_and_code(reply) == (401, "invalid_token")
        with pytest.raises(InvalidToken):
            verify_token(token_keys(app.config), token, now=now)
    assert app.storage.tokens == {} and app.storage.sessions == {}


def test_a_correctly_signed_token_of_another_version_or_with_unknown_flags_is_refused():
    """Even with our own key: only version 1 with known flags is accepted."""
    import hmac
    import struct

    app = make_app()
    key = token_keys(app.config)[0]
    genuine = _raw(app.issue_token("7")[0])
    expiry, tag = genuine[FIELDS["expiry"]], genuine[FIELDS["binding tag"]]

    def signed(version: int, flags: int, user: bytes = b"7", expires: bytes = expiry) -> str:
        body = struct.pack(">BB", version, flags) + expires + os.urandom(16) + tag + user
        return _encode(body + hmac.new(key, body, hashlib.sha256).digest())

    assert connect(app, query=f"ws_token={signed(1, 0)}")[0].status == 200  # the control
    for token in (
        signed(0, 0),
        signed(2, 0),
        signed(255, 0),
        signed(1, 4),
        signed(1, 128),
        signed(1, 0, b""),
        signed(1, 0, b"\xff\xfe"),  # not UTF-8
        signed(1, 0, b"u" * 65),
        signed(1, 0, expires=bytes(8)),  # expired in 1970
        signed(1, 0, expires=b"\xff" * 8),  # past any datetime: refused, not a 500
    ):
        assert status_and_code(connect(app, query=f"ws_token={token}")[0]) == (
            401,
            "invalid_token",
        )
    assert len(app.storage.tokens) == 1


def _lenient(value: str) -> bytes:
    """What a lenient decoder makes of ``value``: either alphabet, padding and stray
    characters ignored, unused low bits dropped."""
    std = "".join(c for c in value.replace("-", "+").replace("_", "/") if c.isalnum() or c in "+/")
    return base64.b64decode(std + "=" * (-len(std) % 4))


def _spellings(token: str) -> list[str]:
    """Other spellings of ``token`` that a lenient base64 decoder reads as the same bytes."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    raw = _raw(token)
    out = [
        token + "=" * (-len(token) % 4 or 4),  # padding (or a stray '=' when none is due)
        token + "=",
        token + "==",
        token.replace("-", "+").replace("_", "/"),  # the standard alphabet
        token + "\n",
        " " + token,
        token[:10] + "\n" + token[10:],
        token + ".",
    ]
    unused = {0: 0, 1: 4, 2: 2}[len(raw) % 3]  # bits of the last character not used
    if unused:
        index = alphabet.index(token[-1])
        for low in range(1, 1 << unused):
            out.append(token[:-1] + alphabet[index ^ low])
    return out


@pytest.mark.parametrize("user", ["7", "77", "777"])  # 0, 4 and 2 unused low bits
def test_another_spelling_of_a_valid_token_is_refused_and_lets_nothing_in(user):
    app = make_app()
    token = next(t for t in iter(lambda: app.issue_token(user)[0], None) if "-" in t and "_" in t)
    variants = _spellings(token)
    if user != "7":
        assert len(variants) > 8  # the unused-bits variants are there
    for variant in variants:
        assert variant != token
        assert _lenient(variant) == _raw(token)  # a sloppy decoder reads the same bytes
        with pytest.raises(InvalidToken):
            verify_token(token_keys(app.config), variant, now=app.clock())
    for variant in variants:  # before the real one: refused, and nothing spent
        assert status_and_code(_present(app, variant)[0]) == (401, "invalid_token"), variant
    assert app.storage.tokens == {}
    assert _present(app, token)[0].status == 200
    for variant in variants:  # after it: no second connection either
        assert status_and_code(_present(app, variant)[0]) == (401, "invalid_token"), variant
    assert len(_connected(app)) == 1 and len(app.storage.tokens) == 1


def test_a_token_over_max_length_is_refused_before_it_is_decoded(monkeypatch):
    app = make_app()
    token, _ = app.issue_token("7")
    decoded: list[Any] = []
    real = base64.urlsafe_b64decode

    def spy(value: Any) -> bytes:
        decoded.append(value)
        return real(value)

    monkeypatch.setattr(tokens_module.base64, "urlsafe_b64decode", spy)
    for value in (
        "A" * (MAX_TOKEN_LENGTH + 1),
        token + "A" * (MAX_TOKEN_LENGTH + 1 - len(token)),
        token + "=" * (MAX_TOKEN_LENGTH + 1 - len(token)),
        "A" * 100_000,
    ):
        assert len(value) > MAX_TOKEN_LENGTH
        reply, _ = _present(app, value)
        assert status_and_code(reply) == (401, "invalid_token")
        with pytest.raises(InvalidToken):
            verify_token(token_keys(app.config), value, now=app.clock())
    assert decoded == []
    assert status_and_code(_present(app, "A" * MAX_TOKEN_LENGTH)[0]) == (401, "invalid_token")
    assert len(decoded) == 1  # the spy sees what is decoded: at the limit, it is
    assert app.storage.tokens == {} and app.storage.sessions == {}
    assert _present(app, token)[0].status == 200


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
        "a" * 64,  # looks like a ledger digest
        "\ud800",
        "\u00e9\u00e9",
        "A" * 100,  # decodes, but no valid MAC
    ],
)
def test_garbage_tokens_are_401_never_500(value):
    app = make_app()
    real, _ = app.issue_token("7")
    # the ledger key of a real token presented as a token does not work either
    values = [value, _digest(real), hashlib.sha256(real.encode()).hexdigest()]
    for v in values:
        reply, _ = _present(app, v)
        expected = (401, "token_required") if v == "" else (401, "invalid_token")
        assert status_and_code(reply) == expected
    assert app.storage.tokens == {}
    assert connect(app, query=f"ws_token={real}")[0].status == 200


# --- keys: rotation, a shared token key, one process's key ---------------------------------


def test_tokens_signed_before_a_secret_rotation_verify_while_previous_secret_is_set():
    storage = MemoryStorage()
    before = _app_on(storage, secret=SECRET)
    during = _app_on(storage, secret=NEW_SECRET, previous_secret=SECRET)
    after = _app_on(storage, secret=NEW_SECRET)
    old = [before.issue_token("7")[0] for _ in range(3)]
    new, _ = during.issue_token("8")

    def status(app: WebSocketApp, token: str, secret: str = NEW_SECRET) -> tuple[int, Any]:
        return status_and_code(connect(app, query=f"ws_token={token}", secret=secret)[0])

    assert status(during, old[0]) == (200, None)  # signed before the rotation: still good
    assert status(during, old[0]) == (401, "invalid_token")  # and still single use
    # the rotation is over: the old secret's tokens fail, whatever the gateway sends
    assert status(after, old[1]) == (401, "invalid_token")
    assert status(after, old[2], SECRET) == (403, "forbidden")
    # tokens issued during the rotation are signed with the new secret's key
    assert status(before, new, SECRET) == (401, "invalid_token")
    assert status(after, new) == (200, None)
    # the failed attempts spent nothing: the old token is still good where it is accepted
    assert status(during, old[1]) == (200, None)


def test_with_a_token_key_tokens_verify_across_app_instances_sharing_it():
    storage = MemoryStorage()
    issuer = _app_on(storage, secret=SECRET, token_key=TOKEN_KEY)
    # another instance, with another gateway secret (another stage, a rotation)
    handler = _app_on(storage, secret=NEW_SECRET, token_key=TOKEN_KEY)
    token, _ = issuer.issue_token("7", channel="room")
    q = f"channel=room&ws_token={token}"
    assert connect(handler, query=q, secret=NEW_SECRET)[0].status == 200
    # single use across the instances (one ledger)
    assert status_and_code(connect(issuer, query=q)[0]) == (401, "invalid_token")
    # the token key wins over the secret: a key derived from the same secret is refused,
    # and so is another token key
    token, _ = issuer.issue_token("7")
    for app in (
        _app_on(storage, secret=SECRET),
        _app_on(storage, secret=SECRET, token_key=TOKEN_KEY[::-1]),
    ):
        assert status_and_code(connect(app, query=f"ws_token={token}")[0]) == (
            401,
            "invalid_token",
        )
    assert connect(handler, query=f"ws_token={token}", secret=NEW_SECRET)[0].status == 200
    # a token key set where the secret is unset (Lambda integrations) works the same
    lam = _app_on(storage, secret=None, allow_insecure_no_secret=True, token_key=TOKEN_KEY)
    token, _ = lam.issue_token("9")
    assert connect(handler, query=f"ws_token={token}", secret=NEW_SECRET)[0].status == 200


_ISSUE_ELSEWHERE = """
import sys
from apigw_ws_core import Config, MemoryStorage, WebSocketApp
from apigw_ws_core.testing import RecordingTransport
config = Config(secret=sys.argv[1] or None, token_key=sys.argv[2] or None,
                allow_insecure_no_secret=True)
app = WebSocketApp(storage=MemoryStorage(), transport=RecordingTransport(), config=config)
print(app.issue_token("7")[0])
"""


def _issued_in_another_process(secret: str, token_key: str) -> str:
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, "-c", _ISSUE_ELSEWHERE, secret, token_key],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=root,
        env=env,
    )
    return out.stdout.strip()


def test_a_token_issued_in_another_process_verifies_with_the_same_key_only():
    app = make_app(token_key=TOKEN_KEY)
    token = _issued_in_another_process(SECRET, TOKEN_KEY)
    assert connect(app, query=f"ws_token={token}")[0].status == 200
    # derived from the same secret in both processes
    plain = make_app()
    token = _issued_in_another_process(SECRET, "")
    assert connect(plain, query=f"ws_token={token}")[0].status == 200
    # without a secret or a token key the key is random per process: refused here
    insecure = _app_on(MemoryStorage(), secret=None, allow_insecure_no_secret=True)
    token = _issued_in_another_process("", "")
    assert status_and_code(connect(insecure, query=f"ws_token={token}", secret=None)[0]) == (
        401,
        "invalid_token",
    )


@pytest.mark.parametrize("key", ["", "short", "x" * 31, b"x" * 40, 12345])
def test_a_token_key_that_could_be_guessed_is_a_configuration_error(key):
    with pytest.raises(ConfigurationError):
        Config(secret=SECRET, token_key=key)


def test_no_key_at_all_is_a_configuration_error_at_issuance():
    app = _app_on(MemoryStorage(), secret=None)
    with pytest.raises(ConfigurationError):
        app.issue_token("7")


# --- the rest: repeated parameters, counting, logs ---------------------------------------


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
    assert app.storage.tokens == {}  # not spent
    assert connect(app, query=f"ws_token={token}&tag=a&tag=b")[0].status == 200


def test_failed_token_attempts_count_toward_the_per_ip_limit():
    app = make_app(connect_rate_per_ip="5/60")
    for _ in range(5):
        assert connect(app, query="ws_token=guess")[0].status == 401
    token, _ = app.issue_token("7")
    reply, _ = connect(app, query=f"ws_token={token}")
    assert status_and_code(reply) == (429, "rate_limited")
    assert "Retry-After" in dict(reply.headers)
    assert app.storage.tokens == {}  # not spent by the throttled attempt
    # another address is not affected
    assert connect(app, query=f"ws_token={token}", source_ip="198.51.100.99")[0].status == 200


def test_forged_token_attempts_count_toward_the_per_ip_limit():
    app = make_app(connect_rate_per_ip="3/60")
    token, _ = app.issue_token("7")
    raw = bytearray(_raw(token))
    raw[FIELDS["user id"]] = b"8"
    for _ in range(3):
        assert connect(app, query=f"ws_token={_encode(bytes(raw))}")[0].status == 401
    assert status_and_code(connect(app, query=f"ws_token={token}")[0]) == (429, "rate_limited")


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


def test_token_plaintext_and_ledger_key_never_reach_the_logs():
    app = make_app(token_ttl=1, connect_rate_per_ip="3/60")
    with capture_logs() as logs:
        tokens = [app.issue_token("7", channel="room")[0] for _ in range(7)]
        connect(app, query=f"channel=room&ws_token={tokens[0]}")  # ok
        connect(app, query=f"channel=room&ws_token={tokens[0]}")  # replay
        connect(app, query=f"channel=other&ws_token={tokens[1]}")  # wrong channel
        connect(app, query=f"channel=room&ws_token={tokens[2]}")  # rate limited
        connect(app, query=f"channel=room&ws_token={tokens[3]}", secret="bad")  # forged
        later = app.clock() + timedelta(seconds=5)
        app.clock = lambda: later
        connect(app, query=f"channel=room&ws_token={tokens[4]}", source_ip="192.0.2.1")
        tampered = _encode(_raw(tokens[6])[:-1] + b"\x00")
        connect(app, query=f"channel=room&ws_token={tampered}", source_ip="192.0.2.2")
        event = from_http(
            "connect",
            gateway_headers("connect", new_connection_id(), secret=SECRET),
            f"ws_token={tokens[5]}",
        )
        logging.getLogger("test").error("event was %r", event)
        app.cleanup(heal=False)
    assert "invalid_token" in logs.text and "rate_limited" in logs.text
    logs.assert_absent(*tokens, tampered, SECRET)
    for token in tokens:
        logs.assert_absent(_digest(token), hashlib.sha256(token.encode()).hexdigest())
        logs.assert_absent(token[:40], token[-40:])  # nor a recognisable part of one


def test_a_handler_cannot_learn_the_token_of_its_connection():
    app = make_app()
    token, _ = app.issue_token("7")
    seen: list[str] = []
    app.add_handler("peek", lambda ctx, m: seen.append(repr(ctx.event) + repr(ctx.session)))
    _, cid = connect(app, query=f"ws_token={token}")
    assert message(app, cid, '{"action": "peek"}').status == 200
    assert token not in seen[0] and _digest(token) not in seen[0]


@pytest.mark.parametrize("ttl", [0, -1, 86401, "60", 1.5, True, None])
def test_a_ttl_that_would_not_be_honoured_is_a_configuration_error(ttl):
    with pytest.raises(ConfigurationError):
        Config(secret=SECRET, token_ttl=ttl)
    with pytest.raises(ConfigurationError):
        Config.from_mapping({"SECRET": SECRET, "TOKEN_TTL": ttl})
