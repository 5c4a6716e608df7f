"""The pipeline end to end on memory storage: every step and every rejection path."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from apigw_ws_core import ChannelPolicy, ChannelRule, Config, MemoryStorage, WebSocketApp
from apigw_ws_core.channels import AUTHORIZED, PUBLIC
from apigw_ws_core.errors import BadRequest, ConfigurationError, RequestError
from apigw_ws_core.events import MAX_BODY_BYTES, from_http
from apigw_ws_core.testing import RecordingTransport, gateway_headers, new_connection_id

from .helpers import SECRET, connect, disconnect, make_app, message, snapshot


def token_for(app, user="7", **kw):
    token, ttl = app.issue_token(user, **kw)
    assert ttl == app.config.token_ttl
    return token


def test_connect_with_token_creates_session_and_subscription():
    app = make_app()
    reply, cid = connect(app, query=f"channel=general&ws_token={token_for(app)}")
    assert reply.status == 200
    s = app.storage.get_session(cid)
    assert s.user_id == "7" and s.channel_name == "general" and s.connected
    assert s.source_ip == "203.0.113.10" and s.user_agent.startswith("Mozilla")
    assert app.storage.channels_of(cid) == ["general"]


def test_connect_default_channel_and_subprotocol_echo():
    app = make_app(require_token=False, default_channel="lobby")
    reply, cid = connect(app, extra={"Sec-WebSocket-Protocol": "chat.v1, chat.v0"})
    assert reply.status == 200
    assert dict(reply.headers)["Sec-WebSocket-Protocol"] == "chat.v1"
    assert app.storage.get_session(cid).channel_name == "lobby"
    assert app.storage.get_session(cid).user_id is None


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"secret": None}, 403, "forbidden"),
        ({"secret": "wrong"}, 403, "forbidden"),
        ({"secret": SECRET[:-1]}, 403, "forbidden"),
        ({"query": "channel=general"}, 401, "token_required"),
        ({"query": "ws_token=not-a-real-token"}, 401, "invalid_token"),
        ({"query": "channel=bad%20name&ws_token=x"}, 400, "invalid_channel"),
        ({"query": "channel=" + "a" * 101}, 400, "invalid_channel"),
    ],
)
def test_connect_rejections_change_nothing(kwargs, status, code):
    app = make_app()
    before = snapshot(app.storage)
    reply, _ = connect(app, **kwargs)
    assert reply.status == status
    assert reply.json_body()["error"] == code
    assert snapshot(app.storage) == before


def test_token_is_single_use_and_expires():
    app = make_app()
    tok = token_for(app)
    assert connect(app, query=f"ws_token={tok}")[0].status == 200
    before = snapshot(app.storage)
    reply, _ = connect(app, query=f"ws_token={tok}")
    assert (reply.status, reply.json_body()["error"]) == (401, "invalid_token")
    assert snapshot(app.storage) == before
    tok2 = token_for(app)
    later = app.clock() + timedelta(seconds=app.config.token_ttl + 1)
    app.clock = lambda: later
    assert connect(app, query=f"ws_token={tok2}")[0].status == 401


def test_token_bound_to_channel_and_origin():
    app = make_app()
    tok = token_for(app, channel="room-a", origin="https://app.example.com")
    reply, _ = connect(
        app, query=f"channel=room-b&ws_token={tok}", origin="https://app.example.com"
    )
    assert reply.status == 401
    tok = token_for(app, channel="room-a", origin="https://app.example.com")
    reply, _ = connect(app, query=f"channel=room-a&ws_token={tok}", origin="https://evil.example")
    assert reply.status == 401
    tok = token_for(app, channel="room-a", origin="https://app.example.com")
    reply, _ = connect(
        app, query=f"channel=room-a&ws_token={tok}", origin="https://app.example.com"
    )
    assert reply.status == 200


def test_origin_allowlist_exact_match():
    app = make_app(require_token=False, allowed_origins=["https://app.example.com"])
    ok = ["https://app.example.com", "https://app.example.com:443", "https://app.example.com/"]
    bad = [
        None,
        "https://app.example.com.evil.com",
        "http://app.example.com",
        "https://app.example.com:8443",
        "https://evil.com/https://app.example.com",
        "https://sub.app.example.com",
        "null",
    ]
    for origin in ok:
        assert connect(app, origin=origin)[0].status == 200, origin
    for origin in bad:
        reply, _ = connect(app, origin=origin)
        assert (reply.status, reply.json_body()["error"]) == (403, "origin_not_allowed"), origin


def test_origin_wildcards_only_when_enabled():
    strict = make_app(require_token=False, allowed_origins=["https://*.example.com"])
    assert connect(strict, origin="https://a.example.com")[0].status == 403
    wild = make_app(
        require_token=False, allowed_origins=["https://*.example.com"], allow_origin_wildcards=True
    )
    assert connect(wild, origin="https://a.example.com")[0].status == 200
    assert connect(wild, origin="https://example.com")[0].status == 403
    assert connect(wild, origin="https://a.example.com.evil.org")[0].status == 403


def test_channel_policy_denies_and_authorizes():
    allowed = {("7", "private-staff")}
    app = make_app()
    app.policy = ChannelPolicy(
        [ChannelRule("private-*", AUTHORIZED), ChannelRule("*", PUBLIC)],
        authorize=lambda uid, ch: (uid, ch) in allowed,
    )
    reply, _ = connect(app, query=f"channel=private-staff&ws_token={token_for(app, '8')}")
    assert (reply.status, reply.json_body()["error"]) == (403, "channel_forbidden")
    reply, _ = connect(app, query=f"channel=private-staff&ws_token={token_for(app, '7')}")
    assert reply.status == 200


def test_default_policy_user_channels_are_owner_only():
    app = make_app()
    assert connect(app, query=f"channel=user.8&ws_token={token_for(app, '7')}")[0].status == 403
    assert connect(app, query=f"channel=user.7&ws_token={token_for(app, '7')}")[0].status == 200
    anon = make_app(require_token=False)
    assert connect(anon, query="channel=presence-room")[0].status == 403
    assert connect(anon, query="channel=private-x")[0].status == 403


def test_stage_and_api_allowlists():
    app = make_app(require_token=False, allowed_stages=["prod"])
    assert connect(app, stage="dev")[0].status == 403
    assert connect(app, stage="prod")[0].status == 200
    app = make_app(require_token=False, allowed_api_ids=["abc123"])
    assert connect(app)[0].status == 403
    assert connect(app, extra={"X-Amzn-Apigateway-Api-Id": "abc123"})[0].status == 200


def test_message_dispatch_reply_and_multicast():
    app = make_app()
    _, a = connect(app, query=f"channel=room&ws_token={token_for(app, '1')}")
    _, b = connect(app, query=f"channel=room&ws_token={token_for(app, '2')}")
    _, c = connect(app, query=f"channel=other&ws_token={token_for(app, '3')}")
    reply = message(app, a, json.dumps({"action": "chat_message", "text": "hi"}))
    assert reply.status == 200
    assert reply.json_body() == {"ok": True}
    t = app.transport
    assert t.messages_for(a) == t.messages_for(b) == [{"type": "chat", "text": "hi", "from": "1"}]
    assert t.messages_for(c) == []


def test_handler_key_order_and_custom_route():
    app = make_app(require_token=False)
    seen = []
    app.add_handler("first", lambda ctx, m: seen.append("first"))
    app.add_handler("second", lambda ctx, m: seen.append("second"))
    _, cid = connect(app)
    assert message(app, cid, '{"handler": "first", "action": "second"}').status == 200
    assert message(app, cid, '{"action": "second"}', route="second").status == 200
    assert seen == ["first", "second"]


BAD_BODIES = [
    (b"not json", 400, "invalid_json"),
    (b"\xff\xfe", 400, "invalid_json"),
    (b'{"action": NaN}', 400, "invalid_json"),
    (b"[1, 2]", 400, "invalid_message"),
    (b'"chat_message"', 400, "invalid_message"),
    (b"null", 400, "invalid_message"),
    (b"{}", 400, "invalid_message"),
    (b'{"action": 5}', 400, "invalid_handler_name"),
    (b'{"action": ["chat_message"]}', 400, "invalid_handler_name"),
    (b'{"action": null}', 400, "invalid_handler_name"),
    (b'{"action": "__init__"}', 400, "invalid_handler_name"),
    (b'{"action": "_private"}', 400, "invalid_handler_name"),
    (b'{"action": "invoke"}', 400, "invalid_handler_name"),
    (b'{"action": "nope"}', 400, "unknown_handler"),
    (b'{"action": "chat_message", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "invalid_json"),
    (b'{"action": "chat_message", "x": ' + b"[" * 40 + b"]" * 40 + b"}", 400, "invalid_json"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_BODIES)
def test_bad_messages_are_4xx_and_change_nothing(body, status, code):
    app = make_app(require_token=False)
    _, cid = connect(app)
    before = snapshot(app.storage)
    reply = message(app, cid, body)
    assert (reply.status, reply.json_body()["error"]) == (status, code)
    assert snapshot(app.storage) == before
    assert app.transport.sent == []


def test_body_too_large_is_413():
    headers = gateway_headers("default", new_connection_id(), secret=SECRET)
    with pytest.raises(RequestError) as exc_info:
        from_http("default", headers, "", b"x" * (MAX_BODY_BYTES + 1))
    assert (exc_info.value.status, exc_info.value.code) == (413, "body_too_large")


def test_message_from_unknown_or_closed_connection():
    app = make_app(require_token=False)
    reply = message(app, new_connection_id(), '{"action": "chat_message"}')
    assert (reply.status, reply.json_body()["error"]) == (404, "unknown_connection")
    _, cid = connect(app)
    disconnect(app, cid)
    assert message(app, cid, '{"action": "chat_message"}').status == 404


def test_message_with_wrong_secret():
    app = make_app(require_token=False)
    _, cid = connect(app)
    reply = message(app, cid, '{"action": "chat_message"}', secret="nope")
    assert reply.status == 403
    assert app.transport.sent == []


def test_handler_errors():
    app = make_app(require_token=False)

    @app.handler("boom")
    def boom(ctx, m):
        raise RuntimeError("bug")

    @app.handler("validate")
    def validate(ctx, m):
        raise BadRequest("text is required")

    _, cid = connect(app)
    assert message(app, cid, '{"action": "boom"}').status == 500
    reply = message(app, cid, '{"action": "validate"}')
    assert reply.json_body() == {"error": "bad_request", "message": "text is required"}


def test_handler_permission():
    app = make_app(require_token=False)
    app.add_handler("admin_only", lambda ctx, m: "ok", permission=lambda ctx: ctx.user_id == "1")
    _, cid = connect(app)
    reply = message(app, cid, '{"action": "admin_only"}')
    assert (reply.status, reply.json_body()["error"]) == (403, "handler_forbidden")
    _, admin = connect(app, query=f"ws_token={token_for(app, '1')}")
    reply = message(app, admin, '{"action": "admin_only"}')
    assert (reply.status, reply.body) == (200, b"ok")


def test_message_rate_limit_has_retry_after():
    app = make_app(require_token=False, message_rate_per_connection="2/60")
    _, cid = connect(app)
    assert message(app, cid, '{"action": "chat_message"}').status == 200
    assert message(app, cid, '{"action": "chat_message"}').status == 200
    reply = message(app, cid, '{"action": "chat_message"}')
    assert reply.status == 429
    assert reply.json_body()["error"] == "rate_limited"
    assert 1 <= int(dict(reply.headers)["Retry-After"]) <= 61


def test_connect_rate_limit_counts_failed_token_attempts():
    app = make_app(connect_rate_per_ip="3/60")
    for _ in range(3):
        assert connect(app, query="ws_token=guess")[0].status == 401
    tok = token_for(app)
    before = snapshot(app.storage)
    reply, _ = connect(app, query=f"ws_token={tok}")
    assert reply.status == 429
    assert snapshot(app.storage) == before


def test_token_redemption_rate_limited():
    """token_rate_per_user counts tokens where they are redeemed: issuing is never limited,
    the third token connect of a user in the window is 429 (and that token is burnt)."""
    app = make_app(token_rate_per_user="2/60")
    tokens = [app.issue_token("1")[0] for _ in range(4)]  # issuing: an HMAC, no limit
    assert connect(app, query=f"ws_token={tokens[0]}")[0].status == 200
    assert connect(app, query=f"ws_token={tokens[1]}")[0].status == 200
    reply, cid = connect(app, query=f"ws_token={tokens[2]}")
    assert reply.status == 429
    assert reply.json_body()["error"] == "rate_limited"
    assert 1 <= int(dict(reply.headers)["Retry-After"]) <= 61
    assert app.storage.get_session(cid) is None
    assert connect(app, query=f"ws_token={tokens[2]}")[0].status == 401  # spent by the 429
    assert connect(app, query=f"ws_token={tokens[3]}")[0].status == 429
    # another user has a count of their own
    assert connect(app, query=f"ws_token={app.issue_token('2')[0]}")[0].status == 200


def test_disconnect_is_idempotent_and_hooks_fire_once():
    app = make_app(require_token=False)
    gone = []
    app.on_disconnect(lambda cid, ev: gone.append(cid))
    _, cid = connect(app)
    assert disconnect(app, cid).status == 200
    assert disconnect(app, cid).status == 200
    assert disconnect(app, new_connection_id()).status == 200
    assert gone == [cid]
    assert app.storage.get_session(cid).connected is False


def test_hooks_connect_and_message():
    app = make_app(require_token=False)
    events = []
    app.on_connect(lambda s, ev: events.append(("connect", s.connection_id)))
    app.on_message(lambda ctx: events.append(("message", ctx.handler_name)))
    _, cid = connect(app)
    message(app, cid, '{"action": "chat_message"}')
    assert events == [("connect", cid), ("message", "chat_message")]


def test_subscribe_builtins_off_by_default_and_use_policy():
    app = make_app(require_token=False)
    _, cid = connect(app)
    assert message(app, cid, '{"action": "subscribe", "channel": "x"}').status == 400
    app = make_app(require_token=False, enable_subscribe=True)
    _, cid = connect(app)
    reply = message(app, cid, '{"action": "subscribe", "channel": "extra"}')
    assert reply.json_body() == {"type": "subscribed", "channel": "extra", "added": True}
    assert app.storage.channels_of(cid) == ["default", "extra"]
    assert message(app, cid, '{"action": "subscribe", "channel": "private-x"}').status == 403
    assert message(app, cid, '{"action": "subscribe", "channel": 5}').status == 400
    assert message(app, cid, '{"action": "unsubscribe", "channel": "extra"}').status == 200
    assert app.storage.channels_of(cid) == ["default"]


def test_send_targets_and_gone_marking():
    app = make_app(require_token=False)
    cids = [connect(app, query=f"channel={ch}")[1] for ch in ("a", "a", "b")]
    app.transport.gone.add(cids[1])
    report = app.send({"x": 1}, channel="a")
    assert report.delivered == 1 and report.gone == (cids[1],)
    assert app.storage.get_session(cids[1]).connected is False
    assert app.send("hello", everyone=True).delivered == 2
    assert app.send(b"raw", connection_id=cids[2]).delivered == 1
    with pytest.raises(ValueError, match="say who"):
        app.send({"x": 1})


def test_send_refuses_oversized_before_any_call():
    app = make_app(require_token=False)
    connect(app)
    with pytest.raises(ValueError, match="131072"):
        app.send("x" * (MAX_BODY_BYTES + 1), everyone=True)
    assert app.transport.attempts == 0


def test_send_in_background_uses_runner():
    app = make_app(require_token=False)
    _, cid = connect(app)
    assert app.send_in_background({"a": 1}, connection_id=cid).result(5).delivered == 1
    ran = []

    def runner(job):
        from concurrent.futures import Future

        ran.append(True)
        fut = Future()
        fut.set_result(job())
        return fut

    app.background_runner = runner
    assert app.send_in_background({"a": 1}, everyone=True).result().delivered == 1
    assert ran == [True]
    app.close()


def test_registration_rules():
    app = WebSocketApp(storage=MemoryStorage(), config=Config(secret="s"))
    for bad in ("_x", "__init__", "1abc", "a b", "", "invoke"):
        with pytest.raises(ConfigurationError):
            app.add_handler(bad, lambda c, m: None)
    app.add_handler("ok", lambda c, m: None)
    with pytest.raises(ConfigurationError):
        app.add_handler("ok", lambda c, m: None)


def test_no_secret_configured_rejects_http_unless_insecure_flag():
    app = WebSocketApp(storage=MemoryStorage(), config=Config(require_token=False))
    assert connect(app, secret=None)[0].status == 403
    app = WebSocketApp(
        storage=MemoryStorage(),
        transport=RecordingTransport(),
        config=Config(require_token=False, allow_insecure_no_secret=True),
    )
    assert connect(app, secret=None)[0].status == 200


def test_default_transport_from_gateway_record():
    from apigw_ws_core.gateways import GatewayRecord
    from apigw_ws_core.http1 import ManagementApiTransport

    storage = MemoryStorage()
    storage.save_gateway(
        GatewayRecord(
            name="default",
            management_endpoint="https://abc.execute-api.eu-west-1.amazonaws.com/prod",
        )
    )
    app = WebSocketApp(storage=storage, config=Config(secret="s"))
    t = app.transport
    assert isinstance(t, ManagementApiTransport)
    assert t.region == "eu-west-1"
    assert app.transport is t
    with pytest.raises(ConfigurationError):
        _ = WebSocketApp(storage=MemoryStorage(), config=Config(secret="s")).transport


def test_sends_from_connect_hooks_skip_the_connecting_connection():
    app = make_app(require_token=False)
    _, old = connect(app, query="channel=room")
    reports = []
    app.on_connect(
        lambda s, ev: reports.append(
            (
                app.send({"joined": s.connection_id}, channel="room"),
                app.send({"hello": 1}, connection_id=s.connection_id),
            )
        )
    )
    _, new = connect(app, query="channel=room")
    ((to_room, to_self),) = reports
    assert to_room.delivered == 1 and to_room.gone == ()
    assert to_self.delivered == 0 and to_self.gone == ()
    assert app.transport.messages_for(old) == [{"joined": new}]
    assert app.transport.messages_for(new) == []
    assert app.storage.get_session(new).connected is True
    assert app.send({"later": 1}, connection_id=new).delivered == 1


def test_builtin_ping_and_override():
    app = make_app(require_token=False)
    _, cid = connect(app)
    assert message(app, cid, '{"action": "ping"}').json_body() == {"type": "pong"}
    app.add_handler("ping", lambda ctx, m: {"mine": True})
    assert message(app, cid, '{"action": "ping"}').json_body() == {"mine": True}
    with pytest.raises(ConfigurationError):
        app.add_handler("ping", lambda ctx, m: None)
    off = make_app(require_token=False, enable_ping=False)
    _, cid = connect(off)
    assert message(off, cid, '{"action": "ping"}').json_body()["error"] == "unknown_handler"


def test_token_for_forbidden_channel_is_refused_at_issue():
    from apigw_ws_core.errors import ChannelForbidden

    app = make_app()
    with pytest.raises(ChannelForbidden):
        app.issue_token("7", channel="private-staff")
    with pytest.raises(ChannelForbidden):
        app.issue_token("7", channel="user.8")
    assert app.storage.tokens == {}
    assert app.issue_token("8", channel="user.8")[0]


def test_message_limits_are_process_local_by_default_and_shared_when_given():
    from apigw_ws_core.limits import MemoryRateLimiter

    app = make_app(require_token=False, message_rate_per_connection="1/60")
    _, cid = connect(app)
    counters_after_connect = dict(app.storage.counters)
    assert message(app, cid, '{"action": "ping"}').status == 200
    assert message(app, cid, '{"action": "ping"}').status == 429
    assert app.storage.counters == counters_after_connect  # no storage write per message

    shared = MemoryRateLimiter()
    a = WebSocketApp(
        storage=MemoryStorage(),
        transport=RecordingTransport(),
        config=Config(secret=SECRET, require_token=False, message_rate_per_connection="1/60"),
        rate_limiter=shared,
    )
    b = WebSocketApp(storage=a.storage, transport=a.transport, config=a.config, rate_limiter=shared)
    _, cid = connect(a)
    assert message(a, cid, '{"action": "ping"}').status == 200
    assert message(b, cid, '{"action": "ping"}').status == 429  # counted across "processes"


@pytest.mark.parametrize("inner", [b"", b"1", b'"x"', b"{}"])
def test_depth_limit_counts_containers_only(inner):
    app = make_app(require_token=False, max_json_depth=32)
    _, cid = connect(app)
    # the object plus 31 lists = 32 containers: at the limit, whatever is inside
    ok = b'{"action": "ping", "x": ' + b"[" * 31 + inner + b"]" * 31 + b"}"
    if inner == b"{}":
        ok = b'{"action": "ping", "x": ' + b"[" * 30 + inner + b"]" * 30 + b"}"
    assert message(app, cid, ok).status == 200
    deeper = b'{"action": "ping", "x": ' + b"[" * 32 + b"]" * 32 + b"}"
    assert message(app, cid, deeper).json_body()["error"] == "invalid_json"
