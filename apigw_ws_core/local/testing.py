"""Running the local gateway from tests.

* :class:`LocalGateway` runs a :class:`~.server.Gateway` in-process, on its
  own thread and event loop, on a free port. Use it in functional tests.
* :class:`GatewayProcess` runs ``python -m apigw_ws_core.local`` as a
  subprocess and reads its ready line. Use it for load tests or whenever the
  gateway needs its own core and GIL.
* :class:`RecordingBackend` is a tiny threaded HTTP server on loopback that
  records every integration request and answers as configured.
* :func:`management_client` builds a boto3 ``apigatewaymanagementapi``
  client pointed at a gateway, with dummy credentials and no retries.

Example::

    with RecordingBackend() as backend, LocalGateway(config_from_backend(backend.url)) as gw:
        with websockets.sync.client.connect(gw.ws_url) as ws:
            cid = backend.wait_for("connect")[0].header("X-Apigw-Ws-Connection-Id")
            gw.management_client().post_to_connection(ConnectionId=cid, Data=b"hi")
            assert ws.recv() == "hi"
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote

import attrs
from aiohttp import web

from .config import ApiConfig, GatewayOptions
from .server import Gateway, start_gateway
from .tls import TlsSetup

__all__ = [
    "READY_LINE",
    "BackendReply",
    "GatewayProcess",
    "LocalGateway",
    "RecordedRequest",
    "RecordingBackend",
    "management_client",
    "wait_until",
]

_T = TypeVar("_T")

#: The line the CLI prints once it serves (``ws`` and ``management`` URLs).
READY_LINE = re.compile(
    r"apigw-ws local ready ws=(?P<ws>\S+) management=(?P<management>\S+)(?: ca=(?P<ca>\S+))?"
)


def wait_until(predicate: Callable[[], _T], timeout: float = 5.0, interval: float = 0.01) -> _T:
    """Poll ``predicate`` until it returns something truthy; return that value.

    :raises TimeoutError: when ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        time.sleep(interval)


def management_client(
    endpoint_url: str,
    *,
    region_name: str = "us-east-1",
    max_attempts: int = 1,
    aws_access_key_id: str = "testing",
    aws_secret_access_key: str = "testing",  # noqa: S107 - dummy credentials
    aws_session_token: str | None = None,
    verify: str | bool | None = None,
    **config: Any,
) -> Any:
    """Return a boto3 ``apigatewaymanagementapi`` client for a local gateway.

    Uses dummy credentials unless given (a gateway with strict SigV4,
    ``sigv4_keys``, needs one of its keys) and, by default, no retries (so a
    429 surfaces as ``LimitExceededException`` instead of being retried).

    :param endpoint_url: ``http://127.0.0.1:<port>/<stage>``.
    :param max_attempts: total attempts per call (botocore ``total_max_attempts``).
    :param config: extra :class:`botocore.config.Config` arguments.
    """
    import boto3
    from botocore.config import Config

    return boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=endpoint_url,
        region_name=region_name,
        aws_access_key_id=aws_access_key_id,
        aws_secret_access_key=aws_secret_access_key,
        aws_session_token=aws_session_token,
        verify=verify,
        config=Config(retries={"total_max_attempts": max_attempts, "mode": "standard"}, **config),
    )


def _http_json(
    method: str,
    url: str,
    payload: Any = None,
    timeout: float = 10.0,
    cafile: str | None = None,
) -> Any:
    """Make a small JSON request to a ``/_local/`` endpoint (``cafile``: trust for TLS)."""
    data = None if payload is None else json.dumps(payload).encode("utf-8")
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - loopback
    if data is not None:
        request.add_header("Content-Type", "application/json")
    context = ssl.create_default_context(cafile=cafile) if cafile else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


