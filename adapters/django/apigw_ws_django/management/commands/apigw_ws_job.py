"""``manage.py apigw_ws_job JOB_ID [--wait] [--json]``: the status of a durable send job.

With ``--wait`` a progress bar runs until the job ends. The exit status is 1 for a failed
job (retries exhausted or a configuration error), 0 otherwise.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apigw_ws_core.jobs import JobStatus, describe, follow, job_status
from apigw_ws_django.runtime import get_app

BAR_WIDTH = 30


def _bar(status: JobStatus) -> str:
    progress = status.progress
    if progress is None:
        return f"{status.handled} handled"
    filled = int(progress * BAR_WIDTH)
    return f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {progress:4.0%} {status.handled}"


class Command(BaseCommand):
    """Print a send job's status: running/done/failed, counts, first error."""

    help = "Status of a durable send job (see apigw_ws_core.jobs)."

    def add_arguments(self, parser: CommandParser) -> None:
        """``job_id``, ``--wait``, ``--json``."""
        parser.add_argument("job_id")
        parser.add_argument(
            "--wait", action="store_true", help="show a progress bar until the job ends"
        )
        parser.add_argument("--json", action="store_true", help="print the status as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        """Look the job up (and follow it with ``--wait``)."""
        storage = get_app().storage
        job_id = options["job_id"]
        status = job_status(storage, job_id)
        if status is None:
            raise CommandError(f"no send job {job_id!r} (unknown, or cleaned up)")
        if options["wait"] and not status.finished:

            def update(current: JobStatus) -> None:
                self.stderr.write(f"\rjob {job_id} {_bar(current)}", ending="")
                self.stderr.flush()

            status = follow(storage, job_id, update, poll=0.2) or status
            self.stderr.write("")
        if options["json"]:
            self.stdout.write(json.dumps(status.as_dict()))
        else:
            self.stdout.write(describe(status))
        if status.status == "failed":
            sys.exit(1)
