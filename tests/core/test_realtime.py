"""Issue 14 on the core pipeline (memory storage, recording transport): history channels and
recovery, presence events, excluding the sender, connection attributes."""

from __future__ import annotations

import json
from datetime import timedelta

import attrs
import pytest

from apigw_ws_core import Config
from apigw_ws_core.errors import ConfigurationError
from apigw_ws_core.events import MAX_BODY_BYTES
from apigw_ws_core.history import HistoryRule

from .helpers import connect, disconnect, make_app, message

HISTORY = [{"pattern": "room-*", "size": 50, "ttl": 3600}]


def sent_to(app, cid):
    return [m.json() for m in app.transport.sent if m.connection_id == cid]


def clear(app):
    app.transport.sent.clear()


def anon_app(**kw):
    kw.setdefault("require_token", False)
    return make_app(history=HISTORY, **kw)


# --- history and recovery ------------------------------------------------------------


def test_history_channel_messages_carry_the_envelope_and_one_append_per_send():
    app = anon_app()
    members = [connect(app, query="channel=room-1")[1] for _ in range(3)]
    other = connect(app, query="channel=lobby")[1]
    appends = []
    real = app.storage.append_history
    app.storage.append_history = lambda *a, **k: appends.append(a[0]) or real(*a, **k)
    r1 = app.send({"text": "hi"}, channel="room-1")
    r2 = app.send("plain text", channel="room-1")
    assert r1.delivered == 3 and r2.delivered == 3
    assert appends == ["room-1", "room-1"]  # once per send, not per recipient
    got = sent_to(app, members[0])
    epoch = got[0]["epoch"]
    assert got == [
        {"channel": "room-1", "offset": 1, "epoch": epoch, "data": {"text": "hi"}},
        {"channel": "room-1", "offset": 2, "epoch": epoch, "data": "plain text"},
    ]
    app.send({"x": 1}, channel="lobby")  # no history rule: raw payload, no append
    assert sent_to(app, other) == [{"x": 1}] and len(appends) == 2
    page = app.history("room-1")
    assert [m.offset for m in page.messages] == [1, 2] and page.epoch == epoch
    assert json.loads(page.messages[0].payload) == {"text": "hi"}
    assert [m.offset for m in app.history("room-1", since=1).messages] == [2]
    with pytest.raises(ValueError):
        app.history("lobby")
    with pytest.raises(ValueError):
        app.send(b"\xff\xfe", channel="room-1")  # not text: cannot go in the envelope


def test_recover_returns_missed_messages_in_order_then_live():
    app = anon_app()
    _, cid = connect(app, query="channel=room-1")
    app.send({"n": 0}, channel="room-1")
    first = sent_to(app, cid)[0]
    disconnect(app, cid)
    for n in range(1, 21):  # sent while the client is away
        app.send({"n": n}, channel="room-1")
    _, cid2 = connect(app, query="channel=room-1")
    clear(app)
    position = {"epoch": first["epoch"], "offset": first["offset"]}
    reply = message(app, cid2, json.dumps({"action": "$recover", "channels": {"room-1": position}}))
    assert reply.status == 200
    frames = sent_to(app, cid2)
    assert len(frames) == 1
    frame = frames[0]
    assert frame["type"] == "$recovered" and frame["recovered"] is True and frame["final"]
    assert frame["offset"] == 21 and frame["more"] is False
    assert [m["data"]["n"] for m in frame["messages"]] == list(range(1, 21))
    assert [m["offset"] for m in frame["messages"]] == list(range(2, 22))
    app.send({"n": 21}, channel="room-1")
    assert sent_to(app, cid2)[-1]["offset"] == 22


def test_recover_without_position_gives_the_current_one_and_first_client_sees_all():
    app = anon_app()
    _, cid = connect(app, query="channel=room-1")
    message(app, cid, '{"action": "$recover", "channels": {"room-1": null}}')
    (frame,) = sent_to(app, cid)
    assert frame == {
        "type": "$recovered",
        "channel": "room-1",
        "epoch": "",
        "offset": 0,
        "recovered": True,
        "messages": [],
        "final": True,
    }
    disconnect(app, cid)
    app.send({"n": 1}, channel="room-1")
    _, cid = connect(app, query="channel=room-1")
    clear(app)
    message(app, cid, '{"action": "$recover", "channels": {"room-1": {"epoch": "", "offset": 0}}}')
    (frame,) = sent_to(app, cid)
    assert frame["recovered"] and [m["data"] for m in frame["messages"]] == [{"n": 1}]


