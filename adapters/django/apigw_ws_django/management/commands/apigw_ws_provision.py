"""``manage.py apigw_ws_provision plan|apply|destroy``: the AWS WebSocket API of this project.

The same arguments as ``apigw-ws provision`` (``--config apigw-ws.toml``, ``--yes``,
``--show-unchanged``, ``--detailed-exitcode``, ``--region``, ``--profile``), but the gateway
record is kept in the database through the configured ``APIGW_WS`` storage, where the app
reads its Management API endpoint from. The app's ``SECRET`` is the secret provisioned when
the environment does not give one (a different one is refused), and a config whose ``name``
differs from the app's ``GATEWAY_NAME`` gets a warning.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from apigw_ws_core.provision_cli import add_provision_arguments, run_provision
from apigw_ws_django.runtime import get_runtime


class Command(BaseCommand):
    help = (
        "Plan, apply or destroy the AWS API Gateway WebSocket API described by a TOML file "
        "(see `apigw-ws provision --help`); the gateway record is kept in the database."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_provision_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        runtime = get_runtime()
        # Progress lines are written in pieces: keep Django from ending every write.
        self.stdout.ending = ""
        self.stderr.ending = ""
        code = run_provision(
            argparse.Namespace(**options),
            store=runtime.gateway_store,
            app_secret=runtime.config.secret,
            gateway_name=runtime.config.gateway_name,
            out=self.stdout,  # type: ignore[arg-type]
            err=self.stderr,  # type: ignore[arg-type]
        )
        if code:
            sys.exit(code)
