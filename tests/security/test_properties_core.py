"""Property tests for the framework-free entry points: hostile requests through the plain
WSGI app (werkzeug's test client, i.e. a real WSGI environ) and hostile event dicts through
the Lambda handler. Never a 5xx; every call without the secret is 403; a rejected call
leaves sessions and subscriptions as they were and adds nothing to the spent-token ledger
but the token it presented (counters may change by design); afterwards the token opens a
connection iff it is not in the ledger. A stateful property checks the token reference
model: a token opens a connection iff it is signed with our key, unexpired, unspent, and
its bindings match."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import attrs
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

from apigw_ws_core import MemoryStorage, WebSocketApp
from apigw_ws_core.aws_lambda import make_handler
from apigw_ws_core.testing import lambda_event
from apigw_ws_core.tokens import SPENT_GRACE
from apigw_ws_core.wsgi import make_wsgi_app

from .strategies import (
    ALLOWED_ORIGIN,
    BODIES,
    CHANNELS,
    JSON_VALUES,
    LIVE_CID,
    STABLE_CODES,
    HostileRequest,
    check_reply,
    check_unchanged,
    hostile_requests,
    ledger_key,
)
from .support import SECRET, connect, make_app

CONFIGS = st.sampled_from(
    [
        {"allowed_origins": [ALLOWED_ORIGIN], "enable_subscribe": True},
        {"require_token": False, "enable_subscribe": True, "message_rate_per_connection": "3/60"},
        {"require_token": False, "connect_rate_per_ip": "2/60", "allowed_stages": ["test"]},
    ]
)


def prepared_app(config: dict[str, Any]) -> tuple[WebSocketApp, str]:
    """An app with one live connection (``LIVE_CID``, user 7) and one unused token."""
    app = make_app(**config)
    live_token, _ = app.issue_token("7")
    reply, _ = connect(app, LIVE_CID, query=f"ws_token={live_token}", origin=ALLOWED_ORIGIN)
    assert reply.status == 200
    token, _ = app.issue_token("7")
    return app, token


def check_token_model(app: WebSocketApp, token: str) -> None:
    """After any call: the token opens a connection iff its digest is not in the ledger
    (it is signed with our key, unexpired and unbound, so being spent is all that counts)."""
    spent = ledger_key(app.config, token) in app.storage.tokens
    reply, cid = connect(
        app, query=f"ws_token={token}", origin=ALLOWED_ORIGIN, source_ip="198.51.100.77"
    )
    if spent:
        assert (reply.status, reply.json_body()["error"]) == (401, "invalid_token")
        assert app.storage.get_session(cid) is None
    else:
        assert reply.status == 200, reply.body
        assert app.storage.get_session(cid).user_id == "7"
    reply, _ = connect(
        app, query=f"ws_token={token}", origin=ALLOWED_ORIGIN, source_ip="198.51.100.78"
    )
    assert reply.status == 401  # either way, now it is spent


def memory_state(storage: MemoryStorage) -> dict[str, Any]:
    """Sessions, subscriptions and the spent-token ledger, comparable across calls."""
    with storage._lock:
        return {
            "sessions": dict(storage.sessions),
            "subs": {cid: sorted(subs) for cid, subs in storage.subscriptions.items()},
            "tokens": set(storage.tokens),
        }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=CONFIGS, data=st.data())
def test_wsgi_never_5xx_and_rejections_change_nothing(config, data):
    app, token = prepared_app(config)
    client = Client(make_wsgi_app(app, prefix="/ws"))
    request: HostileRequest = data.draw(hostile_requests(secret=SECRET, token=token))
    before = memory_state(app.storage)
    resp = client.open(
        f"/ws/{quote(request.route, safe='')}",
        method=request.method,
        headers=list(request.headers),
        query_string=request.query,
        data=request.body,
    )
    body = resp.get_data()
    event(
        f"{request.route if request.route in ('connect', 'default') else 'other'} "
        f"-> {resp.status_code} {json.loads(body)['error'] if resp.status_code >= 400 else ''}"
    )
    check_reply(request, resp.status_code, body, dict(resp.headers))
    if resp.status_code >= 400:
        check_unchanged(
            before,
            memory_state(app.storage),
            presented_token_digest=ledger_key(app.config, token)
            if request.token_presented
            else None,
        )
    assert app.transport.sent == [] or resp.status_code == 200
    check_token_model(app, token)


# --- Lambda -------------------------------------------------------------------------------

EVENT_TYPES = st.sampled_from(["CONNECT", "MESSAGE", "DISCONNECT"])


@st.composite
def lambda_events(draw: st.DrawFn, token: str) -> Any:
    """Plausible API Gateway events with random mutations, or arbitrary JSON."""
    if draw(st.integers(0, 5)) == 0:
        return draw(JSON_VALUES)
    kind = draw(EVENT_TYPES)
    cid = draw(st.sampled_from([LIVE_CID, "NewConnBBBBBBB0="]) | st.text(max_size=20))
    query = draw(
        st.dictionaries(
            st.sampled_from(["channel", "ws_token", "x"]),
            CHANNELS | st.sampled_from([token, token + "x"]) | st.text(max_size=10),
            max_size=3,
        )
    )
    headers = draw(
        st.dictionaries(
            st.sampled_from(["Origin", "Sec-WebSocket-Protocol", "User-Agent", "X-Forwarded-For"]),
            st.sampled_from([ALLOWED_ORIGIN]) | st.text(max_size=30),
            max_size=3,
        )
    )
    body = draw(BODIES).decode("utf-8", "surrogateescape")
    event = lambda_event(
        kind,
        cid if isinstance(cid, str) else LIVE_CID,
        body=body,
        query=query or None,
        headers=headers,
        stage=draw(st.sampled_from(["test", "prod", ""])),
    )
    for path, value in draw(
        st.lists(
            st.tuples(
                st.sampled_from(
                    [
                        ("requestContext", "eventType"),
                        ("requestContext", "connectionId"),
                        ("requestContext", "identity"),
                        ("requestContext", "routeKey"),
                        ("body",),
                        ("isBase64Encoded",),
                        ("headers",),
                        ("queryStringParameters",),
                        ("multiValueQueryStringParameters",),
                        ("requestContext",),
                    ]
                ),
                JSON_VALUES,
            ),
            max_size=2,
        )
    ):
        target = event
        for key in path[:-1]:
            target = target.get(key) if isinstance(target, dict) else None
        if isinstance(target, dict):
            target[path[-1]] = value
    return event


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=CONFIGS, data=st.data())
def test_lambda_never_5xx_and_rejections_change_nothing(config, data):
    app, token = prepared_app(config)
    handler = make_handler(app)
    lambda_ev = data.draw(lambda_events(token))
    before = memory_state(app.storage)
    result = handler(lambda_ev, None)
    status = result["statusCode"]
    event(f"{status} {json.loads(result['body'])['error'] if status >= 400 else ''}")
    assert status < 500, result
    for value in result["headers"].values():
        assert "\r" not in value and "\n" not in value
    if status >= 400:
        assert json.loads(result["body"])["error"] in STABLE_CODES
        presented = token in json.dumps(lambda_ev, default=str)
        check_unchanged(
            before,
            memory_state(app.storage),
            presented_token_digest=ledger_key(app.config, token) if presented else None,
        )
    check_token_model(app, token)


# --- the token reference model ------------------------------------------------------------

_T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
_OTHER_SECRET = "another-deployment-secret-0123456789"
_BIND_CHANNELS = st.sampled_from([None, "room-a", "room-b"])
_BIND_ORIGINS = st.sampled_from([None, ALLOWED_ORIGIN, "https://other.example"])


@attrs.define
class _Issued:
    token: str
    ours: bool  # signed with our key (else with another deployment's)
    channel: str | None
    origin: str | None
    expires_at: datetime
    digest: str


def _mutate(token: str, how: str, position: int) -> str:
    """``token`` with one bit of its signed bytes flipped, or spelled another way."""
    if how == "none":
        return token
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    if how == "tamper":
        raw[position % len(raw)] ^= 1 << (position % 8)
        return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    if how == "padded":
        return token + "="
    return token.replace("-", "+").replace("_", "/") + ("" if "-" in token or "_" in token else " ")


_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("issue"), st.booleans(), _BIND_CHANNELS, _BIND_ORIGINS),
        st.tuples(
            st.just("present"),
            st.integers(0, 20),
            st.booleans(),  # present it as it was bound (else: the drawn channel and origin)
            _BIND_CHANNELS,
            _BIND_ORIGINS,
            st.sampled_from(["none"] * 6 + ["tamper", "padded", "std-alphabet"]),
            st.integers(0, 10_000),
        ),
        st.tuples(st.just("advance"), st.sampled_from([1, 10, 59, 60, 61, 300, 400])),
        st.tuples(st.just("cleanup")),
    ),
    min_size=3,
    max_size=30,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=_STEPS)
def test_token_reference_model(steps):
    """Random issue / present / clock / cleanup sequences against the reference model: a
    presented token opens a connection iff it is signed with our key, unexpired, unspent,
    and its channel and origin bindings match; every unexpired genuine token presented is
    spent (burnt even when its bindings do not match); cleanup keeps a ledger row until
    the token's expiry + SPENT_GRACE."""
    now = [_T0]
    app = make_app(token_ttl=60, connect_rate_per_ip=None, token_rate_per_user=None)
    other = make_app(secret=_OTHER_SECRET, token_ttl=60)
    for a in (app, other):
        a.clock = lambda: now[0]
    issued: list[_Issued] = []
    spent: dict[str, datetime] = {}  # the model's ledger: digest -> token expiry
    connected = 0
    for step in [("issue", True, None, None), *steps]:
        if step[0] == "issue":
            _, ours, channel, origin = step
            token, _ = (app if ours else other).issue_token("7", channel=channel, origin=origin)
            digest = ledger_key((app if ours else other).config, token)
            issued.append(
                _Issued(token, ours, channel, origin, now[0] + timedelta(seconds=60), digest)
            )
        elif step[0] == "present" and issued:
            _, index, as_bound, channel, origin, how, position = step
            item = issued[index % len(issued)]
            if as_bound:
                channel, origin = item.channel, item.origin
            genuine = how == "none" and item.ours and now[0] < item.expires_at
            valid = (
                genuine
                and item.digest not in spent
                and item.channel in (None, channel or "default")
                and item.origin in (None, origin)
            )
            if genuine and item.digest not in spent:
                spent[item.digest] = item.expires_at  # burnt, valid or not
            query = {"ws_token": _mutate(item.token, how, position)}
            if channel is not None:
                query["channel"] = channel
            reply, cid = connect(app, query=urlencode(query), origin=origin)
            if valid:
                connected += 1
                assert reply.status == 200, (step, reply.body)
                assert app.storage.get_session(cid).channel_name == (channel or "default")
            else:
                assert (reply.status, reply.json_body()["error"]) == (401, "invalid_token"), step
                assert app.storage.get_session(cid) is None
        elif step[0] == "advance":
            now[0] += timedelta(seconds=step[1])
        elif step[0] == "cleanup":
            app.cleanup(heal=False)
            spent = {d: e for d, e in spent.items() if e + SPENT_GRACE > now[0]}
        assert set(app.storage.tokens) == set(spent)
        assert sum(s.connected for s in app.storage.sessions.values()) == connected
    event(f"connections opened: {min(connected, 3)}{'+' if connected > 3 else ''}")
    event(f"ledger rows at the end: {min(len(spent), 3)}{'+' if len(spent) > 3 else ''}")