def test_recover_tells_when_history_no_longer_reaches_back():
    app = make_app(require_token=False, history=[{"pattern": "room-*", "size": 3}])
    _, cid = connect(app, query="channel=room-1")
    app.send({"n": 1}, channel="room-1")
    epoch = sent_to(app, cid)[0]["epoch"]
    for n in range(2, 10):
        app.send({"n": n}, channel="room-1")
    clear(app)
    body = {"action": "$recover", "channels": {"room-1": {"epoch": epoch, "offset": 1}}}
    message(app, cid, json.dumps(body))
    (frame,) = sent_to(app, cid)
    assert frame["recovered"] is False and frame["reason"] == "history_expired"
    assert frame["offset"] == 9 and frame["epoch"] == epoch and frame["messages"] == []
    app.reset_history("room-1")
    app.send({"n": 10}, channel="room-1")
    clear(app)
    message(app, cid, json.dumps(body))
    (frame,) = sent_to(app, cid)
    assert frame["recovered"] is False and frame["reason"] == "epoch_changed"
    assert frame["offset"] == 1 and frame["epoch"] != epoch


def test_recover_only_reads_channels_the_connection_is_in():
    app = anon_app()
    _, cid = connect(app, query="channel=room-1")
    app.send({"secret": 1}, channel="room-2")
    message(app, cid, '{"action": "$recover", "channels": {"room-2": {"epoch": "", "offset": 0}}}')
    (frame,) = sent_to(app, cid)
    assert frame == {
        "type": "$recovered",
        "channel": "room-2",
        "recovered": False,
        "reason": "not_subscribed",
    }


@pytest.mark.parametrize(
    "body",
    [
        {"action": "$recover"},
        {"action": "$recover", "channels": []},
        {"action": "$recover", "channels": {}},
        {"action": "$recover", "channels": {"room-1": 5}},
        {"action": "$recover", "channels": {"room-1": {"epoch": 1, "offset": 1}}},
        {"action": "$recover", "channels": {"room-1": {"epoch": "e", "offset": -1}}},
        {"action": "$recover", "channels": {"room-1": {"epoch": "e", "offset": True}}},
        {"action": "$recover", "channels": {f"c{i}": None for i in range(33)}},
    ],
)
def test_malformed_recover_is_400(body):
    app = anon_app()
    _, cid = connect(app, query="channel=room-1")
    reply = message(app, cid, json.dumps(body))
    assert reply.status == 400 and reply.json_body()["error"] == "invalid_message"
    bad_name = message(app, cid, '{"action": "$recover", "channels": {"bad name": null}}')
    assert bad_name.json_body()["error"] == "invalid_channel"
    assert message(app, cid, '{"action": "$nope"}').json_body()["error"] == "invalid_handler_name"


def test_recovery_frames_stay_under_the_size_limit():
    app = make_app(require_token=False, history=[{"pattern": "big", "size": 10}])
    _, cid = connect(app, query="channel=big")
    app.send({"n": 0}, channel="big")
    epoch = sent_to(app, cid)[0]["epoch"]
    for n in range(1, 6):
        app.send({"n": n, "pad": "x" * 60_000}, channel="big")
    clear(app)
    message(
        app,
        cid,
        json.dumps({"action": "$recover", "channels": {"big": {"epoch": epoch, "offset": 1}}}),
    )
    frames = [m for m in app.transport.sent if m.connection_id == cid]
    assert len(frames) >= 3 and all(len(f.data) <= MAX_BODY_BYTES for f in frames)
    decoded = [f.json() for f in frames]
    assert [d["final"] for d in decoded] == [False] * (len(frames) - 1) + [True]
    offsets = [m["offset"] for d in decoded for m in d["messages"]]
    assert offsets == [2, 3, 4, 5, 6]


