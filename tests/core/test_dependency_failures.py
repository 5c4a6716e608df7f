"""A failing dependency (storage, rate limiter, Management API) is a JSON ``503`` with a
stable code and ``Retry-After``, logged once with its cause; an unexpected bug is a JSON
``500``; rate limiters follow their failure policy. Through the pipeline, plain WSGI over
loopback HTTP and the Lambda handler (Django and Flask: ``tests/security/test_faults_adapters``;
real databases behind a faulty proxy: ``tests/faults``)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from apigw_ws_core import Config
from apigw_ws_core.aws_lambda import make_handler
from apigw_ws_core.errors import StorageUnavailable, TransportError
from apigw_ws_core.limits import RateLimiter
from apigw_ws_core.testing import lambda_event, new_connection_id

from .helpers import connect, make_app, message, snapshot
from .test_wsgi_and_lambda import post, served  # noqa: F401 - fixture

DOWN = ConnectionRefusedError(111, "Connection refused")


def _fail(app: Any, method: str, monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    def raiser(*args: Any, **kwargs: Any) -> Any:
        raise exc

    monkeypatch.setattr(app.storage, method, raiser)


class BrokenLimiter(RateLimiter):
    """A limiter whose backend is down (what a Redis outage looks like to the pipeline)."""

    def incr(self, key: str, window: int, now: Any) -> int:
        raise TimeoutError("Timeout reading from 127.0.0.1:6379")


def _assert_503(reply: Any, code: str) -> None:
    assert reply.status == 503
    body = reply.json_body()
    assert body == {"error": code, "message": body["message"]}
    # a stable, non-empty message that does not carry the cause (that goes to the log)
    assert isinstance(body["message"], str) and body["message"].endswith("retry shortly.")
    for cause in ("refused", "Errno", "Timeout", "timeout", "6379", "TransportError"):
        assert cause not in body["message"], body["message"]
    assert dict(reply.headers)["Retry-After"] == "2"
    assert dict(reply.headers)["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    ("method", "event"),
    [("spend_token", "connect"), ("get_session", "message"), ("mark_disconnected", "disc")],
)
def test_storage_down_is_503_storage_unavailable_logged_once(
    method: str, event: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app()
    token, _ = app.issue_token("5")
    live = connect(app, query=f"ws_token={app.issue_token('5')[0]}")[1]
    before = snapshot(app.storage)
    _fail(app, method, monkeypatch, DOWN)
    caplog.set_level(logging.INFO, "apigw_ws")
    if event == "connect":
        reply, _ = connect(app, query=f"ws_token={token}")
    elif event == "message":
        reply = message(app, live, '{"action": "ping"}')
    else:
        from .helpers import disconnect

        reply = disconnect(app, live)
    _assert_503(reply, "storage_unavailable")
    assert snapshot(app.storage) == before
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(records) == 1 and records[0].levelno == logging.ERROR
    assert records[0].name.startswith("apigw_ws")
    assert "storage_unavailable" in records[0].getMessage()
    assert (
        "cause: ConnectionRefusedError: [Errno 111] Connection refused" in records[0].getMessage()
    )
    assert token not in caplog.text


def test_handler_hitting_a_down_database_is_503_not_handler_failed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = make_app(enable_subscribe=True)
    cid = connect(app, query=f"ws_token={app.issue_token('5')[0]}")[1]
    _fail(app, "subscribe", monkeypatch, StorageUnavailable())
    _assert_503(message(app, cid, '{"action": "subscribe", "channel": "x"}'), "storage_unavailable")

    @app.handler("notify")
    def notify(ctx: Any, msg: Any) -> Any:
        raise TransportError("connect timeout", status=None)

    _assert_503(message(app, cid, '{"action": "notify"}'), "transport_unavailable")


def test_a_bug_is_a_json_500_with_a_traceback_in_the_log(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app()
    cid = connect(app, query=f"ws_token={app.issue_token('5')[0]}")[1]
    _fail(app, "get_session", monkeypatch, KeyError("bug"))
    reply = message(app, cid, '{"action": "ping"}')
    assert reply.status == 500
    assert reply.json_body()["error"] == "internal_error"
    assert "KeyError" in caplog.text and "Traceback" in caplog.text
    assert "bug" not in reply.body.decode()


def test_limiter_failure_policy_open_lets_through_and_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app()
    app.rate_limiter = app.message_rate_limiter = BrokenLimiter()
    caplog.set_level(logging.WARNING, "apigw_ws")
    reply, cid = connect(app, query=f"ws_token={app.issue_token('5')[0]}")
    assert reply.status == 200
    assert message(app, cid, '{"action": "ping"}').json_body() == {"type": "pong"}
    assert "rate_limiter_failure='open'" in caplog.text
    assert "TimeoutError: Timeout reading from 127.0.0.1:6379" in caplog.text


def test_limiter_failure_policy_closed_is_503_and_changes_nothing() -> None:
    app = make_app(rate_limiter_failure="closed")
    token, _ = app.issue_token("5")
    live = connect(app, query=f"ws_token={app.issue_token('5')[0]}")[1]
    working = app.rate_limiter, app.message_rate_limiter
    app.rate_limiter = app.message_rate_limiter = BrokenLimiter()
    before = snapshot(app.storage)
    _assert_503(connect(app, query=f"ws_token={token}")[0], "rate_limiter_unavailable")
    _assert_503(message(app, live, '{"action": "ping"}'), "rate_limiter_unavailable")
    assert snapshot(app.storage) == before
    # issuing a token is an HMAC: no counter, so a down limiter does not stop it; the
    # token is counted (token_rate_per_user) where it is redeemed, at $connect
    fresh, _ = app.issue_token("5")
    _assert_503(connect(app, query=f"ws_token={fresh}")[0], "rate_limiter_unavailable")
    assert snapshot(app.storage) == before  # neither token was spent by a refused $connect
    app.rate_limiter, app.message_rate_limiter = working
    assert connect(app, query=f"ws_token={token}")[0].status == 200
    assert connect(app, query=f"ws_token={fresh}")[0].status == 200


def test_failure_policy_is_validated() -> None:
    from apigw_ws_core.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        Config(rate_limiter_failure="maybe")
    assert Config().rate_limiter_failure == "open"


def test_token_issue_with_storage_down_still_issues_and_connect_is_503(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issuing is an HMAC (no storage call): storage being down does not stop it; the
    $connect that redeems the token is where storage is needed (503, token not spent)."""
    app = make_app()
    for method in ("connect", "spend_token", "incr_counter"):
        _fail(app, method, monkeypatch, DOWN)
    token, expires_in = app.issue_token("5")
    assert token and expires_in == app.config.token_ttl
    before = snapshot(app.storage)
    _assert_503(connect(app, query=f"ws_token={token}")[0], "storage_unavailable")
    assert snapshot(app.storage) == before
    monkeypatch.undo()
    assert connect(app, query=f"ws_token={token}")[0].status == 200


def test_wsgi_storage_down_is_json_503_over_http(served: Any, monkeypatch) -> None:  # noqa: F811
    app, base = served
    from apigw_ws_core.testing import gateway_headers

    from .helpers import SECRET

    cid = connect(app, query=f"ws_token={app.issue_token('5')[0]}")[1]
    _fail(app, "get_session", monkeypatch, DOWN)
    status, headers, body = post(
        f"{base}/default", gateway_headers("default", cid, secret=SECRET), b'{"action":"ping"}'
    )
    assert status == 503
    assert headers["Retry-After"] == "2" and headers["Content-Type"] == "application/json"
    assert json.loads(body)["error"] == "storage_unavailable"


def test_lambda_storage_down_is_json_503(monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app()
    handler = make_handler(app)
    token, _ = app.issue_token("5")
    _fail(app, "spend_token", monkeypatch, DOWN)
    res = handler(lambda_event("CONNECT", new_connection_id(), query={"ws_token": token}), None)
    assert res["statusCode"] == 503
    assert res["headers"]["Retry-After"] == "2"
    assert json.loads(res["body"])["error"] == "storage_unavailable"
