"""``manage.py apigw_ws_send``: send a message to connections from the command line.

::

    manage.py apigw_ws_send '{"type": "notice", "text": "Back in 5"}' --channel lobby
    manage.py apigw_ws_send --text 'hello' --user alice
    echo '{"type": "reload"}' | manage.py apigw_ws_send - --all
    manage.py apigw_ws_send '{"x": 1}' --connection 'L0SM9cOFvHcCIhw='

With no management endpoint configured (no ``MANAGEMENT_ENDPOINT`` setting, no provisioned
gateway), the running local gateway (``manage.py apigw_ws_local``) is found by itself, and a
loopback endpoint needs no AWS credentials.

Shows a progress bar on stderr and ends with the core's
:class:`~apigw_ws_core.fanout.SendReport` summary; exits with an error when some
deliveries failed (gone connections are not failures: they are marked disconnected).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper

from apigw_ws_core.app import WebSocketApp
from apigw_ws_core.errors import ApigwWsError, PayloadTooLarge
from apigw_ws_core.fanout import SendReport, check_size
from apigw_ws_core.reply import encode_payload
from apigw_ws_core.send_cli import cli_error_message
from apigw_ws_django.runtime import get_app


class Progress:
    """A thread-safe progress line: ``sent 40/100 [########------------]``."""

    def __init__(self, total: int | None, stream: OutputWrapper, enabled: bool = True):
        self.total = total
        self.stream = stream
        self.enabled = enabled
        self.done = 0
        self._lock = threading.Lock()
        self._last = 0.0

    def advance(self, count: int = 1) -> None:
        """Count finished deliveries (delivered, gone or failed); redraw at most ten
        times a second. Called from the sending threads."""
        with self._lock:
            self.done += count
            now = time.monotonic()
            if now - self._last >= 0.1:
                self._last = now
                self._draw()

    def _draw(self) -> None:
        if not self.enabled:
            return
        if self.total:
            width = 30
            filled = min(width, width * self.done // self.total)
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\rsent {self.done}/{self.total} [{bar}]", ending="")
        else:
            self.stream.write(f"\rsent {self.done}", ending="")
        self.stream.flush()

    def finish(self) -> None:
        """Draw the final state and end the line."""
        with self._lock:
            self._draw()
            if self.enabled:
                self.stream.write("")


class Command(BaseCommand):
    """Send one message to a channel, a user's connections, one connection or everyone."""

    help = "Send a message to WebSocket connections (a channel, a user, one connection, or all)."

    def add_arguments(self, parser: CommandParser) -> None:
        """The message, how to read it, and exactly one target."""
        parser.add_argument("message", help="JSON to send, or '-' to read it from stdin")
        parser.add_argument(
            "--text", action="store_true", help="send the message as plain text, not JSON"
        )
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--channel", help="every connection subscribed to this channel")
        target.add_argument("--user", help="every connection of this user (id or username)")
        target.add_argument("--connection", help="one connection id")
        target.add_argument("--all", action="store_true", help="every connected session")
        parser.add_argument(
            "--deadline",
            type=float,
            default=None,
            metavar="SECONDS",
            help="stop attempting after this long (default: SEND_DEADLINE)",
        )
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        """Resolve the target, send through the core fan-out, print the summary. Any
        failure is one line (a :class:`CommandError`), never a traceback."""
        try:
            self._send(options)
        except CommandError:
            raise
        except Exception as exc:
            raise CommandError(cli_error_message(exc)) from exc

    def _send(self, options: dict[str, Any]) -> None:
        app = get_app()
        payload = self._payload(options["message"], options["text"])
        target = self._target(options)
        total = self._total(app, target)
        progress = Progress(total, self.stderr, enabled=not options["no_progress"])
        try:
            report = app.send(
                payload, progress=progress.advance, deadline=options["deadline"], **target
            )
        except ApigwWsError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            progress.finish()
        self._summary(report)
        if report.failed:
            raise CommandError(f"{len(report.failed)} delivery(ies) failed")

    def _payload(self, message: str, as_text: bool) -> bytes:
        raw = sys.stdin.read() if message == "-" else message
        data: Any = raw
        if not as_text:
            try:
                data = json.loads(raw)
            except ValueError as exc:
                raise CommandError(f"the message is not valid JSON ({exc}); use --text") from exc
        try:
            return check_size(encode_payload(data))
        except PayloadTooLarge as exc:
            raise CommandError(str(exc)) from exc

    def _target(self, options: dict[str, Any]) -> dict[str, Any]:
        if options["channel"]:
            return {"channel": options["channel"]}
        if options["connection"]:
            return {"connection_id": options["connection"]}
        if options["all"]:
            return {"everyone": True}
        return {"user_id": self._user_id(options["user"])}

    @staticmethod
    def _user_id(value: str) -> str:
        model = get_user_model()
        manager = model._default_manager
        user = None
        try:
            user = manager.filter(pk=value).first()
        except (ValueError, TypeError, ValidationError):
            user = None
        if user is None:
            user = manager.filter(**{model.USERNAME_FIELD: value}).first()
        if user is None:
            raise CommandError(f"no user with id or {model.USERNAME_FIELD} {value!r}")
        return str(user.pk)

    @staticmethod
    def _total(app: WebSocketApp, target: dict[str, Any]) -> int | None:
        """How many recipients to expect, when that is cheap to know."""
        if "connection_id" in target:
            return 1
        if "channel" in target:
            return app.storage.presence(target["channel"]).connection_count
        using = getattr(app.storage, "using", None)
        if using is None:
            return None
        from apigw_ws_storage.django_orm.models import WebSocketSession

        sessions = WebSocketSession.objects.using(using).filter(connected=True)
        if "user_id" in target:
            sessions = sessions.filter(user_id=target["user_id"])
        return sessions.count()

    def _summary(self, report: SendReport) -> None:
        style = self.style.SUCCESS if report.ok else self.style.WARNING
        self.stdout.write(
            style(
                f"Delivered {report.delivered}, gone {len(report.gone)}, failed "
                f"{len(report.failed)}, retried {report.retried}, maybe twice "
                f"{len(report.ambiguous)} in {report.elapsed:.2f}s."
            )
        )