class _Inspector:
    """``/_local/`` helpers shared by both runners (they need ``base_url``)."""

    @property
    def base_url(self) -> str:  # pragma: no cover - overridden
        """``http://host:port``."""
        raise NotImplementedError

    @property
    def ca_file(self) -> str | None:
        """With TLS, the CA file clients trust (``None`` without TLS)."""
        return None

    def _local(self, method: str, path: str, payload: Any = None) -> Any:
        """Call ``/_local/{path}``; ``None`` on 404."""
        return _http_json(method, f"{self.base_url}/_local/{path}", payload, cafile=self.ca_file)

    def connections(self, *, closed: bool = False) -> list[dict[str, Any]]:
        """Open connections (or, with ``closed=True``, recently closed ones)."""
        data = self._local("GET", "connections" + ("?closed=1" if closed else ""))
        return list(data["closed" if closed else "connections"])

    def connection_ids(self) -> list[str]:
        """Ids of the connections that are open right now."""
        return [c["connectionId"] for c in self.connections() if c["state"] == "OPEN"]

    def connection(self, connection_id: str) -> dict[str, Any] | None:
        """One open or recently closed connection, with its delivered messages."""
        result: dict[str, Any] | None = self._local(
            "GET", f"connections/{quote(connection_id, safe='')}"
        )
        return result

    def messages(self, connection_id: str) -> list[dict[str, Any]]:
        """Messages delivered to a connection: ``{"at", "source", "data"}`` dicts."""
        data = self._local("GET", f"connections/{quote(connection_id, safe='')}/messages")
        return [] if data is None else list(data["messages"])

    def stats(self) -> dict[str, Any]:
        """Counters, connection counts and RSS of the gateway process."""
        result: dict[str, Any] = self._local("GET", "stats")
        return result

    def faults(self, **settings: int) -> dict[str, int]:
        """Change fault injection settings (``inject_429_every``, ``inject_5xx_every``,
        ``inject_hang_every``, ``drop_disconnect_every``; 0 turns one off) and return all
        of them as now in force. Counters are in :meth:`stats`."""
        result: dict[str, int] = self._local("POST", "faults", settings)
        return result

    def force_close(
        self, connection_id: str, code: int = 1001, reason: str = "", *, abort: bool = False
    ) -> bool:
        """Close a connection with ``code`` (or drop it with ``abort``); False if not open."""
        result = self._local(
            "POST",
            f"connections/{quote(connection_id, safe='')}/close",
            {"code": code, "reason": reason, "abort": abort},
        )
        return result is not None

    def management_client(self, **kwargs: Any) -> Any:
        """A boto3 management API client for this gateway (see :func:`management_client`)."""
        if self.ca_file is not None:
            kwargs.setdefault("verify", self.ca_file)
        return management_client(self.management_endpoint, **kwargs)

    @property
    def management_endpoint(self) -> str:  # pragma: no cover - overridden
        """``http://host:port/<stage>``."""
        raise NotImplementedError


