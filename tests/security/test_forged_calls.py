"""Origin of calls: only the shared secret proves that API Gateway made the call.

Everything else a forger can send (the API id header, an ``AmazonAPIGateway_`` User-Agent,
a connection id, a stage) proves nothing. Forged calls get 403, change nothing, reach no
handler, and are logged without the secret.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from werkzeug.test import Client

import apigw_ws_core.verify as verify_module
from apigw_ws_core import Config
from apigw_ws_core.aws_lambda import make_handler
from apigw_ws_core.errors import BadRequest, ConfigurationError
from apigw_ws_core.events import from_http
from apigw_ws_core.testing import gateway_headers, lambda_event, new_connection_id
from apigw_ws_core.wsgi import make_wsgi_app

from .support import SECRET, capture_logs, connect, make_app, message, snapshot, status_and_code

#: What the library the field uses today accepts as proof: API id + User-Agent prefix.
LEGACY_PROOF = {
    "X-Amzn-Apigateway-Api-Id": "abcdef1234",
    "User-Agent": "AmazonAPIGateway_abcdef1234",
    "Host": "example.com",
    "X-Real-Ip": "198.51.100.1",
}

WRONG_SECRETS = [
    pytest.param(None, id="absent"),
    pytest.param("", id="empty"),
    pytest.param("wrong", id="wrong"),
    pytest.param(SECRET[:-1], id="prefix"),
    pytest.param(SECRET + "x", id="suffix"),
    pytest.param(SECRET.upper(), id="case"),
    pytest.param(SECRET.swapcase(), id="swapcase"),
    pytest.param(" " + SECRET, id="leading-space"),
    pytest.param(SECRET + "\x00", id="nul"),
    pytest.param(SECRET.replace("e", "\u0435"), id="cyrillic-lookalike"),
    pytest.param(SECRET + "\ud800", id="lone-surrogate"),
    pytest.param("\u00e9" * 40, id="non-ascii"),
    pytest.param(f"{SECRET},{SECRET}", id="duplicated-header"),
    pytest.param("*", id="star"),
]


def _wsgi(app: Any) -> Client:
    return Client(make_wsgi_app(app, prefix="/ws"))


@pytest.mark.parametrize("presented", WRONG_SECRETS)
@pytest.mark.parametrize("route", ["connect", "default", "disconnect"])
def test_wrong_or_missing_secret_is_403_and_changes_nothing(route, presented):
    app = make_app(require_token=False)
    _, victim = connect(app)  # an existing connection the forger targets
    before = snapshot(app.storage)
    headers = gateway_headers(route, victim, secret=presented, extra=LEGACY_PROOF)
    body = json.dumps({"action": "chat_message", "text": "forged"}).encode()
    with capture_logs() as logs:
        reply = app.handle(from_http(route, headers, "channel=x", body))
    assert status_and_code(reply) == (403, "forbidden")
    assert snapshot(app.storage) == before
    assert app.transport.sent == []
    assert "forbidden" in logs.text
    logs.assert_absent(SECRET)


def test_legacy_proof_alone_is_not_enough_over_http():
    """API id + ``AmazonAPIGateway_`` User-Agent + every header API Gateway adds."""
    app = make_app(require_token=False, allowed_api_ids=["abcdef1234"])
    cid = new_connection_id()
    client = _wsgi(app)
    headers = {
        **LEGACY_PROOF,
        "X-Apigw-Ws-Connection-Id": cid,
        "connectionId": cid,
        "X-Forwarded-For": "198.51.100.1",
        "X-Amzn-Trace-Id": "Root=1-00000000-000000000000000000000000",
    }
    for route in ("connect", "default", "disconnect"):
        resp = client.post(f"/ws/{route}", headers=headers, data=b'{"action":"echo"}')
        assert resp.status_code == 403
        assert resp.get_json()["error"] == "forbidden"
    assert app.storage.sessions == {}


def test_secret_elsewhere_than_its_header_proves_nothing():
    app = make_app(require_token=False)
    cid = new_connection_id()
    client = _wsgi(app)
    base = gateway_headers("connect", cid, secret=None)
    attempts = [
        ({**base, "X-Apigw-Secret": SECRET}, ""),
        ({**base, "Authorization": f"Bearer {SECRET}"}, ""),
        ({**base, "Cookie": f"x-apigw-ws-secret={SECRET}"}, ""),
        (base, f"x-apigw-ws-secret={SECRET}"),
        (base, f"X-Apigw-Ws-Secret={SECRET}&secret={SECRET}"),
    ]
    for headers, query in attempts:
        resp = client.post("/ws/connect", headers=headers, query_string=query)
        assert resp.status_code == 403, (headers, query)
    assert app.storage.sessions == {}


def test_header_name_case_does_not_matter_but_value_does():
    app = make_app(require_token=False)
    cid = new_connection_id()
    headers = gateway_headers("connect", cid, secret=None)
    headers["x-APIGW-ws-SECRET"] = SECRET
    assert app.handle(from_http("connect", headers)).status == 200
    headers["x-APIGW-ws-SECRET"] = SECRET.lower()
    assert app.handle(from_http("connect", headers)).status == 403


def test_two_secret_headers_over_http_are_refused():
    """Duplicate headers reach WSGI joined with a comma: never equal to the secret."""
    app = make_app(require_token=False)
    cid = new_connection_id()
    headers = [(k, v) for k, v in gateway_headers("connect", cid, secret=None).items()] + [
        ("X-Apigw-Ws-Secret", SECRET),
        ("X-Apigw-Ws-Secret", "other"),
    ]
    resp = _wsgi(app).post("/ws/connect", headers=headers)
    assert resp.status_code == 403
    assert app.storage.sessions == {}


@pytest.mark.parametrize(
    ("method", "path", "body", "extra"),
    [
        ("GET", "/ws/connect", b"", {}),
        ("POST", "/ws/a/b", b"", {}),
        ("POST", "/other", b"", {}),
        ("POST", "/ws/default", b"x" * 200_000, {}),
        ("POST", "/ws/connect", b"", {"X-Apigw-Ws-Connection-Id": "bad id!"}),
        ("POST", "/ws/connect", b"", {"X-Apigw-Ws-Event-Type": "MESSAGE"}),
        ("POST", "/ws/default", b"", {"X-Apigw-Ws-Connection-Id": "a" * 200}),
    ],
)
def test_malformed_forged_requests_get_403_not_a_hint(method, path, body, extra):
    """Without the secret every answer is 403: a scanner learns nothing about what we
    would accept (route names, id format, size limit)."""
    app = make_app(require_token=False)
    headers = {**gateway_headers("connect", new_connection_id(), secret="guess"), **extra}
    resp = _wsgi(app).open(path, method=method, headers=headers, data=body)
    assert resp.status_code == 403
    assert resp.get_json()["error"] == "forbidden"
    # with the secret the same request gets its real, specific error
    headers["X-Apigw-Ws-Secret"] = SECRET
    resp = _wsgi(app).open(path, method=method, headers=headers, data=body)
    assert resp.status_code in (400, 404, 405, 413)
    assert app.storage.sessions == {}


def test_forged_message_for_a_real_connection_reaches_no_handler():
    app = make_app(require_token=False)
    called: list[str] = []
    app.add_handler("transfer", lambda ctx, m: called.append(ctx.connection_id))
    _, victim = connect(app)
    reply = message(app, victim, '{"action": "transfer"}', secret="guess")
    assert reply.status == 403
    assert called == []
    assert message(app, victim, '{"action": "transfer"}').status == 200
    assert called == [victim]


def test_forged_disconnect_and_reconnect_leave_the_victim_alone():
    app = make_app()
    token, _ = app.issue_token("7")
    _, victim = connect(app, query=f"channel=room&ws_token={token}")
    before = snapshot(app.storage)
    headers = gateway_headers("disconnect", victim, secret=None, extra=LEGACY_PROOF)
    assert app.handle(from_http("disconnect", headers)).status == 403
    headers = gateway_headers("connect", victim, secret="nope", extra=LEGACY_PROOF)
    assert app.handle(from_http("connect", headers, "channel=other")).status == 403
    assert snapshot(app.storage) == before
    assert app.storage.get_session(victim).user_id == "7"


def test_conflicting_connection_id_headers_are_refused():
    """On ``$connect`` API Gateway forwards the client's own headers: a client can add
    whichever connection-id header the deployment does not map. Both present and
    different ⇒ one is forged ⇒ 400, nothing stored."""
    app = make_app(require_token=False)
    _, victim = connect(app)
    real = new_connection_id()
    before = snapshot(app.storage)
    pairs = [
        ("X-Apigw-Ws-Connection-Id", "connectionId"),
        ("connectionId", "X-Apigw-Ws-Connection-Id"),
    ]
    for mapped, forged in pairs:
        headers = gateway_headers("connect", real, secret=SECRET)
        del headers["X-Apigw-Ws-Connection-Id"], headers["connectionId"]
        headers[mapped] = real
        headers[forged] = victim
        resp = _wsgi(app).post("/ws/connect", headers=headers, query_string="channel=evil")
        assert resp.status_code == 400
        assert resp.get_json()["error"] == "invalid_connection_id"
    assert snapshot(app.storage) == before
    assert app.storage.get_session(victim).channel_name == "default"


def test_stage_and_api_id_allowlists_apply_on_top_of_the_secret():
    app = make_app(require_token=False, allowed_stages=["prod"], allowed_api_ids=["abc123"])
    api = {"X-Amzn-Apigateway-Api-Id": "abc123"}
    assert connect(app, stage="prod", extra=api)[0].status == 200
    assert connect(app, stage="dev", extra=api)[0].status == 403
    assert connect(app, stage="prod", extra={"X-Amzn-Apigateway-Api-Id": "zzz"})[0].status == 403
    # the allowlists never replace the secret
    assert connect(app, stage="prod", extra=api, secret=None)[0].status == 403


def test_lambda_invocations_need_no_secret_but_obey_allowlists():
    """A Lambda invocation is authorised by IAM; the stage/API allowlists still apply."""
    app = make_app(require_token=False, allowed_stages=["prod"], allowed_api_ids=["abc123"])
    handler = make_handler(app)
    cid = new_connection_id()
    assert handler(lambda_event("CONNECT", cid, stage="dev", api_id="abc123"))["statusCode"] == 403
    assert handler(lambda_event("CONNECT", cid, stage="prod", api_id="x"))["statusCode"] == 403
    assert app.storage.sessions == {}
    assert handler(lambda_event("CONNECT", cid, stage="prod", api_id="abc123"))["statusCode"] == 200


def test_no_secret_configured_refuses_every_http_call():
    for secret in (None, ""):
        app = make_app(secret=secret, require_token=False)
        for presented in (None, "", "anything"):
            assert connect(app, secret=presented)[0].status == 403
        assert app.storage.sessions == {}


@pytest.mark.parametrize(
    "secret",
    ["s\u00e9cret-value", "secret\u2028", " padded", "padded ", "tab\tsecret", "nul\x00", "\ud800"],
)
def test_secrets_that_cannot_travel_in_a_header_are_refused_at_configuration(secret):
    with pytest.raises(ConfigurationError):
        Config(secret=secret)
    with pytest.raises(ConfigurationError):
        Config.from_mapping({"SECRET": secret})


def test_any_printable_ascii_secret_works_end_to_end_over_http():
    secret = "".join(chr(c) for c in range(0x21, 0x7F))  # every visible ASCII character
    app = make_app(secret=secret, require_token=False)
    headers = gateway_headers("connect", new_connection_id(), secret=secret)
    assert _wsgi(app).post("/ws/connect", headers=headers).status_code == 200


def test_comparison_is_constant_time_over_digests(monkeypatch):
    """Both sides go through ``hmac.compare_digest`` as equal-length digests, so neither the
    content nor the length of the secret shows in the timing."""
    seen: list[tuple[bytes, bytes]] = []
    real = verify_module.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(verify_module.hmac, "compare_digest", spy)
    app = make_app(require_token=False)
    for presented in ("x", SECRET, SECRET * 50, "\u00e9\ud800"):
        connect(app, secret=presented)
    assert len(seen) == 4
    assert all(len(a) == len(b) == 32 for a, b in seen)


def test_secret_never_appears_in_logs_or_event_repr():
    app = make_app(require_token=False, allowed_stages=["prod"])
    cid = new_connection_id()
    headers = gateway_headers("connect", cid, secret=SECRET, stage="dev")
    with capture_logs() as logs:
        event = from_http("connect", headers, f"secret={SECRET}&ws_token=abc")
        app.handle(event)  # 403 (stage) with the right secret
        app.handle(from_http("connect", gateway_headers("connect", cid, secret=SECRET[:-2])))
        app.reject(BadRequest("x"), gateway_headers("connect", cid, secret=SECRET))
        logging_repr = repr(event)
    logs.assert_absent(SECRET, SECRET[:-2])
    assert SECRET not in logging_repr
    assert SECRET not in repr(app.config)
    assert "x-apigw-ws-secret" not in event.headers


def test_secret_rotation_accepts_the_previous_secret_until_removed():
    old, new = "old-secret-0123456789abcdef", "new-secret-0123456789abcdef"
    app = make_app(secret=new, previous_secret=old, require_token=False)
    assert connect(app, secret=new)[0].status == 200
    assert connect(app, secret=old)[0].status == 200
    for wrong in (None, "", "x", old + new, old[:-1]):
        assert connect(app, secret=wrong)[0].status == 403
    done = make_app(secret=new, require_token=False)
    assert connect(done, secret=old)[0].status == 403
    # a previous secret alone never opens anything
    orphan = make_app(secret=None, previous_secret=old, require_token=False)
    assert connect(orphan, secret=old)[0].status == 403
    assert old not in repr(app.config) and new not in repr(app.config)
    with pytest.raises(ConfigurationError):
        Config(secret=new, previous_secret="b\u00e4d")
