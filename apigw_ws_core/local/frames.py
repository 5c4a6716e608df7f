"""AWS's frame and message size limits on top of aiohttp's WebSocket server.

API Gateway closes a connection with 1009 when a client *frame* exceeds
32 KiB or a *message* (all fragments together) exceeds 128 KiB. aiohttp only
knows a whole-message limit (``max_msg_size``), which handles the 128 KiB
rule. For the 32 KiB frame rule, :class:`FrameSizeGuard` sits in front of
aiohttp's frame parser and scans the frame headers of the incoming byte
stream; when a data frame declares a payload larger than the limit it hands
aiohttp a header that trips aiohttp's own message-size check, so aiohttp
closes the connection with 1009 through its normal error path.

Installing the guard means replacing the parser aiohttp's request handler
feeds, which is not public aiohttp API. :class:`LimitedWebSocketResponse`
does it defensively: if the internals are not where expected, it logs a
warning once and falls back to the message limit only.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

__all__ = ["FrameSizeGuard", "LimitedWebSocketResponse"]

logger = logging.getLogger("apigw_ws_core.local")

_DATA_OPCODES = (0x0, 0x1, 0x2)
# A 64-bit payload length far above any max_msg_size: aiohttp rejects it with 1009.
_OVERSIZE_LENGTH = (2**63 - 1).to_bytes(8, "big")
_warned = False


class FrameSizeGuard:
    """Wraps an aiohttp ``WebSocketReader`` and enforces a per-frame payload limit.

    It forwards bytes unchanged, holding back only an incomplete frame header
    until the rest arrives, so it always knows where the next header starts.
    """

    __slots__ = ("_inner", "_limit", "_pending", "_remaining", "_tripped")

    def __init__(self, inner: Any, limit: int) -> None:
        """Guard ``inner`` (the parser aiohttp feeds) with a frame limit of ``limit`` bytes."""
        self._inner = inner
        self._limit = limit
        self._pending = b""
        self._remaining = 0
        self._tripped = False

    @property
    def tripped(self) -> bool:
        """True once an oversized frame was seen."""
        return self._tripped

    def feed_eof(self) -> None:
        """Pass end-of-stream on."""
        self._inner.feed_eof()

    def feed_data(self, data: bytes | bytearray | memoryview) -> Any:
        """Scan ``data`` for frame headers and forward it to the wrapped parser."""
        if self._tripped:
            return self._inner.feed_data(data)
        buf = self._pending + bytes(data) if self._pending else bytes(data)
        self._pending = b""
        size = len(buf)
        pos = 0
        while pos < size:
            if self._remaining:
                step = min(self._remaining, size - pos)
                self._remaining -= step
                pos += step
                continue
            if size - pos < 2:
                break
            first, second = buf[pos], buf[pos + 1]
            length_flag = second & 0x7F
            header_len = 2 + (2 if length_flag == 126 else 8 if length_flag == 127 else 0)
            header_len += 4 if second & 0x80 else 0
            if size - pos < header_len:
                break
            if length_flag == 126:
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
            elif length_flag == 127:
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
            else:
                length = length_flag
            if (first & 0x0F) in _DATA_OPCODES and length > self._limit:
                self._tripped = True
                if pos:
                    self._inner.feed_data(buf[:pos])
                crafted = bytes((first, (second & 0x80) | 127)) + _OVERSIZE_LENGTH
                return self._inner.feed_data(crafted)
            pos += header_len
            self._remaining = length
        if pos < size:
            self._pending = buf[pos:]
            buf = buf[:pos]
        if not buf:
            return False, b""
        return self._inner.feed_data(buf)

    def __getattr__(self, name: str) -> Any:
        """Delegate anything else to the wrapped parser."""
        return getattr(self._inner, name)


class LimitedWebSocketResponse(web.WebSocketResponse):
    """A :class:`aiohttp.web.WebSocketResponse` that also enforces a per-frame size limit."""

    def __init__(self, *, max_frame_size: int, **kwargs: Any) -> None:
        """Accept aiohttp's arguments plus ``max_frame_size`` (bytes per data frame)."""
        super().__init__(**kwargs)
        self._max_frame_size = max_frame_size

    def _post_start(self, *args: Any, **kwargs: Any) -> None:
        """Install :class:`FrameSizeGuard` around the parser aiohttp just created."""
        global _warned
        request = args[0] if args else kwargs.get("request")
        protocol = getattr(request, "protocol", None)
        tail = getattr(protocol, "_message_tail", b"")
        if tail:
            # Bytes that arrived before the parser existed; route them through the guard.
            protocol._message_tail = b""  # type: ignore[union-attr]
        super()._post_start(*args, **kwargs)
        parser = getattr(protocol, "_payload_parser", None)
        if parser is not None and hasattr(parser, "feed_data"):
            guard = FrameSizeGuard(parser, self._max_frame_size)
            protocol._payload_parser = guard  # type: ignore[union-attr]
            if tail:
                guard.feed_data(tail)
            return
        if tail and parser is not None:
            parser.feed_data(tail)
        if not _warned:
            _warned = True
            logger.warning(
                "this aiohttp version hides its WebSocket parser; only the %d-byte message "
                "limit is enforced, not the frame limit",
                self._max_frame_size,
            )