class LocalGateway(_Inspector):
    """An in-process gateway on its own thread and event loop.

    :param api: the API definition (default: no routes at all).
    :param options: local behaviour.
    :param host: address to listen on.
    :param port: port to listen on (0: pick a free one; read :attr:`port`).

    Usable as a context manager; :meth:`start` returns ``self``.
    """

    def __init__(
        self,
        api: ApiConfig | None = None,
        options: GatewayOptions | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        access_log: bool = False,
        tls: TlsSetup | None = None,
    ) -> None:
        """Configure; nothing runs until :meth:`start`.

        :param tls: serve ``wss://``/``https://`` (:func:`~apigw_ws_core.local.tls.make_tls`).
        """
        self.tls = tls
        self.api = api if api is not None else ApiConfig()
        self.options = options if options is not None else GatewayOptions()
        self.host = host
        self.port = port
        self._access_log = access_log
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._gateway: Gateway | None = None

    @property
    def gateway(self) -> Gateway:
        """The running :class:`~.server.Gateway` (only touch it through :meth:`call`)."""
        if self._gateway is None:
            raise RuntimeError("the gateway is not running")
        return self._gateway

    @property
    def ca_file(self) -> str | None:
        """With TLS, the CA file clients trust (``None`` without TLS)."""
        return str(self.tls.ca_file) if self.tls is not None else None

    @property
    def base_url(self) -> str:
        """``http://host:port`` (``https://`` with TLS)."""
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """The WebSocket URL: ``ws://host:port/<stage>`` (``wss://`` with TLS)."""
        scheme = "wss" if self.tls is not None else "ws"
        return f"{scheme}://{self.host}:{self.port}/{self.api.stage}"

    @property
    def management_endpoint(self) -> str:
        """The boto3 ``endpoint_url``: ``http://host:port/<stage>`` (``https://`` with TLS)."""
        return f"{self.base_url}/{self.api.stage}"

    def start(self) -> LocalGateway:
        """Start serving; return once the port is bound."""
        if self._thread is not None:
            raise RuntimeError("already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            """The gateway thread: bind, report readiness, serve until stopped."""
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                tls = self.tls
                self._gateway = Gateway(
                    self.api,
                    self.options,
                    ca_bundle=str(tls.bundle_file) if tls is not None else None,
                )
                self._runner, self.port = loop.run_until_complete(
                    start_gateway(
                        self._gateway,
                        self.host,
                        self.port,
                        access_log=self._access_log,
                        ssl_context=tls.context if tls is not None else None,
                    )
                )
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="apigw-ws-local-gateway", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the local gateway did not start within 30 s")
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Close all connections (firing ``$disconnect``), stop serving, join the thread."""
        loop, thread, runner = self._loop, self._thread, self._runner
        if loop is None or thread is None or runner is None:
            return
        future = asyncio.run_coroutine_threadsafe(runner.cleanup(), loop)
        try:
            future.result(timeout=self.options.shutdown_timeout + self.options.close_timeout + 10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            self._thread = None
            self._loop = None
            self._runner = None
            self._gateway = None

    def run(self, coro: Coroutine[Any, Any, _T], timeout: float = 30.0) -> _T:
        """Run a coroutine on the gateway's loop and return its result."""
        if self._loop is None:
            raise RuntimeError("the gateway is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def call(self, fn: Callable[[Gateway], _T], timeout: float = 30.0) -> _T:
        """Call ``fn(gateway)`` on the gateway's loop (safe access to its state)."""

        async def invoke() -> _T:
            """Run ``fn`` on the loop thread."""
            return fn(self.gateway)

        return self.run(invoke(), timeout)

    def __enter__(self) -> LocalGateway:
        """Start and return self."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop."""
        self.stop()


class GatewayProcess(_Inspector):
    """``python -m apigw_ws_core.local --port 0 ...`` in a subprocess.

    :param args: extra CLI arguments (``--backend URL``, ``--config FILE``, ...).
    :param python: the interpreter to run.
    :param env: environment for the child (default: inherit).
    :param startup_timeout: seconds to wait for the ready line.
    """

    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        python: str = sys.executable,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 30.0,
        host: str = "127.0.0.1",
    ) -> None:
        """Configure; nothing runs until :meth:`start`."""
        self.args = list(args)
        self.python = python
        self.env = dict(env) if env is not None else None
        self.startup_timeout = startup_timeout
        self.host = host
        self.process: subprocess.Popen[str] | None = None
        self.ws_url = ""
        self._management = ""
        self._ca_file: str | None = None
        self.output: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()

    @property
    def management_endpoint(self) -> str:
        """The boto3 ``endpoint_url`` printed by the gateway."""
        return self._management

    @property
    def ca_file(self) -> str | None:
        """With ``--tls``, the CA file the gateway printed."""
        return self._ca_file

    @property
    def base_url(self) -> str:
        """``http://host:port`` (``https://`` with ``--tls``)."""
        scheme, _, rest = self._management.partition("://")
        return f"{scheme}://" + rest.split("/", 1)[0]

    @property
    def pid(self) -> int:
        """The child's process id."""
        if self.process is None:
            raise RuntimeError("not started")
        return self.process.pid

    def _pump(self) -> None:
        """Read the child's stdout lines (so its pipe never fills)."""
        assert self.process is not None
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            self._lines.put(line)
        self._lines.put(None)

    def start(self) -> GatewayProcess:
        """Spawn the gateway and wait for its ready line."""
        command = [
            self.python,
            "-m",
            "apigw_ws_core.local",
            "--host",
            self.host,
            "--port",
            "0",
            *self.args,
        ]
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, text=True, env=env, bufsize=1
        )
        threading.Thread(target=self._pump, name="apigw-ws-local-stdout", daemon=True).start()
        deadline = time.monotonic() + self.startup_timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(0.01, remaining))
            except queue.Empty:
                line = ""
            if line is None or remaining <= 0:
                self.stop()
                raise RuntimeError(
                    "the gateway process did not print its ready line; output:\n"
                    + "".join(self.output)
                )
            match = READY_LINE.search(line or "")
            if match:
                self.ws_url = match["ws"]
                self._management = match["management"]
                self._ca_file = match["ca"]
                return self

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM the gateway (graceful: 1001 closes, ``$disconnect`` calls) and wait."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def __enter__(self) -> GatewayProcess:
        """Start and return self."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop."""
        self.stop()


# --------------------------------------------------------------------------- backend


@attrs.frozen
class RecordedRequest:
    """One request received by :class:`RecordingBackend`."""

    method: str
    path: str
    query_string: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    received_at: float = attrs.field(factory=time.monotonic)

    @property
    def route(self) -> str:
        """The last path segment: ``connect``, ``disconnect``, ``default``, a route slug."""
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self.body.decode("utf-8")

    @property
    def query(self) -> dict[str, list[str]]:
        """The parsed query string."""
        return parse_qs(self.query_string, keep_blank_values=True)

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``None``."""
        values = self.header_values(name)
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive)."""
        lowered = name.lower()
        return [value for key, value in self.headers if key.lower() == lowered]

    @property
    def connection_id(self) -> str | None:
        """The ``X-Apigw-Ws-Connection-Id`` header (wire contract mapping)."""
        return self.header("X-Apigw-Ws-Connection-Id")


