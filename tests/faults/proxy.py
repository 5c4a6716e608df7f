"""A TCP proxy that a test puts in front of a real server (PostgreSQL, MariaDB, Redis) to
inject faults without touching the server itself.

* ``restore()`` — forward bytes both ways (the normal state);
* ``kill()`` — reset every open connection and stop listening: new connections are
  refused, as when the server process dies;
* ``blackhole()`` — keep accepting connections and reading what clients send, but forward
  nothing either way, on new *and* open connections: a hung server or a silent network
  path. Only a client-side timeout gets a caller out.

It runs an asyncio loop in a daemon thread and always listens on the same loopback port,
so clients reconnect to the same address after a ``kill()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from typing import Literal

Mode = Literal["pass", "blackhole", "down"]

__all__ = ["FaultProxy"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FaultProxy:
    """``127.0.0.1:{port}`` → ``{host}:{target_port}`` with switchable faults."""

    def __init__(self, host: str, target_port: int) -> None:
        self.host = host
        self.target_port = target_port
        self.port = _free_port()
        self.mode: Mode = "pass"
        self.accepted = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    # --- control (called from the test's thread) ---------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def kill(self) -> None:
        """Refuse new connections and reset the open ones."""
        self._call(self._kill())

    def blackhole(self) -> None:
        """Accept and read, never forward (on open connections too)."""
        self._call(self._set_mode("blackhole"))

    def restore(self) -> None:
        """Forward again (listening again after a ``kill()``)."""
        self._call(self._restore())

    def close(self) -> None:
        self._call(self._kill())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def url_for(self, url: str) -> str:
        """``url`` with its ``host:port`` replaced by the proxy's address."""
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)
        auth = netloc[0] + "@" if len(netloc) == 2 else ""
        return urlunsplit(parts._replace(netloc=f"{auth}127.0.0.1:{self.port}"))

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, coro: object) -> None:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]
        future.result(10)

    # --- inside the loop ---------------------------------------------------------------

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )

    async def _set_mode(self, mode: Mode) -> None:
        self.mode = mode

    async def _restore(self) -> None:
        if self._server is None:
            await self._listen()
        self.mode = "pass"

    async def _kill(self) -> None:
        self.mode = "down"
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            transport = writer.transport
            with contextlib.suppress(Exception):
                sock = transport.get_extra_info("socket")
                if sock is not None:  # RST rather than FIN: the peer sees a reset
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" * 2)
            transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.add(writer)
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            if self.mode == "pass":
                try:
                    up_reader, upstream_writer = await asyncio.open_connection(
                        self.host, self.target_port
                    )
                except OSError:
                    writer.transport.abort()
                    return
                self._writers.add(upstream_writer)
                await asyncio.gather(
                    self._pipe(reader, upstream_writer), self._pipe(up_reader, writer)
                )
            else:  # black hole: read and drop until the client gives up
                while await reader.read(65536):
                    pass
        finally:
            for w in (writer, upstream_writer):
                if w is not None:
                    self._writers.discard(w)
                    w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self.mode == "pass":
                    writer.write(data)
                    await writer.drain()
                # blackhole: swallow; down: the connection is being aborted
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()
