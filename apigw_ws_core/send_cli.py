"""``apigw-ws send`` and ``apigw-ws token``: the command line for plain WSGI and Lambda apps.

::

    apigw-ws send --app chat '{"type": "notice", "text": "Back in 5"}' --channel general
    apigw-ws send --app chat:ws --text hello --everyone
    echo '{"type": "reload"}' | apigw-ws send --app myproject.ws:app - --user 42

``--app MODULE[:NAME]`` names the module holding your :class:`~apigw_ws_core.app.WebSocketApp`
(imported from the current directory, like ``flask --app``); without ``:NAME`` the module's
only ``WebSocketApp`` is used. ``APIGW_WS_APP`` in the environment works instead of ``--app``.

The app sends exactly as it does in a handler (:meth:`WebSocketApp.send`): its storage finds
the recipients and its Management API endpoint delivers. With no endpoint configured, the
running local gateway is found by itself (:mod:`apigw_ws_core.discovery`), and a loopback
endpoint needs no AWS credentials. Against AWS the normal credential chain applies.

``apigw-ws token --app chat alice [--channel general]`` prints a single-use connection token
for user ``alice``, for trying a WebSocket client (``?ws_token=...``) without a login page.

Every failure is one line on stderr saying what to do (``--traceback`` shows the rest); the
exit status is 1 when something could not be delivered, 2 for usage errors.

:func:`cli_error_message` is the one place that turns an exception into that line; the Flask
and Django send commands use it too.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import threading
import traceback
from typing import Any

from apigw_ws_core.app import WebSocketApp
from apigw_ws_core.errors import ApigwWsError, ConfigurationError
from apigw_ws_core.fanout import SendReport

__all__ = [
    "add_arguments",
    "add_token_arguments",
    "cli_error_message",
    "load_app",
    "parse_message",
    "run",
    "run_token",
]


class CliError(Exception):
    """A failure to report as one line (exit status ``code``)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def cli_error_message(exc: BaseException) -> str:
    """One line telling the user what went wrong and what to do about it."""
    if isinstance(exc, ApigwWsError | CliError):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    text = " ".join(str(exc).split()) or type(exc).__name__
    lowered = text.lower()
    if (
        "no such table" in lowered
        or ("relation" in lowered and "does not exist" in lowered)
        or ("table" in lowered and "doesn't exist" in lowered)
    ):
        return (
            f"the database has no apigw-ws tables ({text[:160]}): run your migrations "
            "(manage.py migrate) or storage.create_tables()"
        )
    if "could not connect" in lowered or "connection refused" in lowered:
        return f"cannot reach the database ({text[:160]}): is it running, and is its URL right?"
    return f"{type(exc).__name__}: {text[:300]}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``apigw-ws send``'s arguments on ``parser``."""
    parser.add_argument(
        "--app",
        default=os.environ.get("APIGW_WS_APP"),
        metavar="MODULE[:NAME]",
        help="where your WebSocketApp is (default: $APIGW_WS_APP); the current directory "
        "is importable",
    )
    parser.add_argument("message", help="JSON to send (or plain text with --text); '-' reads stdin")
    parser.add_argument("--text", action="store_true", help="send MESSAGE as text, not JSON")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--channel", help="every connection in this channel")
    target.add_argument("--user", help="every connection of this user id")
    target.add_argument(
        "--connection-id", "--connection", dest="connection_id", help="one connection"
    )
    target.add_argument(
        "--everyone", "--all", dest="everyone", action="store_true", help="every connection"
    )
    parser.add_argument(
        "--management-endpoint",
        metavar="URL",
        help="send through this Management API endpoint instead of the app's",
    )
    parser.add_argument("--traceback", action="store_true", help="show tracebacks of errors")


