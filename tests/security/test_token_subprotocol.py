"""Issue 17 item 5: the connection token may travel in ``Sec-WebSocket-Protocol`` instead
of the URL. The client offers ``apigw-ws`` and ``apigw-ws.token.<token>``; the reply selects
``apigw-ws`` (never the token); ``?ws_token=`` keeps working; a token given twice is a 400
before it is used. Through the pipeline, and with a real ``websockets`` client through the
local gateway to plain WSGI (memory storage) and to the Lambda handler. Django and Flask:
``tests/django_adapter/test_local_gateway.py`` and ``tests/flask_adapter/test_local_gateway.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from apigw_ws_core.aws_lambda import make_handler
from apigw_ws_core.events import from_http
from apigw_ws_core.testing import gateway_headers, new_connection_id
from apigw_ws_core.wsgi import make_wsgi_app
from tests.core.helpers import SECRET, connect, make_app, snapshot

pytest.importorskip("aiohttp")
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from apigw_ws_core.local.config import config_from_backend, config_from_lambda
from apigw_ws_core.local.testing import LocalGateway, wait_until

PROTO = "apigw-ws"
PREFIX = "apigw-ws.token."


def _offer(*protocols: str) -> dict[str, str]:
    return {"Sec-WebSocket-Protocol": ", ".join(protocols)}


def test_pipeline_takes_the_token_from_the_subprotocol_and_never_echoes_it() -> None:
    app = make_app()
    token, _ = app.issue_token("5")
    reply, cid = connect(app, extra=_offer(PROTO, PREFIX + token))
    assert reply.status == 200
    assert dict(reply.headers) == {"Sec-WebSocket-Protocol": PROTO}
    assert token not in repr(reply)
    assert app.storage.get_session(cid).user_id == "5"
    # spent like a query-string token
    assert connect(app, extra=_offer(PROTO, PREFIX + token))[0].json_body()["error"] == (
        "invalid_token"
    )


def test_the_query_parameter_keeps_working() -> None:
    app = make_app()
    reply, cid = connect(app, query=f"ws_token={app.issue_token('5')[0]}", extra=_offer(PROTO))
    assert reply.status == 200 and dict(reply.headers) == {"Sec-WebSocket-Protocol": PROTO}
    assert app.storage.get_session(cid).user_id == "5"


@pytest.mark.parametrize("where", ["twice-in-protocols", "protocol-and-query"])
def test_a_token_given_twice_is_400_and_neither_is_used(where: str) -> None:
    app = make_app()
    first, _ = app.issue_token("5")
    second, _ = app.issue_token("6")
    before = snapshot(app.storage)
    if where == "twice-in-protocols":
        reply, _ = connect(app, extra=_offer(PROTO, PREFIX + first, PREFIX + second))
    else:
        reply, _ = connect(app, query=f"ws_token={second}", extra=_offer(PROTO, PREFIX + first))
    assert reply.status == 400 and reply.json_body()["error"] == "bad_request"
    assert snapshot(app.storage) == before


def test_only_a_token_offered_selects_nothing_and_a_bad_token_is_401() -> None:
    app = make_app()
    reply, _ = connect(app, extra=_offer(PREFIX + app.issue_token("5")[0]))
    assert reply.status == 200 and reply.headers == ()
    reply, _ = connect(app, extra=_offer(PROTO, PREFIX + "not-a-token"))
    assert reply.status == 401 and reply.json_body()["error"] == "invalid_token"
    reply, _ = connect(app, extra=_offer(PROTO, PREFIX))
    assert reply.status == 401 and reply.json_body()["error"] == "token_required"


def test_turned_off_the_protocol_is_just_a_protocol() -> None:
    app = make_app(token_subprotocol_prefix=None, require_token=False)
    token, _ = app.issue_token("5")
    reply, cid = connect(app, extra=_offer(PREFIX + token, PROTO))
    assert reply.status == 200
    assert app.storage.get_session(cid).user_id is None


def test_the_protocol_header_is_redacted_in_event_repr() -> None:
    token = "T" * 43
    headers = gateway_headers("connect", new_connection_id(), secret=SECRET)
    headers["Sec-WebSocket-Protocol"] = f"{PROTO}, {PREFIX}{token}"
    assert token not in repr(from_http("connect", headers, ""))


# --- through the local gateway with a real WebSocket client -----------------------------


@pytest.fixture
def wsgi_stack() -> Iterator[tuple[Any, LocalGateway]]:
    from werkzeug.serving import make_server

    app = make_app(allowed_origins=["https://app.example"])
    server = make_server("127.0.0.1", 0, make_wsgi_app(app, prefix="/ws"), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with LocalGateway(
            config_from_backend(f"http://127.0.0.1:{server.port}/ws/", secret=SECRET)
        ) as gateway:
            yield app, gateway
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()


@pytest.fixture
def lambda_stack() -> Iterator[tuple[Any, LocalGateway]]:
    app = make_app(allowed_origins=["https://app.example"])
    with LocalGateway(config_from_lambda(make_handler(app), two_way=True)) as gateway:
        yield app, gateway


def check_through_gateway(
    app: Any,
    gateway: LocalGateway,
    user: str = "5",
    origin: str = "https://app.example",
    ping: bool = True,
) -> None:
    """The token in the protocol opens the socket as ``user``; the gateway hands the client
    the selected ``apigw-ws``; the query parameter still works; a spent token is 401."""
    token = str(app.issue_token(user)[0])
    with ws_connect(
        gateway.ws_url,
        subprotocols=[PROTO, PREFIX + token],  # type: ignore[list-item]
        origin=origin,  # type: ignore[arg-type]
        open_timeout=10,
    ) as conn:
        assert conn.subprotocol == PROTO
        cid = wait_until(lambda: (gateway.connection_ids() or [None])[0])
        assert str(app.storage.get_session(cid).user_id) == str(user)
        assert gateway.connection(cid)["subprotocol"] == PROTO
        if ping:
            conn.send('{"action": "ping"}')
            assert conn.recv(timeout=10) == '{"type":"pong"}'
    with pytest.raises(InvalidStatus) as info:  # spent
        ws_connect(
            gateway.ws_url,
            subprotocols=[PROTO, PREFIX + token],  # type: ignore[list-item]
            origin=origin,  # type: ignore[arg-type]
            open_timeout=10,
        )
    assert info.value.response.status_code == 401
    url = f"{gateway.ws_url}?ws_token={app.issue_token(user)[0]}"
    with ws_connect(url, origin=origin, open_timeout=10) as conn:  # type: ignore[arg-type]
        assert conn.subprotocol is None
        cid = wait_until(lambda: (gateway.connection_ids() or [None])[0])
        assert str(app.storage.get_session(cid).user_id) == str(user)


def test_wsgi_through_the_local_gateway(wsgi_stack: tuple[Any, LocalGateway]) -> None:
    check_through_gateway(*wsgi_stack)


def test_lambda_through_the_local_gateway(lambda_stack: tuple[Any, LocalGateway]) -> None:
    check_through_gateway(*lambda_stack)
