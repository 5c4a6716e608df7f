"""The browser ``Origin`` check at ``$connect``: exact scheme + host (+ port) against the
allowlist; wildcard subdomains only when ``allow_origin_wildcards`` is set. Nothing the
header contains can make the check crash (it used to raise on a malformed port)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .support import connect, make_app, snapshot, status_and_code

ALLOWED = ["https://app.example.com", "http://localhost:8000", "https://[::1]:8443"]

ACCEPTED = [
    "https://app.example.com",
    "https://app.example.com:443",
    "https://app.example.com/",
    "HTTPS://APP.EXAMPLE.COM",
    "http://localhost:8000",
    "https://[::1]:8443",
]

REFUSED = [
    None,
    "",
    "null",
    "*",
    "https://app.example.com.evil.com",
    "https://evil.com/https://app.example.com",
    "https://evil.com?https://app.example.com",
    "https://evil.com#https://app.example.com",
    "https://app.example.com@evil.com",
    "https://evil.com@app.example.com",  # user info is never part of an origin
    "https://user:pw@app.example.com",
    "http://app.example.com",  # scheme
    "wss://app.example.com",
    "https://app.example.com:8443",  # port
    "https://app.example.com:443:443",
    "https://app.example.com:abc",  # used to raise ValueError (500)
    "https://app.example.com:99999",  # used to raise ValueError (500)
    "https://app.example.com:-1",
    "https://app.example.com:\u0663",  # an Arabic-Indic digit: int() would accept it
    "https://sub.app.example.com",
    "https://xapp.example.com",
    "https://app.example.co",
    "https://app.example.com.",
    "https://app.exa\tmple.com",  # urlsplit silently drops tabs and newlines
    "https://app.exa\nmple.com",
    "https://app.example.com\r\n",
    " https://app.example.com",
    "https://app.example.com ",
    "https://app.example.com\x00",
    "https://app.example.com/path",
    "https://app.example.com?",
    "https://\u0430pp.example.com",  # Cyrillic a
    "https://app.example.com\u3002",  # ideographic full stop
    "https://*.example.com",
    "//app.example.com",
    "app.example.com",
    "https:app.example.com",
    "https:/app.example.com",
    "file://app.example.com",
    "http://localhost",  # default port 80, not 8000
    "http://localhost:8000.evil.com",
    "https://[::1]",
    "https://[::2]:8443",
    "https://" + "a" * 5000 + ".example.com",
]


@pytest.mark.parametrize("origin", ACCEPTED)
def test_exact_origins_are_accepted(origin):
    app = make_app(require_token=False, allowed_origins=ALLOWED)
    assert connect(app, origin=origin)[0].status == 200


@pytest.mark.parametrize("origin", REFUSED)
def test_everything_else_is_403_and_changes_nothing(origin):
    app = make_app(require_token=False, allowed_origins=ALLOWED)
    before = snapshot(app.storage)
    reply, _ = connect(app, origin=origin)
    assert status_and_code(reply) == (403, "origin_not_allowed")
    assert snapshot(app.storage) == before


def test_wildcards_only_when_configured_and_never_the_apex_or_lookalikes():
    pattern = ["https://*.example.com"]
    strict = make_app(require_token=False, allowed_origins=pattern)
    assert connect(strict, origin="https://a.example.com")[0].status == 403
    assert connect(strict, origin="https://*.example.com")[0].status == 403
    wild = make_app(require_token=False, allowed_origins=pattern, allow_origin_wildcards=True)
    for ok in ("https://a.example.com", "https://a.b.example.com", "https://A.EXAMPLE.COM"):
        assert connect(wild, origin=ok)[0].status == 200, ok
    for bad in (
        "https://example.com",
        "https://.example.com",
        "https://evilexample.com",
        "https://a.example.com.evil.org",
        "http://a.example.com",
        "https://a.example.com:444",
        "https://*.example.com",
        "https://a.example.com@evil.org",
    ):
        assert connect(wild, origin=bad)[0].status == 403, bad


def test_no_allowlist_means_no_origin_check():
    """Documented: with ``allowed_origins`` empty any origin is accepted (tokens still
    apply). Security guidance tells users to set it."""
    app = make_app(require_token=False)
    assert connect(app, origin="https://anything.example")[0].status == 200


def test_a_malformed_allowlist_entry_matches_nothing():
    app = make_app(
        require_token=False, allowed_origins=["app.example.com", "https://a.example.com/path"]
    )
    assert connect(app, origin="https://app.example.com")[0].status == 403
    assert connect(app, origin="https://a.example.com")[0].status == 403


@settings(max_examples=150, deadline=None)
@given(origin=st.text(max_size=80) | st.from_regex(r"\A[a-z]{2,6}://[a-z0-9.\-\[\]:@]{0,40}\Z"))
def test_any_origin_header_is_200_or_403(origin):
    app = make_app(require_token=False, allowed_origins=ALLOWED)
    reply, _ = connect(app, origin=origin)
    assert reply.status in (200, 403)
    if reply.status == 200:
        assert origin.strip().rstrip("/").lower() in {o.lower() for o in ACCEPTED} | {
            "https://app.example.com:443"
        }