def test_oversized_history_message_is_refused_before_any_write():
    app = anon_app()
    connect(app, query="channel=room-1")
    from apigw_ws_core.errors import PayloadTooLarge

    with pytest.raises(PayloadTooLarge):
        app.send("x" * (MAX_BODY_BYTES - 50), channel="room-1")
    assert app.storage.read_history("room-1", app.clock()).offset == 0


def test_history_rules_are_validated():
    with pytest.raises(ConfigurationError):
        Config(history=[{"pattern": "a-*"}])
    with pytest.raises(ConfigurationError):
        Config(history=[{"pattern": "a-*", "size": 0}])
    with pytest.raises(ConfigurationError):
        Config(history=[{"pattern": "a-*", "ttl": 10**9}])
    with pytest.raises(ConfigurationError):
        Config(history=[{"pattern": "a-*", "size": 5, "colour": "red"}])
    with pytest.raises(ConfigurationError):
        Config.from_mapping({"history": {"pattern": "a-*", "size": 5}})
    cfg = Config(history=[{"pattern": "Room-*", "size": 5}, HistoryRule("*", ttl=60)])
    assert cfg.history_rule("room-1").size == 5 and cfg.history_rule("x").ttl == 60


# --- excluding the sender --------------------------------------------------------------


def test_exclude_and_the_context_broadcast_shortcut():
    app = make_app(require_token=False)

    @app.handler("say")
    def say(ctx, message):
        return {"delivered": ctx.broadcast({"text": message["text"]}).delivered}

    a = connect(app, query="channel=room")[1]
    b = connect(app, query="channel=room")[1]
    c = connect(app, query="channel=room")[1]
    reply = message(app, a, '{"action": "say", "text": "hi"}')
    assert reply.json_body() == {"delivered": 2}
    assert sent_to(app, a) == [] and sent_to(app, b) == [{"text": "hi"}] == sent_to(app, c)
    clear(app)
    report = app.send({"x": 1}, channel="room", exclude=[a, b])
    assert report.delivered == 1 and sent_to(app, c) == [{"x": 1}]
    assert app.send({"x": 1}, connection_id=a, exclude=a).delivered == 0
    assert app.send({"x": 1}, everyone=True, exclude={a}).delivered == 2


def test_background_send_keeps_exclude_and_attributes():
    app = make_app(require_token=False)
    jobs = []
    app.background_runner = jobs.append
    app.send_in_background({"x": 1}, channel="room", exclude="abc", attributes={"device": "m"})
    job = jobs[0].as_dict()
    assert job["exclude"] == ["abc"] and job["attributes"] == {"device": "m"}
    from apigw_ws_core.fanout import SendJob

    assert SendJob.from_dict(job).target == {
        "channel": "room",
        "exclude": ("abc",),
        "attributes": {"device": "m"},
    }


# --- connection attributes -------------------------------------------------------------

ATTRS = [
    {"name": "device", "choices": ["mobile", "desktop"], "default": "desktop"},
    {"name": "locale", "pattern": r"[a-z]{2}(-[A-Z]{2})?", "max_length": 5},
    {"name": "app_version", "source": "header", "key": "X-App-Version", "max_length": 8},
    {"name": "tenant", "required": True},
]


def test_connection_attributes_validated_stored_and_usable():
    app = make_app(require_token=False, connection_attributes=ATTRS)

    @app.handler("whoami")
    def whoami(ctx, message):
        return ctx.attributes

    ok, phone = connect(
        app,
        query="channel=room&device=mobile&locale=de-CH&tenant=acme&undeclared=x",
        extra={"X-App-Version": "1.2.3"},
    )
    assert ok.status == 200
    stored = app.storage.get_session(phone).attributes
    assert stored == {
        "device": "mobile",
        "locale": "de-CH",
        "app_version": "1.2.3",
        "tenant": "acme",
    }
    assert message(app, phone, '{"action": "whoami"}').json_body() == stored
    _, desk = connect(app, query="channel=room&tenant=acme")
    assert app.storage.get_session(desk).attributes == {"device": "desktop", "tenant": "acme"}
    report = app.send({"x": 1}, channel="room", attributes={"device": "mobile"})
    assert report.delivered == 1 and sent_to(app, phone) == [{"x": 1}]
    with pytest.raises(ValueError):
        app.send({"x": 1}, everyone=True, attributes={"Bad Name": "x"})


