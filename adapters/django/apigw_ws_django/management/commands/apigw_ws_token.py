"""``manage.py apigw_ws_token USER [--channel C]``: print a single-use connection token.

For trying a WebSocket client without a login page::

    TOKEN=$(python manage.py apigw_ws_token alice)
    python -m websockets "ws://127.0.0.1:8001/local?channel=general&ws_token=$TOKEN"

``USER`` is a user's primary key or username. Errors are one line, never a traceback.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apigw_ws_core.send_cli import cli_error_message
from apigw_ws_django.management.commands.apigw_ws_send import Command as SendCommand
from apigw_ws_django.runtime import get_app


class Command(BaseCommand):
    """Issue a connection token for a user, as the token view would (no origin binding)."""

    help = "Print a single-use WebSocket connection token for a user (id or username)."

    def add_arguments(self, parser: CommandParser) -> None:
        """The user, and optionally the channel the token is bound to."""
        parser.add_argument("user", help="the user's id or username")
        parser.add_argument("--channel", help="bind the token to this channel")

    def handle(self, *args: Any, **options: Any) -> None:
        """Print the token on stdout."""
        try:
            user_id = SendCommand._user_id(options["user"])
            token, _expires_in = get_app().issue_token(user_id, channel=options["channel"])
        except CommandError:
            raise
        except Exception as exc:
            raise CommandError(cli_error_message(exc)) from exc
        self.stdout.write(token)
