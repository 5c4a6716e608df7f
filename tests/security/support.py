"""Shared pieces of the security tests: an app on memory storage, a snapshot of everything
a rejected request must not change, request builders, and a log capture that proves a
value never reached any log record."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from apigw_ws_core import Config, MemoryStorage, WebSocketApp
from apigw_ws_core.events import from_http
from apigw_ws_core.reply import Reply
from apigw_ws_core.storage import Storage
from apigw_ws_core.testing import RecordingTransport, gateway_headers, new_connection_id

#: The gateway secret every test app is configured with. Long and distinctive, so that a
#: search for it in logs cannot match by accident.
SECRET = "sEcReT-4f9c1b7e2d-gateway-only"


def make_app(**config: Any) -> WebSocketApp:
    """A WebSocketApp on MemoryStorage and a RecordingTransport with an ``echo`` handler
    (returns the message) and a ``chat_message`` handler (sends to the session's channel)."""
    config.setdefault("secret", SECRET)
    app = WebSocketApp(
        storage=MemoryStorage(), transport=RecordingTransport(), config=Config(**config)
    )

    @app.handler("echo")
    def echo(ctx: Any, message: dict[str, Any]) -> Any:
        return message

    @app.handler("chat_message")
    def chat(ctx: Any, message: dict[str, Any]) -> Any:
        ctx.send({"type": "chat", "text": message.get("text")}, channel=ctx.session.channel_name)
        return {"ok": True}

    return app


def snapshot(storage: MemoryStorage) -> dict[str, Any]:
    """Sessions, subscriptions and the spent-token ledger (``tokens``: tokens are signed,
    not stored; only spent ones are recorded): what a rejected request must leave alone.
    (Rate-limit counters may change by design: failed attempts count.)"""
    return copy.deepcopy(
        {"sessions": storage.sessions, "subs": storage.subscriptions, "tokens": storage.tokens}
    )


def connect(
    app: WebSocketApp,
    cid: str | None = None,
    *,
    query: str = "",
    secret: str | None = SECRET,
    origin: str | None = None,
    **kw: Any,
) -> tuple[Reply, str]:
    """A ``$connect`` through the pipeline; returns ``(reply, connection_id)``."""
    cid = cid or new_connection_id()
    headers = gateway_headers("connect", cid, secret=secret, origin=origin, **kw)
    return app.handle(from_http("connect", headers, query)), cid


def message(
    app: WebSocketApp, cid: str, body: bytes | str, *, secret: str | None = SECRET
) -> Reply:
    """A message on ``$default`` through the pipeline."""
    raw = body.encode() if isinstance(body, str) else body
    return app.handle(from_http("default", gateway_headers("default", cid, secret=secret), "", raw))


def status_and_code(reply: Reply) -> tuple[int, str | None]:
    """``(status, error code)`` of a reply (code ``None`` for a success)."""
    data = reply.json_body() if reply.body else None
    return reply.status, data.get("error") if isinstance(data, dict) else None


class LogCapture(logging.Handler):
    """Every record of every logger, formatted with its traceback, kept as text."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
        # the raw parts too, in case a formatter elsewhere renders them differently
        self.lines.append(repr(record.args))
        self.lines.append(repr(record.__dict__.get("extra")))

    @property
    def text(self) -> str:
        """All captured output as one string."""
        return "\n".join(self.lines)

    def assert_absent(self, *values: str) -> None:
        """Fail if any of ``values`` (or its repr-escaped form) appears in any record."""
        text = self.text
        for value in values:
            assert value, "empty needle"
            for form in {value, repr(value)[1:-1], value.encode("unicode_escape").decode()}:
                assert form not in text, f"{value[:6]}... leaked into the logs"


@contextmanager
def capture_logs() -> Iterator[LogCapture]:
    """Capture every log record at DEBUG from the root logger down."""
    handler = LogCapture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def thread_storage(alias: str) -> Storage:
    """A Django ORM storage on ``alias`` that closes its thread's connection after every
    call (for racing threads; see ``tests.django_orm.helpers.ThreadStorage``)."""
    from tests.django_orm.helpers import ThreadStorage

    return ThreadStorage(alias)  # type: ignore[return-value]