@pytest.mark.parametrize(
    ("query", "extra"),
    [
        ("tenant=acme&device=tablet", None),
        ("tenant=acme&locale=german", None),
        ("tenant=acme&locale=de-CHX", None),
        ("device=mobile", None),
        ("tenant=acme&tenant=evil", None),
        ("tenant=" + "a" * 65, None),
        ("tenant=a%00b", None),
        ("tenant=acme", {"X-App-Version": "123456789"}),
    ],
)
def test_bad_connection_attributes_are_400_and_store_nothing(query, extra):
    app = make_app(require_token=False, connection_attributes=ATTRS)
    reply, cid = connect(app, query=query, extra=extra)
    assert reply.status == 400 and reply.json_body()["error"] == "invalid_attribute"
    assert app.storage.get_session(cid) is None


def test_attribute_specs_are_validated():
    for bad in (
        [{"name": "Device"}],
        [{"name": "d", "source": "cookie"}],
        [{"name": "d", "max_length": 1000}],
        [{"name": "d", "pattern": "("}],
        [{"name": "d", "choices": ["a"], "default": "b"}],
        [{"name": "d"}, {"name": "d"}],
        [{"name": f"a{i}"} for i in range(17)],
        [{"name": "d", "colour": "red"}],
    ):
        with pytest.raises(ConfigurationError):
            Config(connection_attributes=bad)


# --- presence ----------------------------------------------------------------------------


def presence_app():
    app = make_app(presence_channels=["presence-*"])
    return app


def join(app, user, channel="presence-room"):
    token, _ = app.issue_token(user)
    reply, cid = connect(app, query=f"channel={channel}&ws_token={token}")
    assert reply.status == 200
    return cid


def events(app, cid):
    return [m for m in sent_to(app, cid) if m.get("type", "").startswith("member_")]


def test_presence_events_per_user_not_per_connection():
    app = presence_app()
    watcher = join(app, "1")
    a1 = join(app, "2")
    assert events(app, watcher) == [
        {"type": "member_added", "channel": "presence-room", "user_id": "2"}
    ]
    assert sent_to(app, a1) == []  # never posted to during its own $connect
    a2 = join(app, "2")  # second connection of user 2: no event
    assert len(events(app, watcher)) == 1 and events(app, a1) == []
    clear(app)
    disconnect(app, a1)  # user 2 still has a2
    assert events(app, watcher) == []
    disconnect(app, a2)
    assert events(app, watcher) == [
        {"type": "member_removed", "channel": "presence-room", "user_id": "2"}
    ]
    clear(app)
    disconnect(app, a2)  # repeated $disconnect: nothing more
    assert events(app, watcher) == []


def test_anonymous_connections_are_not_members_and_other_channels_stay_quiet():
    app = make_app(presence_channels=["presence-*"], require_token=False)
    watcher = join(app, "1")
    _, anon = connect(app, query="channel=presence-room")
    plain = join(app, "3", channel="lobby")
    assert events(app, watcher) == []
    disconnect(app, anon)
    disconnect(app, plain)
    assert events(app, watcher) == []


def test_presence_request_lists_members_after_connect():
    app = presence_app()
    join(app, "1")
    join(app, "1")
    join(app, "2")
    me = join(app, "3")
    clear(app)
    assert message(app, me, '{"action": "$presence", "channel": "presence-room"}').status == 200
    assert sent_to(app, me) == [
        {
            "type": "$presence",
            "channel": "presence-room",
            "members": ["1", "2", "3"],
            "connections": 4,
        }
    ]
    outside = join(app, "4", channel="presence-other")
    reply = message(app, outside, '{"action": "$presence", "channel": "presence-room"}')
    assert reply.status == 403 and reply.json_body()["error"] == "channel_forbidden"
    reply = message(app, outside, '{"action": "$presence", "channel": "lobby"}')
    assert reply.status == 400