def load_app(spec: str | None) -> WebSocketApp:
    """Import ``MODULE[:NAME]`` from the current directory and return the WebSocketApp.

    :raises CliError: with a one-line explanation when it cannot be found.
    """
    if not spec:
        raise CliError(
            "name your app: --app MODULE[:NAME] (e.g. --app chat:ws) or set APIGW_WS_APP", 2
        )
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.split(".")[0] == exc.name.split(".")[0]:
            raise CliError(
                f"cannot import {module_name!r}: run this from the folder that holds "
                f"{module_name.split('.')[0]}.py, or give the full module path",
                2,
            ) from exc
        raise CliError(
            f"importing {module_name!r} failed: No module named {exc.name!r} "
            "(is it installed in this environment?)"
        ) from exc
    except Exception as exc:
        raise CliError(f"importing {module_name!r} failed: {cli_error_message(exc)}") from exc
    if attr:
        obj = getattr(module, attr, None)
        if obj is None:
            raise CliError(f"{module_name!r} has no attribute {attr!r}", 2)
        if not isinstance(obj, WebSocketApp):
            raise CliError(
                f"{spec} is a {type(obj).__name__}, not a WebSocketApp: name the "
                "WebSocketApp itself (the object your wsgi/lambda handler wraps)",
                2,
            )
        return obj
    apps = {name: v for name, v in vars(module).items() if isinstance(v, WebSocketApp)}
    if len(apps) == 1:
        return next(iter(apps.values()))
    if not apps:
        raise CliError(f"no WebSocketApp in {module_name!r}: use --app {module_name}:NAME", 2)
    names = ", ".join(f"{module_name}:{n}" for n in sorted(apps))
    raise CliError(f"several WebSocketApps in {module_name!r}: choose one of {names}", 2)


def parse_message(message: str, as_text: bool) -> Any:
    """The data to send: MESSAGE (or stdin for ``-``) parsed as JSON unless ``as_text``."""
    raw = sys.stdin.read() if message == "-" else message
    if as_text:
        return raw
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise CliError(
            f"the message is not JSON ({exc}); add --text to send plain text", 2
        ) from exc


def summary(report: SendReport, total: int | None = None) -> str:
    """The one-line outcome of a send (``total``: how many recipients there were)."""
    of = "" if total is None else f" of {total}"
    return (
        f"Delivered {report.delivered}{of}; gone {len(report.gone)} (marked disconnected "
        f"{report.marked_disconnected}); failed {len(report.failed)}; retried "
        f"{report.retried}; maybe twice {len(report.ambiguous)}; {report.elapsed:.2f}s"
    )


def _progress_printer(stream: Any) -> Any:
    lock = threading.Lock()
    done = [0]

    def advance(count: int) -> None:
        with lock:
            done[0] += count
            if stream.isatty():
                stream.write(f"\rsent {done[0]}")
                stream.flush()

    return advance


def run(args: argparse.Namespace) -> int:
    """Run ``apigw-ws send``; return the exit status."""
    try:
        app = load_app(args.app)
        data = parse_message(args.message, args.text)
        if args.management_endpoint:
            from apigw_ws_core.http1 import ManagementApiTransport

            app.transport = ManagementApiTransport(args.management_endpoint)
        target: dict[str, Any] = {
            "channel": args.channel,
            "user_id": args.user,
            "connection_id": args.connection_id,
            "everyone": bool(args.everyone),
        }
        report = app.send(data, progress=_progress_printer(sys.stderr), **target)
    except Exception as exc:
        if getattr(args, "traceback", False):
            traceback.print_exc()
        code = exc.code if isinstance(exc, CliError) else 1
        if isinstance(exc, ConfigurationError | ValueError) and not isinstance(exc, CliError):
            code = 2
        print(f"apigw-ws send: {cli_error_message(exc)}", file=sys.stderr)
        return code
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    print(summary(report))
    if report.failed:
        print(
            f"apigw-ws send: {len(report.failed)} delivery(ies) failed; see the app's log "
            "for the Management API's answers",
            file=sys.stderr,
        )
        return 1
    return 0


def add_token_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``apigw-ws token``'s arguments on ``parser``."""
    parser.add_argument(
        "--app",
        default=os.environ.get("APIGW_WS_APP"),
        metavar="MODULE[:NAME]",
        help="where your WebSocketApp is (default: $APIGW_WS_APP)",
    )
    parser.add_argument("user", help="the user id the token is for")
    parser.add_argument("--channel", help="bind the token to this channel")
    parser.add_argument("--traceback", action="store_true", help="show tracebacks of errors")


def run_token(args: argparse.Namespace) -> int:
    """Run ``apigw-ws token``: print a single-use connection token for ``args.user``."""
    try:
        app = load_app(args.app)
        token, _expires_in = app.issue_token(args.user, channel=args.channel)
    except Exception as exc:
        if getattr(args, "traceback", False):
            traceback.print_exc()
        print(f"apigw-ws token: {cli_error_message(exc)}", file=sys.stderr)
        return exc.code if isinstance(exc, CliError) else 1
    print(token)
    return 0
