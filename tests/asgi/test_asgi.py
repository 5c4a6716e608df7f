"""ASGI and ``async def`` handlers.

* ``async def`` handlers, hooks and permission checks work from every entry point: plain
  WSGI, Lambda, a caller that is itself inside an event loop, and ASGI, where the pipeline
  runs in a worker thread and the async handler runs on the server's event loop;
* a FastAPI app with :class:`apigw_ws_fastapi.ApigwWs`, served by uvicorn behind the
  local gateway, talks to a real ``websockets`` client: token from the token endpoint,
  ``$connect``, a reply from an async handler, a broadcast from ``ctx.asend``, and an
  endpoint of the user's own that gets the app through the dependency.
"""

import asyncio
import io
import json
import socket
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from apigw_ws_core import Config, MemoryStorage, WebSocketApp
from apigw_ws_core.asgi import make_asgi_app
from apigw_ws_core.aws_lambda import make_handler
from apigw_ws_core.events import from_http
from apigw_ws_core.testing import (
    RecordingTransport,
    gateway_headers,
    lambda_event,
    new_connection_id,
)
from apigw_ws_core.wsgi import make_wsgi_app

SECRET = "asgi-gateway-secret-0123456789"


def make_app() -> tuple[WebSocketApp, dict[str, Any]]:
    """An app whose handler, hooks and permission are all ``async def``; ``seen`` records
    the thread each ran on."""
    app = WebSocketApp(
        storage=MemoryStorage(),
        transport=RecordingTransport(),
        config=Config(secret=SECRET, require_token=False),
    )
    seen: dict[str, Any] = {"connected": [], "messages": []}

    @app.on_connect
    async def joined(session: Any, event: Any) -> None:
        await asyncio.sleep(0)
        seen["connected"].append(session.connection_id)

    @app.on_message
    async def logged(ctx: Any) -> None:
        seen["messages"].append(ctx.handler_name)

    async def allowed(ctx: Any) -> bool:
        await asyncio.sleep(0)
        return ctx.body.get("pass") != "no"

    @app.handler("echo", permission=allowed)
    async def echo(ctx: Any, message: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0)
        seen["echo_thread"] = threading.get_ident()
        await ctx.asend({"type": "pushed"}, connection_id=ctx.connection_id)
        return {"echo": message.get("text")}

    @app.handler("sync")
    def sync(ctx: Any, message: dict[str, Any]) -> dict[str, Any]:
        seen["sync_thread"] = threading.get_ident()
        return {"ok": True}

    return app, seen


def _http(app: WebSocketApp, route: str, cid: str, body: bytes = b"") -> Any:
    return app.handle(from_http(route, gateway_headers(route, cid, secret=SECRET), "", body))


def test_async_handlers_hooks_and_permissions_from_synchronous_entry_points():
    app, seen = make_app()
    cid = new_connection_id()
    assert _http(app, "connect", cid).status == 200
    reply = _http(app, "default", cid, b'{"action": "echo", "text": "hi"}')
    assert (reply.status, reply.json_body()) == (200, {"echo": "hi"})
    assert _http(app, "default", cid, b'{"action": "echo", "pass": "no"}').status == 403
    assert seen["connected"] == [cid] and seen["messages"] == ["echo"]
    assert app.transport.messages_for(cid) == [{"type": "pushed"}]

    # plain WSGI
    wsgi = make_wsgi_app(app, prefix="/ws")
    payload = b'{"action": "echo", "text": "w"}'
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/ws/default",
        "CONTENT_LENGTH": str(len(payload)),
        "wsgi.input": io.BytesIO(payload),
        **{
            "HTTP_" + k.upper().replace("-", "_"): v
            for k, v in gateway_headers("default", cid, secret=SECRET).items()
        },
    }
    status: list[str] = []
    body = b"".join(wsgi(environ, lambda s, h, e=None: status.append(s)))
    assert (status, json.loads(body)) == (["200 OK"], {"echo": "w"})

    # Lambda (no secret: IAM proved the caller)
    handler = make_handler(app)
    event = lambda_event("MESSAGE", cid, body='{"action": "echo", "text": "l"}')
    result = handler(event, None)
    assert result["statusCode"] == 200 and json.loads(result["body"]) == {"echo": "l"}

    # called from code that is itself running an event loop: no deadlock
    async def inside_a_loop() -> Any:
        return _http(app, "default", cid, b'{"action": "echo", "text": "a"}')

    assert asyncio.run(inside_a_loop()).json_body() == {"echo": "a"}


def _asgi_call(asgi: Any, route: str, cid: str, body: bytes) -> tuple[int, bytes]:
    headers = [
        (k.lower().encode(), v.encode())
        for k, v in gateway_headers(route, cid, secret=SECRET).items()
    ]
    headers.append((b"content-length", str(len(body)).encode()))
    scope = {"type": "http", "method": "POST", "path": f"/ws/{route}", "headers": headers}
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    out: dict[str, Any] = {"body": b""}

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
        else:
            out["body"] += message.get("body", b"")

    async def serve() -> int:
        out["loop_thread"] = threading.get_ident()
        await asgi(scope, receive, send)
        return 0

    asyncio.run(serve())
    return out["status"], out["body"], out["loop_thread"]  # type: ignore[return-value]


