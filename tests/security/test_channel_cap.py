"""Issue 17 item 2: a connection may belong to at most ``max_channels_per_connection``
channels. One ``subscribe`` beyond the cap is ``409 too_many_channels`` and changes nothing;
after an ``unsubscribe`` it passes again. Through the pipeline (memory), plain WSGI over
loopback HTTP, the Lambda handler, Django (SQLite) and Flask (SQLAlchemy on SQLite)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest

from apigw_ws_core.aws_lambda import make_handler
from apigw_ws_core.config import Config
from apigw_ws_core.errors import ConfigurationError
from apigw_ws_core.testing import gateway_headers, lambda_event
from tests.core.helpers import SECRET, connect, make_app, message, snapshot
from tests.core.test_wsgi_and_lambda import post

from .adapters_support import django_reset, django_state, flask_reset, flask_state
from .conftest import _django_adapter_env
from .strategies import LIVE_CID

CAP = 3

#: (status, body) of one subscribe call.
Call = Callable[[str, str], tuple[int, dict[str, Any]]]


def _sub(action: str, channel: str) -> bytes:
    return json.dumps({"action": action, "channel": channel}).encode()


def _walk_to_the_cap(call: Call, state: Callable[[], Any], joined_at_connect: int = 1) -> None:
    """Fill the connection up to the cap, then check the refusal and the way out."""
    for i in range(CAP - joined_at_connect):
        status, body = call("subscribe", f"room-{i}")
        assert (status, body.get("added")) == (200, True), body
    # re-joining a channel it is in is no new membership: allowed at the cap
    status, body = call("subscribe", "room-0")
    assert (status, body.get("added")) == (200, False), body
    before = state()
    status, body = call("subscribe", "one-too-many")
    assert status == 409, body
    assert body["error"] == "too_many_channels"
    assert str(CAP) in body["message"]
    assert state() == before
    assert call("unsubscribe", "room-0")[0] == 200
    status, body = call("subscribe", "one-too-many")
    assert (status, body.get("added")) == (200, True), body


def test_default_cap_and_validation() -> None:
    assert Config().max_channels_per_connection == 100
    for bad in (0, -1, "5", True, 10_001):
        with pytest.raises(ConfigurationError):
            Config(max_channels_per_connection=bad)


def test_pipeline_cap_on_memory() -> None:
    app = make_app(enable_subscribe=True, max_channels_per_connection=CAP)
    cid = connect(app, query=f"ws_token={app.issue_token('5')[0]}")[1]

    def call(action: str, channel: str) -> tuple[int, dict[str, Any]]:
        reply = message(app, cid, _sub(action, channel))
        return reply.status, reply.json_body()

    _walk_to_the_cap(call, lambda: snapshot(app.storage))


def test_wsgi_cap_over_http() -> None:
    import threading
    from wsgiref.simple_server import make_server

    from apigw_ws_core.wsgi import make_wsgi_app
    from tests.core.test_wsgi_and_lambda import _Quiet

    app = make_app(enable_subscribe=True, max_channels_per_connection=CAP)
    server = make_server("127.0.0.1", 0, make_wsgi_app(app, prefix="/ws"), handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cid = connect(app, query=f"ws_token={app.issue_token('5')[0]}")[1]
        url = f"http://127.0.0.1:{server.server_port}/ws/default"

        def call(action: str, channel: str) -> tuple[int, dict[str, Any]]:
            status, _, body = post(
                url, gateway_headers("default", cid, secret=SECRET), _sub(action, channel)
            )
            return status, json.loads(body)

        _walk_to_the_cap(call, lambda: snapshot(app.storage))
    finally:
        server.shutdown()
        server.server_close()


def test_lambda_cap() -> None:
    app = make_app(enable_subscribe=True, max_channels_per_connection=CAP)
    handler = make_handler(app)
    cid = connect(app, query=f"ws_token={app.issue_token('5')[0]}")[1]

    def call(action: str, channel: str) -> tuple[int, dict[str, Any]]:
        res = handler(lambda_event("MESSAGE", cid, body=_sub(action, channel).decode()), None)
        return res["statusCode"], json.loads(res["body"])

    _walk_to_the_cap(call, lambda: snapshot(app.storage))


@pytest.fixture
def django_cap_env(settings: Any, django_user_model: Any) -> Iterator[dict[str, Any]]:
    settings.APIGW_WS = {
        **settings.APIGW_WS,
        "ENABLE_SUBSCRIBE": True,
        "MAX_CHANNELS_PER_CONNECTION": CAP,
    }
    with _django_adapter_env(django_user_model.objects.create_user("cap-7", pk=7)) as env:
        yield env


def test_django_cap(django_cap_env: dict[str, Any]) -> None:
    env = django_cap_env
    assert env["app"].config.max_channels_per_connection == CAP
    django_reset(env)

    def call(action: str, channel: str) -> tuple[int, dict[str, Any]]:
        resp = env["client"].post(
            "/ws/default",
            data=_sub(action, channel),
            content_type="application/json",
            headers=gateway_headers("default", LIVE_CID, secret=env["secret"]),
        )
        return resp.status_code, json.loads(resp.content)

    _walk_to_the_cap(call, django_state)


def test_flask_cap(flask_env: dict[str, Any]) -> None:
    env = flask_env
    core = env["core"]
    core.config = attrs.evolve(core.config, max_channels_per_connection=CAP)
    flask_reset(env)

    def call(action: str, channel: str) -> tuple[int, dict[str, Any]]:
        resp = env["client"].post(
            "/ws/default",
            data=_sub(action, channel),
            headers=gateway_headers("default", LIVE_CID, secret=env["secret"]),
        )
        return resp.status_code, resp.get_json()

    _walk_to_the_cap(call, lambda: flask_state(env["db"]))
