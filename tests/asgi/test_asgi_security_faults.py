"""Issues 17 and 12 through the ASGI entry point (``make_asgi_app``), as for the other
adapters: the channel cap (409 ``too_many_channels``, nothing written), the token in
``Sec-WebSocket-Protocol`` (uvicorn behind the local gateway, a real ``websockets``
client), and a failing storage answered with a JSON 503 and ``Retry-After``."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from apigw_ws_core.asgi import make_asgi_app
from apigw_ws_core.testing import gateway_headers
from tests.core.helpers import SECRET, connect, make_app, snapshot
from tests.security.test_channel_cap import CAP, _sub, _walk_to_the_cap


def _call(asgi: Any, route: str, cid: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
    headers = [
        (k.lower().encode(), v.encode())
        for k, v in gateway_headers(route, cid, secret=SECRET).items()
    ]
    headers.append((b"content-length", str(len(body)).encode()))
    scope = {"type": "http", "method": "POST", "path": f"/ws/{route}", "headers": headers}
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    out: dict[str, Any] = {"body": b"", "headers": {}}

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
            out["headers"] = {k.decode(): v.decode() for k, v in message.get("headers", [])}
        else:
            out["body"] += message.get("body", b"")

    asyncio.run(asgi(scope, receive, send))
    return out["status"], out["headers"], out["body"]


def test_channel_cap_through_asgi() -> None:
    app = make_app(enable_subscribe=True, max_channels_per_connection=CAP)
    asgi = make_asgi_app(app, prefix="/ws")
    cid = connect(app, query=f"ws_token={app.issue_token('5')[0]}")[1]

    def call(action: str, channel: str) -> tuple[int, dict[str, Any]]:
        status, _, body = _call(asgi, "default", cid, _sub(action, channel))
        return status, json.loads(body)

    _walk_to_the_cap(call, lambda: snapshot(app.storage))


def test_storage_down_is_a_json_503_through_asgi(monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app()
    asgi = make_asgi_app(app, prefix="/ws")
    cid = connect(app, query=f"ws_token={app.issue_token('5')[0]}")[1]

    def down(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(app.storage, "get_session", down)
    status, headers, body = _call(asgi, "default", cid, b'{"action": "ping"}')
    assert status == 503
    assert headers["retry-after"] == "2" and headers["content-type"] == "application/json"
    assert json.loads(body)["error"] == "storage_unavailable"


@pytest.fixture
def uvicorn_stack() -> Iterator[tuple[Any, Any]]:
    pytest.importorskip("aiohttp")
    uvicorn = pytest.importorskip("uvicorn")
    from apigw_ws_core.local.config import config_from_backend
    from apigw_ws_core.local.testing import LocalGateway, wait_until

    app = make_app(allowed_origins=["https://app.example"])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    asgi = make_asgi_app(app, prefix="/ws")
    server = uvicorn.Server(uvicorn.Config(asgi, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout=10)
        backend = config_from_backend(f"http://127.0.0.1:{port}/ws/", secret=SECRET)
        with LocalGateway(backend) as gateway:
            yield app, gateway
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_token_in_the_subprotocol_through_asgi(uvicorn_stack: tuple[Any, Any]) -> None:
    from tests.security.test_token_subprotocol import check_through_gateway

    check_through_gateway(*uvicorn_stack)
