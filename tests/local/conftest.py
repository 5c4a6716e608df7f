"""Fixtures for the local gateway tests.

Every test talks to a real gateway over loopback: the ``websockets`` sync
client for the WebSocket side, boto3's ``apigatewaymanagementapi`` client
for ``@connections``, and a :class:`RecordingBackend` (a threaded HTTP
server) standing in for the application behind the HTTP_PROXY integrations.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest
from websockets.sync.client import ClientConnection, connect

from apigw_ws_core.local import ApiConfig, GatewayOptions, config_from_backend
from apigw_ws_core.local.testing import LocalGateway, RecordingBackend, management_client
from apigw_ws_core.local.tls import TlsSetup, make_tls

SECRET = "s3cret-value"

#: Options used by default in tests: ids with '+' and '/', small close timeouts.
TEST_OPTIONS = GatewayOptions(special_char_ids=True, close_timeout=2.0, shutdown_timeout=5.0)


def _ws_connect(url: str, **kwargs: Any) -> ClientConnection:
    """Open a WebSocket with test-friendly settings (no compression, no pings, no size cap)."""
    kwargs.setdefault("open_timeout", 10)
    kwargs.setdefault("close_timeout", 2)
    kwargs.setdefault("compression", None)
    kwargs.setdefault("max_size", None)
    kwargs.setdefault("ping_interval", None)
    kwargs.setdefault("legacy", True)  # return the connection; it is also a context manager
    return connect(url, **kwargs)


class RawClient:
    """A bare-socket WebSocket client: for abrupt drops and clients that never read."""

    def __init__(self, host: str, port: int, path: str, *, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect((host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\nUser-Agent: raw-client\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("closed during handshake")
            head += chunk
        self.status = int(head.split(b" ", 2)[1])

    def send_frame(self, opcode: int, payload: bytes, *, fin: bool = True) -> None:
        """Send one masked frame."""
        mask = os.urandom(4)
        first = (0x80 if fin else 0) | opcode
        size = len(payload)
        if size < 126:
            header = bytes((first, 0x80 | size))
        elif size < 65536:
            header = bytes((first, 0x80 | 126)) + size.to_bytes(2, "big")
        else:
            header = bytes((first, 0x80 | 127)) + size.to_bytes(8, "big")
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def drop(self) -> None:
        """Close the TCP connection without a close frame (RST)."""
        linger_on_zero_timeout = struct.pack("ii", 1, 0)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_on_zero_timeout)
        self.sock.close()


@pytest.fixture
def backend() -> Iterator[RecordingBackend]:
    """A recording HTTP backend on loopback."""
    with RecordingBackend() as server:
        yield server


@pytest.fixture
def api(backend: RecordingBackend) -> ApiConfig:
    """The wire-contract API (``--backend``) with a custom ``chat`` route and a secret."""
    return config_from_backend(backend.url, routes=["chat"], secret=SECRET)


GatewayFactory = Callable[..., LocalGateway]


#: What the gateway sets for in-process handlers when unset (restored after each test).
_HANDLER_ENV = ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_LAMBDA_FUNCTION_NAME", "AWS_CA_BUNDLE")


@pytest.fixture(autouse=True)
def _restore_handler_environment() -> Iterator[None]:
    """Undo the environment the gateway gives in-process Lambda handlers."""
    saved = {name: os.environ.get(name) for name in _HANDLER_ENV}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsSetup:
    """A local CA (trustme) and a server certificate for localhost/127.0.0.1/::1."""
    return make_tls(tmp_path_factory.mktemp("local-tls"))


@pytest.fixture
def gateway_factory() -> Iterator[GatewayFactory]:
    """Start gateways on demand: ``factory(api, tls=None, **option_overrides)``; all stopped
    at teardown."""
    started: list[LocalGateway] = []

    def start(
        api: ApiConfig | None = None, tls: TlsSetup | None = None, **overrides: Any
    ) -> LocalGateway:
        options = attrs.evolve(TEST_OPTIONS, **overrides)
        gateway = LocalGateway(api, options, tls=tls).start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in reversed(started):
        gateway.stop()


@pytest.fixture
def gw(gateway_factory: GatewayFactory, api: ApiConfig) -> LocalGateway:
    """A running gateway for :func:`api`."""
    return gateway_factory(api)


@pytest.fixture
def client(gw: LocalGateway) -> Any:
    """boto3 management API client pointed at :func:`gw`, no retries."""
    return management_client(gw.management_endpoint)


@pytest.fixture
def ws_connect() -> Callable[..., ClientConnection]:
    """``ws_connect(url, **kwargs)``: a websockets sync client with test-friendly settings."""
    return _ws_connect


@pytest.fixture
def raw_client() -> type[RawClient]:
    """The :class:`RawClient` class (bare-socket client for drops and non-reading clients)."""
    return RawClient


@pytest.fixture
def secret() -> str:
    """The secret :func:`api` maps into ``X-Apigw-Ws-Secret``."""
    return SECRET


OpenConnection = Callable[..., tuple[ClientConnection, str]]


@pytest.fixture
def open_connection(backend: RecordingBackend) -> OpenConnection:
    """``open_connection(gateway, url=None, **kwargs) -> (websocket, connection id)``.

    The id is read from the ``$connect`` call the backend received.
    """

    def run(
        gateway: LocalGateway, url: str | None = None, **kwargs: Any
    ) -> tuple[ClientConnection, str]:
        before = len(backend.requests_for("connect"))
        ws = _ws_connect(url or gateway.ws_url, **kwargs)
        request = backend.wait_for("connect", count=before + 1)[-1]
        cid = request.connection_id
        assert cid is not None
        return ws, cid

    return run


@pytest.fixture
def disconnects_for(backend: RecordingBackend) -> Callable[..., list[Any]]:
    """``disconnects_for(cid, timeout=5)``: wait for/return the ``$disconnect`` calls of ``cid``."""

    def run(cid: str, timeout: float = 5.0) -> list[Any]:
        backend.wait_for("disconnect", where=lambda r: r.connection_id == cid, timeout=timeout)
        return [r for r in backend.requests_for("disconnect") if r.connection_id == cid]

    return run
