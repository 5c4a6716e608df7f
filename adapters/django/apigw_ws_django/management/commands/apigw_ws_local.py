"""``manage.py apigw_ws_local``: the local API Gateway stand-in in front of ``runserver``.

::

    manage.py apigw_ws_local                # runserver on :8000, WebSockets on ws://127.0.0.1:8001/local

Starts ``manage.py runserver`` in a subprocess and the local gateway
(:mod:`apigw_ws_core.local`, needs ``pip install apigw-ws[local]``) with
``--backend http://127.0.0.1:<runserver port>/<prefix>`` (the prefix where your view's
``urls()`` are mounted, found with ``reverse("apigw_ws:connect")``) and
``--secret`` from ``APIGW_WS['SECRET']``. The ``runserver`` process sends through the
gateway's Management API (``APIGW_WS_LOCAL_MANAGEMENT_ENDPOINT`` is set for it, and dummy
AWS credentials when none are configured). Every flag of ``apigw-ws local`` is accepted.
Stop with Ctrl+C: the gateway closes its connections and ``runserver`` is stopped.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.urls import NoReverseMatch, reverse

from apigw_ws_django.conf import LOCAL_ENDPOINT_ENV
from apigw_ws_django.runtime import get_app


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _local_cli() -> Any:
    try:
        from apigw_ws_core.local import cli
    except ImportError:
        return None
    return cli


class Command(BaseCommand):
    """Run ``runserver`` and the local gateway together."""

    help = "Run the local API Gateway WebSocket stand-in in front of runserver."
    requires_system_checks: list[str] = []  # runserver runs them

    def add_arguments(self, parser: CommandParser) -> None:
        """Our flags, then every flag of ``apigw-ws local``."""
        ours = parser.add_argument_group("runserver")
        ours.add_argument("--runserver-port", type=int, default=8000, help="(default: %(default)s)")
        ours.add_argument("--runserver-host", default="127.0.0.1", help="(default: %(default)s)")
        ours.add_argument(
            "--no-runserver",
            action="store_true",
            help="do not start runserver; use the server already on --runserver-port",
        )
        ours.add_argument("--noreload", action="store_true", help="runserver --noreload")
        ours.add_argument(
            "--namespace",
            default="apigw_ws",
            help="URL namespace of the WebSocket view (default: %(default)s)",
        )
        cli = _local_cli()
        if cli is not None:
            cli.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        """Start runserver, serve the gateway until interrupted, stop runserver."""
        cli = _local_cli()
        if cli is None:
            raise CommandError("the local gateway needs aiohttp: pip install 'apigw-ws[local]'")
        ns = argparse.Namespace(**options)
        explicit_source = any(options.get(k) for k in ("config", "from_apigw", "lambda_handler"))
        host = options["runserver_host"]
        rport = options["runserver_port"]
        if not explicit_source and not options.get("backend"):
            ns.backend = f"http://{host}:{rport}{self._prefix(options['namespace'])}"
        if ns.backend and options.get("secret") is None:
            ns.secret = get_app().config.secret
        if not ns.port:
            ns.port = _free_port(ns.host)
        stage = ns.stage or "local"
        gw_host = "127.0.0.1" if ns.host in ("", "0.0.0.0", "::") else ns.host  # noqa: S104
        management = f"http://{gw_host}:{ns.port}/{stage}"
        child = None
        if not options["no_runserver"]:
            child = self._start_runserver(host, rport, management, options["noreload"])
            self.stdout.write(
                f"runserver on http://{host}:{rport} (pid {child.pid}); "
                f"backend {ns.backend or '(from the API definition)'}"
            )
            self.stdout.flush()
        try:
            status = cli.run(ns)
        finally:
            if child is not None:
                self._stop(child)
        if status:
            raise CommandError(f"the local gateway exited with status {status}")

    @staticmethod
    def _prefix(namespace: str) -> str:
        try:
            path = reverse(f"{namespace}:connect")
        except NoReverseMatch as exc:
            raise CommandError(
                f"no URL named '{namespace}:connect': mount your view with "
                "path('ws/', include(ChatView.urls())) or pass --backend / --namespace"
            ) from exc
        return path[: -len("connect")]

    def _start_runserver(
        self, host: str, port: int, management: str, noreload: bool
    ) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env[LOCAL_ENDPOINT_ENV] = management
        env.setdefault("DJANGO_SETTINGS_MODULE", settings.SETTINGS_MODULE)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        if not (env.get("AWS_ACCESS_KEY_ID") or env.get("AWS_PROFILE")):
            # The local gateway accepts any well-formed SigV4 signature.
            env["AWS_ACCESS_KEY_ID"] = "local"
            env["AWS_SECRET_ACCESS_KEY"] = "local"
        env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        script = sys.argv[0] if sys.argv and sys.argv[0].endswith("manage.py") else None
        command = [sys.executable, script] if script else [sys.executable, "-m", "django"]
        command += ["runserver", f"{host}:{port}"]
        if noreload:
            command.append("--noreload")
        return subprocess.Popen(command, env=env, start_new_session=True)

    @staticmethod
    def _stop(child: subprocess.Popen[bytes]) -> None:
        """Stop runserver and its autoreloader child (one process group)."""
        if child.poll() is not None:
            return
        try:
            os.killpg(child.pid, signal.SIGTERM)
            child.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(10)
        except ProcessLookupError:
            pass