def test_asgi_runs_the_pipeline_off_the_loop_and_async_handlers_on_it():
    app, seen = make_app()
    asgi = make_asgi_app(app, prefix="/ws")
    cid = new_connection_id()
    assert _asgi_call(asgi, "connect", cid, b"")[0] == 200
    status, body, loop_thread = _asgi_call(asgi, "default", cid, b'{"action": "sync"}')
    assert status == 200 and seen["sync_thread"] != loop_thread  # sync code: worker thread
    status, body, loop_thread = _asgi_call(asgi, "default", cid, b'{"action": "echo", "text": "x"}')
    assert (status, json.loads(body)) == (200, {"echo": "x"})
    assert seen["echo_thread"] == loop_thread  # async handler: on the server's loop


# --- uvicorn + FastAPI behind the local gateway, real WebSocket clients -------------------


@pytest.fixture
def served() -> Iterator[tuple[WebSocketApp, Any, int]]:
    """examples/fastapi_app/app.py under uvicorn (in a thread) behind the local gateway."""
    pytest.importorskip("aiohttp")
    uvicorn = pytest.importorskip("uvicorn")
    from botocore.credentials import Credentials

    from apigw_ws_core.http1 import ManagementApiTransport
    from apigw_ws_core.local.config import config_from_backend
    from apigw_ws_core.local.testing import LocalGateway, wait_until

    example = _load_example()
    app, api = example.build(MemoryStorage(), secret=SECRET)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(api, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout=10)
        backend = config_from_backend(f"http://127.0.0.1:{port}/ws/", secret=SECRET)
        with LocalGateway(backend) as gateway:
            app.transport = ManagementApiTransport(
                gateway.management_endpoint, credentials=Credentials("t", "t")
            )
            yield app, gateway, port
    finally:
        server.should_exit = True
        thread.join(10)
        app.close()
        sock.close()


def _load_example() -> Any:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "fastapi_app" / "app.py"
    spec = importlib.util.spec_from_file_location("fastapi_example_app", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _post(port: int, path: str, data: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.slow
def test_fastapi_under_uvicorn_behind_the_local_gateway(served):
    from tests.local.conftest import _ws_connect

    _app, gateway, port = served
    json_headers = {"Content-Type": "application/json"}
    status, body = _post(port, "/ws/token", b"{}", json_headers)
    assert (status, body.get("error")) == (401, "login_required"), body
    status, body = _post(
        port, "/ws/token", b'{"channel": "lobby"}', {**json_headers, "X-User": "7"}
    )
    assert status == 200, body
    with _ws_connect(f"{gateway.ws_url}?channel=lobby&ws_token={body['token']}") as alice:
        alice.send(json.dumps({"action": "say", "text": "hello"}))
        got = [json.loads(alice.recv(timeout=10)) for _ in range(2)]
        assert {"type": "said", "by": "7", "text": "hello"} in got  # ctx.asend, awaited
        assert {"type": "ok", "text": "hello"} in got  # the async handler's reply
        status, body = _post(port, "/announce?text=hi", b"", {})
        assert (status, body["delivered"]) == (200, 1)
        assert json.loads(alice.recv(timeout=10)) == {"type": "news", "text": "hi"}
    # the token was single use; a wrong method answers JSON 405 after the secret check
    status, body = _post(port, "/ws/default", b"{}", {"X-Apigw-Ws-Secret": "wrong"})
    assert (status, body["error"]) == (403, "forbidden")


def test_starlette_mount_of_the_pure_asgi_app():
    """A Starlette ``Mount("/ws", app=make_asgi_app(app))`` routes by the mounted path."""
    pytest.importorskip("starlette")
    from starlette.applications import Starlette
    from starlette.routing import Mount

    app, _seen = make_app()
    api = Starlette(routes=[Mount("/ws", app=make_asgi_app(app))])
    cid = new_connection_id()
    assert _asgi_call(api, "connect", cid, b"")[0] == 200
    status, body, _ = _asgi_call(api, "default", cid, b'{"action": "echo", "text": "m"}')
    assert (status, json.loads(body)) == (200, {"echo": "m"})


def test_async_handler_through_the_flask_extension():
    """The same ``async def`` handler under Flask (a synchronous WSGI framework)."""
    flask = pytest.importorskip("flask")
    from apigw_ws_flask import ApigwWebSocket

    web = flask.Flask("async_flask")
    web.config.update(APIGW_WS_SECRET=SECRET, APIGW_WS_REQUIRE_TOKEN=False)
    ws = ApigwWebSocket(web, storage=MemoryStorage(), transport=RecordingTransport())

    @ws.handler("echo")
    async def echo(ctx: Any, message: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"echo": message["text"]}

    client = web.test_client()
    cid = new_connection_id()
    assert (
        client.post(
            "/ws/connect", headers=gateway_headers("connect", cid, secret=SECRET)
        ).status_code
        == 200
    )
    response = client.post(
        "/ws/default",
        data=b'{"action": "echo", "text": "f"}',
        headers=gateway_headers("default", cid, secret=SECRET),
    )
    assert (response.status_code, response.get_json()) == (200, {"echo": "f"})
