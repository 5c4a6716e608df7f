"""``manage.py apigw_ws_cleanup``: housekeeping for the WebSocket tables.

Deletes expired tokens and rate-limit counters, marks sessions older than API Gateway's
2-hour maximum as disconnected (their ``$disconnect`` never arrived), and deletes
disconnected sessions older than a day, and send jobs whose status has been kept for
``JOB_KEEP_SECONDS``. Run it from cron or a scheduler, e.g. hourly.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from apigw_ws_django.runtime import get_app


class Command(BaseCommand):
    """Remove expired tokens and counters, close stale sessions, delete old ones."""

    help = (
        "Delete expired tokens and counters, mark sessions past API Gateway's 2-hour "
        "maximum as disconnected, and delete old disconnected sessions."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        """``--dry-run``, ``--max-age``, ``--keep-disconnected``."""
        parser.add_argument(
            "--dry-run", action="store_true", help="only count what would be removed"
        )
        parser.add_argument(
            "--max-age",
            type=int,
            default=7200,
            metavar="SECONDS",
            help="sessions connected longer than this are stale (default: %(default)s, "
            "API Gateway's maximum connection duration)",
        )
        parser.add_argument(
            "--keep-disconnected",
            type=int,
            default=86400,
            metavar="SECONDS",
            help="keep disconnected sessions this long (default: %(default)s)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Run :meth:`Storage.cleanup <apigw_ws_core.storage.Storage.cleanup>` and report."""
        dry_run = bool(options["dry_run"])
        app = get_app()
        jobs = app.storage.delete_jobs(
            datetime.now(UTC) - timedelta(seconds=app.config.job_keep_seconds), dry_run=dry_run
        )
        report = app.storage.cleanup(
            datetime.now(UTC),
            session_max_age_seconds=options["max_age"],
            keep_disconnected_seconds=options["keep_disconnected"],
            dry_run=dry_run,
        )
        verb = "Would remove" if dry_run else "Removed"
        stale = "would be marked" if dry_run else "marked"
        self.stdout.write(
            f"{verb} {report.expired_tokens} expired token(s), {report.counters} expired "
            f"counter(s), {jobs} old send job(s) and {report.old_disconnected} old "
            "disconnected session(s); "
            f"{report.stale_sessions} stale session(s) {stale} disconnected."
        )