def test_presence_on_subscribe_and_unsubscribe():
    app = make_app(presence_channels=["presence-*"], enable_subscribe=True)
    watcher = join(app, "1")
    other = join(app, "2", channel="lobby")
    message(app, other, '{"action": "subscribe", "channel": "presence-room"}')
    assert events(app, watcher)[-1]["type"] == "member_added"
    message(app, other, '{"action": "unsubscribe", "channel": "presence-room"}')
    assert events(app, watcher)[-1] == {
        "type": "member_removed",
        "channel": "presence-room",
        "user_id": "2",
    }


def test_disconnect_costs_nothing_extra_without_presence_channels():
    app = make_app(require_token=False)
    _, cid = connect(app, query="channel=room")
    calls = []
    app.storage.get_session = lambda *a: calls.append(a)
    app.storage.channels_of = lambda *a: calls.append(a)
    disconnect(app, cid)
    assert calls == []


def test_first_recover_returns_what_was_sent_since_the_connection_opened():
    app = anon_app()
    app.send({"n": "before"}, channel="room-1")  # before the connection: not replayed
    later = app.clock
    app.clock = lambda: later() + __import__("datetime").timedelta(seconds=5)

    @app.on_connect
    def greet(session, event):  # sent during $connect: cannot be posted to the new id
        app.send({"n": "during"}, channel="room-1")

    _, cid = connect(app, query="channel=room-1")
    assert sent_to(app, cid) == []
    message(app, cid, '{"action": "$recover", "channels": {"room-1": null}}')
    (frame,) = sent_to(app, cid)
    assert frame["recovered"] and frame["offset"] == 2
    assert [m["data"] for m in frame["messages"]] == [{"n": "during"}]


def test_broadcast_on_a_history_channel_acks_the_sender_with_its_offset():
    app = anon_app()

    @app.handler("say")
    def say(ctx, message):
        ctx.broadcast({"text": message["text"]})

    a = connect(app, query="channel=room-1")[1]
    b = connect(app, query="channel=room-1")[1]
    message(app, a, '{"action": "say", "text": "hi"}')
    (env,) = sent_to(app, b)
    assert sent_to(app, a) == [
        {"type": "$skip", "channel": "room-1", "offset": 1, "epoch": env["epoch"]}
    ]
    report = app.send({"x": 1}, channel="room-1")
    assert (report.offset, report.epoch) == (2, env["epoch"])
    assert app.send({"x": 1}, channel="lobby").offset is None


def test_presence_events_on_a_history_channel_are_not_kept():
    app = make_app(presence_channels=["room-*"], history=HISTORY)
    watcher = join(app, "1", channel="room-1")
    join(app, "2", channel="room-1")
    assert events(app, watcher) == [{"type": "member_added", "channel": "room-1", "user_id": "2"}]
    assert app.history("room-1").offset == 0
    report = app.send({"typing": "1"}, channel="room-1", ephemeral=True)
    assert report.offset is None and app.history("room-1").offset == 0


def test_a_410_for_a_connection_still_connecting_elsewhere_does_not_mark_it_gone():
    # B's $connect runs in another process: B is stored, but API Gateway answers 410 to
    # posts until its handshake completes. A's member_added must not mark B gone.
    app = presence_app()
    assert app.config.effective_gone_grace == 30
    watcher = join(app, "1")
    b = join(app, "3")
    app.transport.gone.add(b)  # B still "connecting" as far as API Gateway is concerned
    join(app, "2")
    assert app.storage.get_session(b).connected is True
    assert events(app, watcher)[-1]["user_id"] == "2"
    # an old session answering 410 is really gone and is marked
    old = app.storage.get_session(b)
    app.storage.sessions[b] = attrs.evolve(
        old, connected_at=old.connected_at - timedelta(seconds=60)
    )
    report = app.send({"x": 1}, channel="presence-room")
    assert report.gone == (b,) and report.marked_disconnected == 1
    assert app.storage.get_session(b).connected is False


def test_gone_grace_is_off_without_presence_channels_and_configurable():
    assert Config().effective_gone_grace == 0
    assert Config(presence_channels=["p-*"], gone_grace_seconds=0).effective_gone_grace == 0
    assert Config(gone_grace_seconds=10).send_options()["gone_grace"] == 10
    with pytest.raises(ConfigurationError):
        Config.from_mapping({"gone_grace_seconds": -1})
