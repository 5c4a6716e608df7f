"""``flask apigw-ws``: housekeeping, sending, the local gateway and provisioning.

* ``flask apigw-ws cleanup [--dry-run] [--no-heal]`` — heal sessions whose ``$disconnect`` was
  lost (asking API Gateway), remove expired tokens and counters, close stale
  sessions, delete old disconnected ones (run it from cron every few minutes);
* ``flask apigw-ws send MESSAGE --channel C | --user U | --connection-id ID | --everyone``;
* ``flask apigw-ws job JOB_ID [--wait]`` — a durable send job's status (with a progress
  bar until it ends with ``--wait``);
* ``flask apigw-ws token USER [--channel C]`` — a connection token, for trying clients;
* ``flask apigw-ws local`` — the local API Gateway stand-in in front of ``flask run``;
* ``flask apigw-ws provision plan|apply|destroy`` — the AWS WebSocket API (the same
  arguments as ``apigw-ws provision``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any

import click
from flask import current_app
from flask.cli import AppGroup, ScriptInfo

from apigw_ws_core.errors import ApigwWsError
from apigw_ws_core.fanout import check_size
from apigw_ws_core.jobs import JobStatus, describe, follow, job_status
from apigw_ws_core.reply import encode_payload
from apigw_ws_core.send_cli import CliError, cli_error_message, parse_message, summary
from apigw_ws_flask.extension import EXTENSION_KEY, ApigwWsState

__all__ = ["cli_group"]

cli_group = AppGroup("apigw-ws", help="API Gateway WebSockets: cleanup, send, local, provision.")


def _state() -> ApigwWsState:
    state: ApigwWsState | None = current_app.extensions.get(EXTENSION_KEY)
    if state is None:
        raise click.ClickException(
            f"the app {current_app.name!r} has no ApigwWebSocket: create it with "
            "ApigwWebSocket(app, storage=...) or call init_app(app)"
        )
    return state


@cli_group.command("cleanup")
@click.option("--dry-run", is_flag=True, help="Change nothing; report what would change.")
@click.option(
    "--no-heal",
    is_flag=True,
    help="Do not ask API Gateway (only age past the 2-hour maximum decides).",
)
@click.option(
    "--keep-disconnected",
    default=86400,
    show_default=True,
    help="Delete disconnected sessions older than this many seconds.",
)
@click.option(
    "--deadline",
    type=float,
    default=None,
    help="Bound the healing run in seconds (default: APIGW_WS_HEAL_DEADLINE, 600).",
)
def cleanup_command(
    dry_run: bool, no_heal: bool, keep_disconnected: int, deadline: float | None
) -> None:
    """Heal sessions whose $disconnect was lost (asking API Gateway), remove expired rows."""
    core = _state().core
    try:
        result = core.cleanup(
            dry_run=dry_run,
            heal=not no_heal,
            keep_disconnected=keep_disconnected,
            deadline=deadline,
        )
    except ApigwWsError as exc:
        raise click.ClickException(f"{exc} (use --no-heal to skip asking API Gateway)") from exc
    click.echo(("Dry run: " if result.dry_run else "") + result.summary())
    if result.heal is not None and result.heal.unknown:
        click.echo(
            f"{len(result.heal.unknown)} session(s) could not be checked "
            f"({result.heal.first_error}); the next run asks again.",
            err=True,
        )


@cli_group.command("job")
@click.argument("job_id")
@click.option("--wait", is_flag=True, help="Show a progress bar until the job ends.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def job_command(job_id: str, wait: bool, as_json: bool) -> None:
    """Status of a durable send job (running/done/failed, counts, first error)."""
    storage = _state().core.storage
    status = job_status(storage, job_id)
    if status is None:
        raise click.ClickException(f"no send job {job_id!r} (unknown, or cleaned up)")
    if wait and not status.finished:
        total = max(1, status.expected or status.counts.recipients)
        with click.progressbar(length=total, label=f"job {job_id}", file=sys.stderr) as bar:
            shown = 0

            def update(current: JobStatus) -> None:
                nonlocal shown
                if current.expected and current.expected != bar.length:
                    bar.length = current.expected
                done = min(current.handled, bar.length or current.handled)
                bar.update(done - shown)
                shown = done

            status = follow(storage, job_id, update, poll=0.2) or status
    if as_json:
        click.echo(json.dumps(status.as_dict()))
    else:
        click.echo(describe(status))
    if status.status == "failed":
        sys.exit(1)


@cli_group.command("send")
@click.argument("message")
@click.option("--channel", help="Every connection in this channel.")
@click.option("--user", "user_id", help="Every connection of this user id.")
@click.option("--connection-id", help="One connection.")
@click.option("--everyone", is_flag=True, help="Every connected session.")
@click.option("--text", is_flag=True, help="Send MESSAGE as text instead of parsing it as JSON.")
def send_command(
    message: str,
    channel: str | None,
    user_id: str | None,
    connection_id: str | None,
    everyone: bool,
    text: bool,
) -> None:
    """Send MESSAGE (JSON unless --text) with a progress bar and a summary.

    With no management endpoint configured, the running local gateway is found by itself
    (``flask apigw-ws local`` in another terminal); errors are one line, never a traceback.
    """
    try:
        core = _state().core
        data: Any = parse_message(message, text)
        target: dict[str, Any] = {
            "connection_id": connection_id,
            "channel": channel,
            "user_id": user_id,
            "everyone": everyone,
        }
        check_size(encode_payload(data))
        batches = list(core.recipients(**target))
        core.transport  # noqa: B018 - find the endpoint (or fail) before drawing progress
        total = sum(len(batch) for batch in batches)
        lock = threading.Lock()
        with click.progressbar(length=total, label="Sending", file=sys.stderr) as bar:

            def advance(done: int) -> None:
                with lock:
                    bar.update(done)

            report = core.send(data, progress=advance, **target)
    except click.ClickException:
        raise
    except Exception as exc:
        if isinstance(exc, CliError | ValueError) and getattr(exc, "code", 2) == 2:
            raise click.UsageError(cli_error_message(exc)) from exc
        raise click.ClickException(cli_error_message(exc)) from exc
    click.echo(summary(report, total))
    if not report.ok:
        raise click.ClickException(f"{len(report.failed)} delivery(ies) failed")


@cli_group.command("token")
@click.argument("user")
@click.option("--channel", help="Bind the token to this channel.")
def token_command(user: str, channel: str | None) -> None:
    """Print a single-use connection token for USER (for trying a client without a login)."""
    try:
        token, _expires_in = _state().core.issue_token(user, channel=channel)
    except click.ClickException:
        raise
    except Exception as exc:
        raise click.ClickException(cli_error_message(exc)) from exc
    click.echo(token)


def _local_commands(
    *,
    app_import_path: str | None,
    host: str,
    app_port: int,
    port: int,
    prefix: str,
    secret: str,
    extra: Sequence[str],
) -> tuple[list[str], list[str]]:
    flask_cmd = [sys.executable, "-m", "flask"]
    if app_import_path:
        flask_cmd += ["--app", app_import_path]
    flask_cmd += ["run", "--host", host, "--port", str(app_port)]
    gateway_cmd = [
        sys.executable,
        "-m",
        "apigw_ws_core.local",
        "--backend",
        f"http://{host}:{app_port}{prefix}/",
        "--secret",
        secret,
        "--host",
        host,
        "--port",
        str(port),
        *extra,
    ]
    return flask_cmd, gateway_cmd


def _stop_on_sigterm() -> Any:
    """Make SIGTERM stop ``flask apigw-ws local`` like Ctrl-C does (its children, ``flask
    run`` and the gateway, are then stopped and their ports freed); returns the previous
    handler."""

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, stop)


@cli_group.command(
    "local", context_settings={"ignore_unknown_options": True, "allow_extra_args": True}
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address for both servers.")
@click.option("--port", default=8001, show_default=True, help="Gateway port (WebSocket + API).")
@click.option("--app-port", default=5000, show_default=True, help="Port of `flask run`.")
@click.option("--stage", default="local", show_default=True, help="Gateway stage name.")
@click.argument("gateway_args", nargs=-1, type=click.UNPROCESSED)
def local_command(
    host: str, port: int, app_port: int, stage: str, gateway_args: tuple[str, ...]
) -> None:
    """Run `flask run` and the local API Gateway in front of it (Ctrl-C stops both).

    Extra arguments go to the gateway (see `apigw-ws local --help`). The Flask process gets
    FLASK_APIGW_WS_MANAGEMENT_ENDPOINT (read it with app.config.from_prefixed_env()) and
    dummy AWS credentials when none are set.
    """
    state = _state()
    secret = state.core.config.secret
    if not secret:
        raise click.ClickException("set APIGW_WS_SECRET (any value will do locally)")
    info = click.get_current_context().find_object(ScriptInfo)
    flask_cmd, gateway_cmd = _local_commands(
        app_import_path=info.app_import_path if info else None,
        host=host,
        app_port=app_port,
        port=port,
        prefix=state.url_prefix,
        secret=secret,
        extra=[*gateway_args, "--stage", stage],
    )
    env = dict(os.environ)
    env["FLASK_APIGW_WS_MANAGEMENT_ENDPOINT"] = f"http://{host}:{port}/{stage}"
    env.setdefault("AWS_ACCESS_KEY_ID", "local")
    env.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    click.echo(f"flask:   http://{host}:{app_port}/   gateway: ws://{host}:{port}/{stage}")
    previous = _stop_on_sigterm()
    procs = [subprocess.Popen(flask_cmd, env=env), subprocess.Popen(gateway_cmd, env=env)]
    try:
        while all(p.poll() is None for p in procs):
            try:
                procs[0].wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                continue
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        for proc in procs:
            if proc.poll() is None:
                # SIGTERM, not SIGINT: a shell's background job ignores SIGINT (and so do
                # its children); both servers stop cleanly on SIGTERM.
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    codes = [p.returncode for p in procs]
    if any(code not in (0, -signal.SIGINT, -signal.SIGTERM, 130) for code in codes):
        raise SystemExit(1)


@cli_group.command(
    "provision",
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def provision_command(args: tuple[str, ...]) -> None:
    """Plan, apply or destroy the AWS WebSocket API (same arguments as `apigw-ws provision`)."""
    try:
        module = importlib.import_module("apigw_ws_core.provision_cli")
    except ImportError as exc:
        raise click.ClickException(
            f"provisioning is not available here ({exc}); install apigw-ws[aws]"
        ) from exc
    parser = argparse.ArgumentParser(prog="flask apigw-ws provision")
    module.add_provision_arguments(parser)
    namespace = parser.parse_args(list(args))
    core = _state().core
    code = module.run_provision(
        namespace,
        store=core.storage,
        app_secret=core.config.secret,
        gateway_name=core.config.gateway_name,
    )
    raise SystemExit(int(code or 0))
