"""Channels: one naming rule for every backend (fits the 100-character column, nothing a
glob or a collation could reinterpret); an authorization policy per channel pattern that
denies protected patterns by default; subscribe/unsubscribe go through the same rules."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apigw_ws_core import ChannelPolicy, ChannelRule
from apigw_ws_core.channels import (
    AUTHENTICATED,
    AUTHORIZED,
    DENY,
    MAX_CHANNEL_LENGTH,
    OWNER,
    PUBLIC,
    default_policy,
    validate_channel,
)
from apigw_ws_core.errors import InvalidChannel

from .support import connect, make_app, message, snapshot, status_and_code

BAD_NAMES = [
    "",
    " ",
    "a b",
    "a\tb",
    "a\nb",
    "a\x00b",
    "a" * (MAX_CHANNEL_LENGTH + 1),
    "room*",
    "room?",
    "[room]",
    "room/other",
    "room\\other",
    "room%00",
    "röom",
    "room\u200b",  # zero-width space
    "\uff52\uff4f\uff4f\uff4d",  # fullwidth
    "room'; DROP TABLE x; --",
    "room,other",
    "#room",
    "room ",
    "\ud800",
]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_channel_names_are_refused_everywhere(name):
    with pytest.raises(InvalidChannel):
        validate_channel(name)
    app = make_app(require_token=False, enable_subscribe=True)
    if name:  # ?channel= (empty) means the default channel
        reply, _ = connect(app, query=f"channel={name}")
        assert status_and_code(reply) == (400, "invalid_channel")
        assert app.storage.sessions == {}
    _, cid = connect(app, query="channel=lobby")
    before = snapshot(app.storage)
    # a lone surrogate cannot even be parsed: invalid_json before any channel logic
    expected = (400, "invalid_json") if name == "\ud800" else (400, "invalid_channel")
    for action in ("subscribe", "unsubscribe"):
        reply = message(app, cid, json.dumps({"action": action, "channel": name}))
        assert status_and_code(reply) == expected
    assert snapshot(app.storage) == before
    with pytest.raises(InvalidChannel):
        app.issue_token("1", channel=name)
    with pytest.raises(InvalidChannel):
        app.send("x", channel=name)


@pytest.mark.parametrize("value", [None, 5, 1.5, True, [], ["a"], {}, {"a": 1}], ids=repr)
def test_non_string_channels_in_messages_are_400(value):
    app = make_app(require_token=False, enable_subscribe=True)
    _, cid = connect(app)
    before = snapshot(app.storage)
    reply = message(app, cid, json.dumps({"action": "subscribe", "channel": value}))
    assert status_and_code(reply) == (400, "invalid_channel")
    assert snapshot(app.storage) == before


def test_longest_valid_name_fits_and_is_stored_exactly():
    name = "A:b.c-d_e@f=" + "z" * (MAX_CHANNEL_LENGTH - 12)
    assert len(name) == MAX_CHANNEL_LENGTH
    app = make_app(require_token=False)
    reply, cid = connect(app, query=f"channel={name}")
    assert reply.status == 200
    assert app.storage.channels_of(cid) == [name]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120))
def test_the_rule_accepts_exactly_the_documented_alphabet(name):
    ok = 1 <= len(name) <= MAX_CHANNEL_LENGTH and all(
        ch.isascii() and (ch.isalnum() or ch in "_.:@=-") for ch in name
    )
    try:
        validate_channel(name)
    except InvalidChannel:
        assert not ok
    else:
        assert ok


def _token(app, user):
    return app.issue_token(user)[0]


def test_default_policy_kinds():
    app = make_app()
    cases = [
        ("7", "user.7", 200),
        ("7", "user.8", 403),
        ("7", "user.77", 403),
        ("77", "user.7", 403),
        ("7", "user.7.extra", 403),
        ("7", "USER.7", 403),  # case variants are protected too, and not "owned"
        ("7", "User.8", 403),
        ("7", "private-staff", 403),  # no authorize callback: deny
        ("7", "PRIVATE-staff", 403),
        ("7", "presence-room", 200),
        ("7", "Presence-room", 200),
        ("7", "lobby", 200),
    ]
    for user, channel, status in cases:
        reply, _ = connect(app, query=f"channel={channel}&ws_token={_token(app, user)}")
        assert reply.status == status, (user, channel)


def test_anonymous_connections_get_public_channels_only():
    app = make_app(require_token=False)
    for channel, status in [
        ("lobby", 200),
        ("presence-room", 403),
        ("private-x", 403),
        ("user.", 403),
        ("user.None", 403),
        ("user.7", 403),
    ]:
        reply, _ = connect(app, query=f"channel={channel}")
        assert reply.status == status, channel


def test_authorize_callback_decides_private_channels_and_errors_are_not_grants():
    calls = []

    def authorize(user_id, channel):
        calls.append((user_id, channel))
        return user_id == "1" and channel == "private-staff"

    app = make_app()
    app.policy = default_policy(authorize=authorize)
    assert connect(app, query=f"channel=private-staff&ws_token={_token(app, '1')}")[0].status == 200
    assert connect(app, query=f"channel=private-staff&ws_token={_token(app, '2')}")[0].status == 403
    assert connect(app, query=f"channel=private-other&ws_token={_token(app, '1')}")[0].status == 403
    # truthy-but-not-True values still count as a decision; only the callback grants
    app.policy = default_policy(authorize=lambda u, c: 0)
    assert connect(app, query=f"channel=private-staff&ws_token={_token(app, '1')}")[0].status == 403


def test_a_name_no_rule_matches_is_denied():
    app = make_app(require_token=False)
    app.policy = ChannelPolicy([ChannelRule("public-*", PUBLIC)])
    assert connect(app, query="channel=public-a")[0].status == 200
    reply, _ = connect(app, query="channel=other")
    assert status_and_code(reply) == (403, "channel_forbidden")


def test_explicit_deny_and_authenticated_rules():
    app = make_app()
    app.policy = ChannelPolicy(
        [
            ChannelRule("admin*", DENY),
            ChannelRule("team-*", AUTHENTICATED),
            ChannelRule("*", PUBLIC),
        ]
    )
    assert connect(app, query=f"channel=admin&ws_token={_token(app, '1')}")[0].status == 403
    assert connect(app, query=f"channel=ADMIN-x&ws_token={_token(app, '1')}")[0].status == 403
    assert connect(app, query=f"channel=team-a&ws_token={_token(app, '1')}")[0].status == 200
    anon = make_app(require_token=False)
    anon.policy = app.policy
    assert connect(anon, query="channel=team-a")[0].status == 403


def test_rule_patterns_cannot_be_abused_through_the_name():
    """Glob metacharacters are not valid in names, so a name cannot widen a pattern."""
    policy = ChannelPolicy(
        [
            ChannelRule("user.*", OWNER),
            ChannelRule("private-*", AUTHORIZED),
            ChannelRule("*", PUBLIC),
        ]
    )
    for name in ("user.[7]", "user.*", "private-?", "*"):
        with pytest.raises(InvalidChannel):
            policy.check("7", name)


def test_subscribe_goes_through_the_same_policy():
    app = make_app(enable_subscribe=True)
    _, cid = connect(app, query=f"channel=lobby&ws_token={_token(app, '7')}")
    before = snapshot(app.storage)
    for channel in ("user.8", "USER.8", "private-x", "Private-x"):
        reply = message(app, cid, json.dumps({"action": "subscribe", "channel": channel}))
        assert status_and_code(reply) == (403, "channel_forbidden"), channel
    assert snapshot(app.storage) == before
    reply = message(app, cid, json.dumps({"action": "subscribe", "channel": "user.7"}))
    assert reply.status == 200
    assert app.storage.channels_of(cid) == ["lobby", "user.7"]
    anon = make_app(require_token=False, enable_subscribe=True)
    _, acid = connect(anon)
    reply = message(anon, acid, json.dumps({"action": "subscribe", "channel": "presence-x"}))
    assert reply.status == 403


def test_unsubscribe_only_removes_own_memberships():
    app = make_app(require_token=False, enable_subscribe=True)
    _, a = connect(app, query="channel=room")
    _, b = connect(app, query="channel=room")
    reply = message(app, a, json.dumps({"action": "unsubscribe", "channel": "room"}))
    assert reply.json_body()["removed"] is True
    assert app.storage.channels_of(b) == ["room"]
    reply = message(app, a, json.dumps({"action": "unsubscribe", "channel": "never-joined"}))
    assert reply.json_body()["removed"] is False


def test_messages_to_user_channels_reach_only_the_owner():
    app = make_app(enable_subscribe=True)
    _, owner = connect(app, query=f"channel=user.7&ws_token={_token(app, '7')}")
    _, other = connect(app, query=f"channel=lobby&ws_token={_token(app, '8')}")
    message(app, other, json.dumps({"action": "subscribe", "channel": "USER.7"}))
    app.send({"secret": "for 7"}, channel="user.7")
    assert app.transport.messages_for(owner) == [{"secret": "for 7"}]
    assert app.transport.messages_for(other) == []
