"""What we deploy is what we test (including a Lambda authorizer on ``$connect``).

Provision an API under moto whose target is a real WSGI backend on loopback, start the local
gateway from that very API (``config_from_apigw``: routes, integrations, request parameter
mappings, two-way flags, stage), and drive a real WebSocket client through it. Every header
the backend relies on (secret, connection id, event type) reaches it only because
provisioning mapped it.
"""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import attrs
import jwt
import pytest

pytest.importorskip("aiohttp")
websockets_client = pytest.importorskip("websockets.sync.client")

from apigw_ws_core import Config, MemoryStorage, WebSocketApp  # noqa: E402
from apigw_ws_core.local.config import config_from_apigw  # noqa: E402
from apigw_ws_core.local.testing import LocalGateway, wait_until  # noqa: E402
from apigw_ws_core.provision import AuthorizerSpec, RouteSpec, apply  # noqa: E402
from apigw_ws_core.wsgi import make_wsgi_app  # noqa: E402
from tests.provision.conftest import REGION, SECRET, AwsEnv, make_spec  # noqa: E402


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@attrs.define
class Backend:
    """The app behind the gateway, its URL, and every request it received."""

    app: WebSocketApp
    url: str
    requests: list[tuple[str, dict[str, str]]]

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]

    def first(self, path: str) -> dict[str, str]:
        return next(headers for p, headers in self.requests if p == path)


@pytest.fixture
def backend() -> Iterator[Backend]:
    app = WebSocketApp(
        storage=MemoryStorage(),
        config=Config(secret=SECRET, require_token=False, region=REGION),
    )

    @app.handler("chat_message")
    def chat(ctx: Any, message: dict[str, Any]) -> dict[str, Any]:
        ctx.send({"type": "chat", "text": message.get("text")}, channel=ctx.session.channel_name)
        return {"ok": True, "echo": message.get("text")}

    @app.handler("typing")
    def typing(ctx: Any, message: dict[str, Any]) -> dict[str, Any]:
        return {"never": "delivered"}  # one-way route: API Gateway drops the reply

    wsgi = make_wsgi_app(app, prefix="/ws")
    requests: list[tuple[str, dict[str, str]]] = []

    def recording(environ: dict[str, Any], start_response: Any) -> Any:
        headers = {
            k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")
        }
        requests.append((environ["PATH_INFO"], headers))
        return wsgi(environ, start_response)

    server = make_server("127.0.0.1", 0, recording, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Backend(app=app, url=f"http://127.0.0.1:{server.server_port}/ws/", requests=requests)
    finally:
        server.shutdown()
        server.server_close()
        app.close()


def test_provisioned_api_runs_locally_end_to_end(aws: AwsEnv, backend: Backend) -> None:
    spec = make_spec(
        target_base_url=backend.url,
        routes=[RouteSpec(key="chat_message"), RouteSpec(key="typing", two_way=False)],
        stage="live",
    )
    record = apply(spec, storage=aws.store, aws=aws.clients).record

    config = config_from_apigw(aws.client("apigatewayv2"), record.api_id, record.stage)
    assert config.stage == "live"
    assert {r: config.routes[r].two_way for r in config.routes} == {
        "$connect": False,
        "$disconnect": False,
        "$default": True,
        "chat_message": True,
        "typing": False,
    }
    with LocalGateway(config) as gw:
        backend.app.config = attrs.evolve(
            backend.app.config, management_endpoint=gw.management_endpoint
        )
        with websockets_client.connect(f"{gw.ws_url}?channel=general", open_timeout=30) as ws:
            (cid,) = wait_until(gw.connection_ids, timeout=10)
            connect = backend.first("/ws/connect")
            assert connect["x-apigw-ws-secret"] == SECRET
            assert connect["x-apigw-ws-connection-id"] == cid
            assert connect["connectionid"] == cid  # the legacy header too
            assert connect["x-apigw-ws-event-type"] == "CONNECT"
            assert connect["x-apigw-ws-stage"] == "live"
            session = backend.app.storage.get_session(cid)
            assert session is not None and session.channel_name == "general"

            ws.send(json.dumps({"action": "typing"}))
            ws.send(json.dumps({"action": "chat_message", "text": "hello"}))
            received = sorted((json.loads(ws.recv(timeout=10)) for _ in range(2)), key=str)
            # Pushed through @connections by the handler, and the two-way route's reply.
            assert received == [
                {"ok": True, "echo": "hello"},
                {"type": "chat", "text": "hello"},
            ]
            chat = backend.first("/ws/chat_message")
            assert chat["x-apigw-ws-route-key"] == "chat_message"
            assert chat["x-apigw-ws-secret"] == SECRET
            assert "/ws/typing" in backend.paths()

        wait_until(lambda: "/ws/disconnect" in backend.paths(), timeout=10)
        disconnect = backend.first("/ws/disconnect")
        assert disconnect["x-apigw-ws-connection-id"] == cid
        assert disconnect["x-apigw-ws-event-type"] == "DISCONNECT"
        wait_until(lambda: not backend.app.storage.get_session(cid).connected, timeout=10)
        # Nothing else was ever sent to the client: the one-way reply was dropped.
        delivered = sorted((json.loads(m["data"]) for m in gw.messages(cid)), key=str)
        assert delivered == received
    assert set(backend.paths()) == {
        "/ws/connect",
        "/ws/typing",
        "/ws/chat_message",
        "/ws/disconnect",
    }


def test_provisioned_authorizer_runs_locally_and_names_the_user(
    aws: AwsEnv, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = Path(__file__).resolve().parents[2] / "docs" / "examples" / "jwt_authorizer.py"
    loaded = importlib.util.spec_from_file_location("docs_jwt_authorizer_fidelity", example)
    assert loaded is not None and loaded.loader is not None
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    key = "fidelity-jwt-key-0123456789-0123456789"
    monkeypatch.setenv("JWT_SECRET", key)

    spec = make_spec(
        target_base_url=backend.url,
        routes=[RouteSpec(key="chat_message")],
        authorizer=AuthorizerSpec(
            function_arn="arn:aws:lambda:us-east-1:123456789012:function:ws-auth",
            identity_sources=("route.request.querystring.token",),
            context_keys=("userId",),
        ),
    )
    record = apply(spec, storage=aws.store, aws=aws.clients).record
    config = config_from_apigw(
        aws.client("apigatewayv2"), record.api_id, authorizer_handler=module.handler
    )
    authorizer = config.routes["$connect"].authorizer
    assert authorizer is not None
    assert authorizer.identity_sources == ("route.request.querystring.token",)
    backend.app.config = attrs.evolve(
        backend.app.config, require_token=True, user_from_authorizer="userId"
    )
    token = jwt.encode(
        {"sub": "alice", "aud": "apigw-ws", "scope": "ws", "exp": int(time.time()) + 60},
        key,
        algorithm="HS256",
    )
    with LocalGateway(config) as gw:
        with pytest.raises(Exception) as info:
            websockets_client.connect(gw.ws_url, open_timeout=30)
        assert getattr(info.value, "response").status_code == 401
        forged = {"X-Apigw-Ws-Authorizer-userId": "mallory"}
        with websockets_client.connect(
            f"{gw.ws_url}?token={token}", additional_headers=forged, open_timeout=30
        ):
            (cid,) = wait_until(gw.connection_ids, timeout=10)
            connect = backend.first("/ws/connect")
            assert connect["x-apigw-ws-authorizer-principal-id"] == "alice"
            assert connect["x-apigw-ws-authorizer-userid"] == "alice"
            assert backend.app.storage.get_session(cid).user_id == "alice"
