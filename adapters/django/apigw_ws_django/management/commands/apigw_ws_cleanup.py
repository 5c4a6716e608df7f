"""``manage.py apigw_ws_cleanup``: heal sessions and housekeep the WebSocket tables.

Asks API Gateway (``GET @connections``) about every session that may be stale and marks
disconnected exactly those it no longer knows (their ``$disconnect`` was lost), marks
sessions past API Gateway's 2-hour maximum disconnected, deletes disconnected sessions
older than a day, expired tokens, counters and history messages, and send jobs whose status
has been kept for ``JOB_KEEP_SECONDS``. ``--dry-run`` says what it would change. Run it
from cron or a scheduler, e.g. every 10 minutes.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apigw_ws_core.errors import ApigwWsError
from apigw_ws_django.runtime import get_app


class Command(BaseCommand):
    """Heal sessions whose ``$disconnect`` was lost; remove what has expired."""

    help = (
        "Ask API Gateway about possibly stale sessions and mark the ones it no longer knows "
        "disconnected; mark sessions past the 2-hour maximum disconnected; delete old "
        "disconnected sessions, expired tokens, counters and old send jobs."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        """``--dry-run``, ``--no-heal``, ``--keep-disconnected``, ``--deadline``."""
        parser.add_argument(
            "--dry-run", action="store_true", help="change nothing; report what would change"
        )
        parser.add_argument(
            "--no-heal",
            action="store_true",
            help="do not ask API Gateway (only age past the 2-hour maximum decides)",
        )
        parser.add_argument(
            "--keep-disconnected",
            type=int,
            default=86400,
            metavar="SECONDS",
            help="keep disconnected sessions this long (default: %(default)s)",
        )
        parser.add_argument(
            "--deadline",
            type=float,
            default=None,
            metavar="SECONDS",
            help="bound the healing run (default: the HEAL_DEADLINE setting, 600)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Run :meth:`WebSocketApp.cleanup <apigw_ws_core.app.WebSocketApp.cleanup>`."""
        app = get_app()
        try:
            result = app.cleanup(
                dry_run=bool(options["dry_run"]),
                heal=not options["no_heal"],
                keep_disconnected=options["keep_disconnected"],
                deadline=options["deadline"],
            )
        except ApigwWsError as exc:
            raise CommandError(f"{exc} (use --no-heal to skip asking API Gateway)") from exc
        prefix = "Dry run: " if result.dry_run else ""
        self.stdout.write(prefix + result.summary())
        if result.heal is not None and result.heal.unknown:
            self.stderr.write(
                f"{len(result.heal.unknown)} session(s) could not be checked "
                f"({result.heal.first_error}); the next run asks again."
            )