@attrs.frozen
class BackendReply:
    """How :class:`RecordingBackend` answers: status, body, headers, after ``delay`` seconds."""

    status: int = 200
    body: str | bytes = b""
    headers: Mapping[str, str] = attrs.field(factory=dict)
    delay: float = 0.0


Responder = Callable[[RecordedRequest], "BackendReply | None"]


class RecordingBackend:
    """A threaded HTTP server on loopback that records requests and answers as told.

    Every request is answered ``200`` with an empty body unless :meth:`reply`
    or :meth:`on` configured its route (the last path segment).

    :param base_path: the path prefix; :attr:`url` ends with it.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, base_path: str = "/ws/") -> None:
        """Configure; nothing runs until :meth:`start`."""
        self.host = host
        self.port = port
        self.base_path = base_path if base_path.endswith("/") else base_path + "/"
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Condition()
        self._responders: dict[str, Responder] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL to pass as ``--backend``: ``http://host:port/ws/``."""
        return f"http://{self.host}:{self.port}{self.base_path}"

    def reply(
        self,
        route: str,
        status: int = 200,
        body: str | bytes = b"",
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
    ) -> None:
        """Answer every request for ``route`` with this status/body/headers after ``delay``."""
        answer = BackendReply(status, body, dict(headers or {}), delay)
        self._responders[route] = lambda _request: answer

    def on(self, route: str, responder: Responder) -> None:
        """Answer requests for ``route`` with ``responder(request)`` (``None``: plain 200)."""
        self._responders[route] = responder

    def reset(self) -> None:
        """Forget recorded requests and configured replies."""
        with self._lock:
            self._requests.clear()
        self._responders.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_for(self, route: str) -> list[RecordedRequest]:
        """Requests whose route (last path segment) is ``route``."""
        return [r for r in self.requests if r.route == route]

    def wait_for(
        self,
        route: str,
        count: int = 1,
        timeout: float = 5.0,
        where: Callable[[RecordedRequest], bool] | None = None,
    ) -> list[RecordedRequest]:
        """Wait until ``count`` requests for ``route`` (matching ``where``) arrived; return them."""
        deadline = time.monotonic() + timeout

        def matching() -> list[RecordedRequest]:
            """Requests recorded so far that satisfy the filter (lock held)."""
            return [r for r in self._requests if r.route == route and (where is None or where(r))]

        with self._lock:
            while len(found := matching()) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{len(found)} of {count} {route!r} requests within {timeout} s; got "
                        f"{[r.route for r in self._requests]}"
                    )
                self._lock.wait(remaining)
            return found

    def _record(self, request: RecordedRequest) -> BackendReply:
        """Store a request and compute its reply (called on a server thread)."""
        with self._lock:
            self._requests.append(request)
            self._lock.notify_all()
        responder = self._responders.get(request.route)
        answer = responder(request) if responder is not None else None
        return answer if answer is not None else BackendReply()

    def start(self) -> RecordingBackend:
        """Start serving on a background thread."""
        backend = self

        class Handler(BaseHTTPRequestHandler):
            """Records each request and writes the configured reply."""

            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                """Read the body, record the request, answer (keep-alive HTTP/1.1)."""
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path, _, query = self.path.partition("?")
                recorded = RecordedRequest(
                    method=self.command,
                    path=path,
                    query_string=query,
                    headers=tuple(self.headers.items()),
                    body=body,
                )
                answer = backend._record(recorded)
                if answer.delay:
                    time.sleep(answer.delay)
                payload = (
                    answer.body.encode("utf-8") if isinstance(answer.body, str) else answer.body
                )
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            do_POST = do_GET = do_PUT = do_DELETE = do_PATCH = _handle

            def log_message(self, format: str, *args: Any) -> None:
                """Stay quiet (the default logs every request to stderr)."""
                return

        class Server(ThreadingHTTPServer):
            """Daemon threads, so stuck keep-alive connections never block shutdown."""

            daemon_threads = True
            request_queue_size = 256

        self._server = Server((self.host, self.port), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="recording-backend",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> RecordingBackend:
        """Start and return self."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop."""
        self.stop()
