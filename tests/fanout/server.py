"""A scriptable HTTP/1.1 server on loopback for transport and fan-out tests.

Raw asyncio (not aiohttp) so tests control the exact bytes: chunked bodies, HTTP/1.0,
``Connection: close``, closing idle kept-alive connections, hanging, dropping mid-response.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import attrs


@attrs.define
class Request:
    """One request as received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    conn_no: int

    @property
    def connection_id(self) -> str:
        return unquote(self.path.rsplit("/", 1)[-1])

    @property
    def access_key(self) -> str:
        m = re.search(r"Credential=([^/]+)/", self.headers.get("authorization", ""))
        return m.group(1) if m else ""


#: A reply: (status, headers, body) or a raw bytes response, or one of the actions
#: "close" (close without answering), "hang" (never answer), "half" (send a partial
#: status line then close).
Reply = tuple[int, dict[str, str], bytes] | bytes | str
Handler = Callable[[Request], Reply]


def ok(_req: Request) -> Reply:
    return (200, {"Content-Type": "application/json"}, b"{}")


class ScriptedServer:
    """Runs in its own thread and event loop. ``handler`` decides each reply."""

    def __init__(self, handler: Handler = ok, ssl_context: ssl.SSLContext | None = None):
        self.handler = handler
        self.ssl_context = ssl_context
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.connections = 0
        self.inflight = 0
        self.max_inflight = 0
        self.delay = 0.0
        self._writers: list[asyncio.StreamWriter] = []
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.server = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(5)
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}/dev"

    async def _start(self) -> asyncio.Server:
        return await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self.lock:
            self.connections += 1
            conn_no = self.connections
        self._writers.append(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if line:
                        k, _, v = line.partition(":")
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                req = Request(method, path, headers, body, conn_no)
                with self.lock:
                    self.requests.append(req)
                    self.inflight += 1
                    self.max_inflight = max(self.max_inflight, self.inflight)
                try:
                    if self.delay:
                        await asyncio.sleep(self.delay)
                    reply = self.handler(req)
                    if asyncio.iscoroutine(reply):
                        reply = await reply
                finally:
                    with self.lock:
                        self.inflight -= 1
                if reply == "close":
                    return
                if reply == "hang":
                    await asyncio.sleep(3600)
                    return
                if reply == "half":
                    writer.write(b"HTTP/1.1 2")
                    await writer.drain()
                    return
                if isinstance(reply, bytes):
                    writer.write(reply)
                    await writer.drain()
                    if b"connection: close" in reply.lower():
                        return
                    continue
                status, rheaders, rbody = reply
                out = [f"HTTP/1.1 {status} X"]
                rheaders = {"Content-Length": str(len(rbody)), **rheaders}
                out += [f"{k}: {v}" for k, v in rheaders.items()]
                writer.write(("\r\n".join(out) + "\r\n\r\n").encode() + rbody)
                await writer.drain()
        finally:
            writer.close()

    def close_idle_connections(self) -> None:
        """Close every server-side socket (as a server's keep-alive timeout would)."""

        async def close_all() -> None:
            for w in self._writers:
                w.close()
            self._writers.clear()
            await asyncio.sleep(0.05)

        asyncio.run_coroutine_threadsafe(close_all(), self.loop).result(5)

    def per_id(self) -> Counter[str]:
        with self.lock:
            return Counter(r.connection_id for r in self.requests)

    def bodies_for(self, cid: str) -> list[bytes]:
        with self.lock:
            return [r.body for r in self.requests if r.connection_id == cid]

    def stop(self) -> None:
        async def shutdown() -> None:
            self.server.close()
            for w in self._writers:
                w.close()
            await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


def status(code: int, headers: dict[str, str] | None = None, body: bytes = b"") -> Reply:
    return (code, headers or {}, body)


def gone(_req: Request) -> Reply:
    return status(410, {"x-amzn-ErrorType": "GoneException:http://internal"}, b"")


def make_handler(script: dict[str, list[Any]], default: Handler = ok) -> Handler:
    """Per connection id, a list of replies consumed in order, then ``default``."""
    lock = threading.Lock()

    def handler(req: Request) -> Any:
        with lock:
            queue = script.get(req.connection_id)
            if queue:
                return queue.pop(0)
        return default(req)

    return handler


__all__ = ["Request", "ScriptedServer", "gone", "make_handler", "ok", "status"]
