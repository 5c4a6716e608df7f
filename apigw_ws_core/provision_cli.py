"""Command-line front ends of provisioning: ``apigw-ws provision`` and ``apigw-ws iam-policy``.

``apigw-ws provision export`` writes the same gateway as infrastructure code (CloudFormation,
SAM or Terraform JSON; :mod:`apigw_ws_core.provision.export`) instead of changing AWS.

:func:`run_action` is the framework-neutral core every front end calls (this console script,
``manage.py apigw_ws_provision``, ``flask apigw-ws provision``, the Django admin actions): it
plans, shows the diff, asks for confirmation, applies or destroys with step-by-step progress,
and returns an exit status. Only the gateway record store differs: a JSON state file here, the
app's database in the Django and Flask commands.

Exit status: 0 success (with ``--detailed-exitcode``, ``plan`` returns 2 when there are
changes), 1 failure (the message says which step failed; apply again to resume).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from apigw_ws_core.errors import ApigwWsError
from apigw_ws_core.provision import (
    ApplyResult,
    AwsClients,
    FileGatewayStore,
    GatewaySpec,
    GatewayStore,
    ProgressEvent,
    ProvisionError,
    apply,
    deploy_policy,
    destroy,
    load_config,
    plan,
    render_changes,
    runtime_policy,
)
from apigw_ws_core.provision.export import (
    FORMATS,
    export_template,
    parse_secret_source,
    render_template,
)

__all__ = [
    "ACTIONS",
    "DEFAULT_CONFIG",
    "EXPORT",
    "ProgressPrinter",
    "add_iam_arguments",
    "add_provision_arguments",
    "run_action",
    "run_export",
    "run_iam_policy",
    "run_provision",
]

ACTIONS = ("plan", "apply", "destroy")
#: The action writing infrastructure code instead of talking to AWS.
EXPORT = "export"
DEFAULT_CONFIG = "apigw-ws.toml"
#: Name of the state file next to the config when the config names none.
DEFAULT_STATE_FILE = ".apigw-ws-state.json"

Confirm = Callable[[str], bool]

_SIGNS = {"create": "+", "update": "~", "delete": "-", "noop": " "}


class ProgressPrinter:
    """Prints ``apply``/``destroy`` progress, one line per step.

    ``[ 3/15] + integration $default ... created abc123``; waits and failures get their own
    indented lines so a long certificate wait is visible while it happens.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._open = False

    def __call__(self, event: ProgressEvent) -> None:
        """Print one progress event."""
        width = len(str(event.total))
        head = (
            f"[{event.index:>{width}}/{event.total}] "
            f"{_SIGNS[event.change.action]} {event.change.label}"
        )
        if event.phase == "start":
            self.out.write(f"{head} ...")
            self._open = True
        elif event.phase == "info":
            self._close()
            self.out.write(f"      {event.message}\n")
        elif event.phase == "done":
            if self._open:
                self.out.write(f" {event.message}\n")
            else:
                self.out.write(f"{head} ... {event.message}\n")
            self._open = False
        else:
            if self._open:
                self.out.write(f" FAILED: {event.message}\n")
            else:
                self.out.write(f"{head} ... FAILED: {event.message}\n")
            self._open = False
        self.out.flush()

    def _close(self) -> None:
        if self._open:
            self.out.write("\n")
            self._open = False


def _tty_confirm(prompt: str) -> bool:
    if not sys.stdin.isatty():
        return False
    try:
        answer = input(prompt)
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def _report(result: ApplyResult, out: TextIO, err: TextIO, destroyed: bool) -> int:
    record = result.record
    if destroyed:
        out.write(f"Gateway {record.name!r} destroyed.\n")
    else:
        out.write(f"Gateway {record.name!r} is {record.status}.\n")
        if record.api_endpoint:
            out.write(f"  WebSocket URL:       {record.api_endpoint}\n")
            out.write(f"  Management endpoint: {record.management_endpoint}\n")
        if record.custom_domain:
            out.write(f"  Custom domain:       wss://{record.custom_domain}/\n")
    if result.drift:
        what = "could not be removed" if destroyed else "still differs from the spec"
        err.write(f"warning: read back from AWS, this {what}:\n")
        err.write(render_changes(result.drift) + "\n")
        return 1
    return 0


def run_action(
    action: str,
    spec: GatewaySpec,
    *,
    store: GatewayStore | None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    assume_yes: bool = False,
    confirm: Confirm | None = None,
    aws: AwsClients | None = None,
    session: Any = None,
    show_unchanged: bool = False,
    detailed_exitcode: bool = False,
) -> int:
    """Plan, apply or destroy ``spec``, printing the diff and progress; returns an exit status.

    ``apply`` and ``destroy`` show the plan first and go ahead only with ``assume_yes`` or
    when ``confirm(prompt)`` (default: ask on the terminal) says yes. ``store`` keeps the
    gateway record (``None``: no record, AWS is still searched by tag).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    if action not in ACTIONS:
        err.write(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}\n")
        return 1
    try:
        if action == "destroy":
            changes = destroy(spec, storage=store, aws=aws, session=session, dry_run=True).changes
        else:
            changes = plan(spec, storage=store, aws=aws, session=session)
        out.write(render_changes(changes, show_noop=show_unchanged) + "\n")
        pending = [c for c in changes if c.action != "noop"]
        record = store.get_gateway(spec.name) if store is not None else None
        unchanged = (
            record is not None and record.status == "ready" and record.spec_hash == spec.spec_hash()
        )
        if action != "destroy" and unchanged and pending:
            err.write(
                "note: the config has not changed since the last apply, so these differences "
                "were made outside apigw-ws (drift); apply puts them back\n"
            )
        if action == "plan":
            return 2 if detailed_exitcode and pending else 0
        if not pending and action == "destroy":
            out.write("Nothing to destroy.\n")
            return 0
        if pending and not assume_yes:
            verb = "Apply" if action == "apply" else "Destroy"
            if not (confirm or _tty_confirm)(f"{verb} these changes? [y/N] "):
                err.write(f"{action} cancelled (pass --yes to skip this question)\n")
                return 1
        printer = ProgressPrinter(out)
        if action == "apply":
            result = apply(spec, storage=store, aws=aws, session=session, progress=printer)
        else:
            result = destroy(spec, storage=store, aws=aws, session=session, progress=printer)
        return _report(result, out, err, destroyed=action == "destroy")
    except ApigwWsError as exc:
        err.write(f"error: {exc}\n")
        return 1


# --- apigw-ws provision ------------------------------------------------------------------


def _add_aws_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--region", help="AWS region (default: the config's, then AWS_REGION)")
    parser.add_argument("--profile", help="AWS named profile to use")


def add_provision_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``apigw-ws provision``."""
    parser.add_argument(
        "action",
        choices=(*ACTIONS, EXPORT),
        help="what to do (export: write CloudFormation, SAM or Terraform instead of applying)",
    )
    parser.add_argument(
        "--config",
        "-c",
        default=DEFAULT_CONFIG,
        help=f"TOML config file (default: {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--state",
        help="JSON file keeping the gateway record (default: the config's state_file, "
        f"else {DEFAULT_STATE_FILE} next to the config)",
    )
    _add_aws_arguments(parser)
    parser.add_argument(
        "--yes", "-y", action="store_true", help="apply/destroy without asking for confirmation"
    )
    parser.add_argument(
        "--show-unchanged", action="store_true", help="also list resources that stay as they are"
    )
    parser.add_argument(
        "--detailed-exitcode",
        action="store_true",
        help="plan exits with 2 when there are changes (0 when none)",
    )
    export = parser.add_argument_group("export")
    export.add_argument(
        "--format",
        choices=FORMATS,
        default="cloudformation",
        help="export: the infrastructure-code format (default: %(default)s)",
    )
    export.add_argument(
        "--yaml",
        action="store_true",
        help="export: YAML instead of JSON (CloudFormation and SAM; also chosen by an "
        "--output ending in .yaml or .yml)",
    )
    export.add_argument(
        "--output", "-o", metavar="FILE", help="export: write to FILE (default: standard output)"
    )
    export.add_argument(
        "--alarms",
        action="store_true",
        help="export: add CloudWatch alarms (failed-call rate, execution errors, p99 latency) "
        "notifying the SNS topic given at deploy time",
    )
    export.add_argument(
        "--secret-from",
        default="parameter",
        metavar="SOURCE",
        help="export: where the deployed gateway takes the shared secret from: 'parameter' "
        "(a NoEcho template parameter / sensitive Terraform variable; the default) or "
        "'secretsmanager:SECRET_ID[#JSON_KEY]'",
    )


def _state_path(args: argparse.Namespace, config_path: Path, configured: Path | None) -> Path:
    if getattr(args, "state", None):
        return Path(args.state)
    return configured or config_path.parent / DEFAULT_STATE_FILE


def _clients(args: argparse.Namespace, spec: GatewaySpec | None) -> AwsClients:
    region = getattr(args, "region", None) or (spec.region if spec else None)
    return AwsClients.create(region=region, profile=getattr(args, "profile", None))


def run_provision(
    args: argparse.Namespace,
    *,
    store: GatewayStore | None = None,
    app_secret: str | None = None,
    gateway_name: str | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run ``apigw-ws provision plan|apply|destroy|export`` (``args`` from
    :func:`add_provision_arguments`; ``export`` goes to :func:`run_export`).

    Framework commands (``manage.py apigw_ws_provision``, ``flask apigw-ws provision``)
    pass the app's ``store`` (its :class:`~apigw_ws_core.storage.Storage`: the gateway record
    then lives in the app's database, where the app finds its Management API endpoint), its
    ``app_secret`` (used when the config gives none; a different one is refused) and the
    ``gateway_name`` the app reads (a config with another name gets a warning). Without
    ``store`` the record goes to the JSON state file. ``out``/``err`` default to the
    process's standard streams.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    if args.action == EXPORT:
        return run_export(args, out=out, err=err)
    try:
        config = load_config(args.config, app_secret=app_secret)
        spec = config.spec
        if args.region and spec.region and args.region != spec.region:
            err.write(
                f"error: --region {args.region} contradicts region = {spec.region!r} in "
                f"{args.config}\n"
            )
            return 1
        if gateway_name is not None and gateway_name != spec.name:
            err.write(
                f"warning: the app reads the gateway record {gateway_name!r} but this config "
                f"provisions {spec.name!r}; set the app's gateway_name to {spec.name!r} (or "
                "its management_endpoint) so that it finds the endpoint\n"
            )
        if store is None or getattr(args, "state", None):
            store = FileGatewayStore(_state_path(args, Path(args.config), config.state_file))
        aws = _clients(args, spec)
    except ApigwWsError as exc:
        err.write(f"error: {exc}\n")
        return 1
    return run_action(
        args.action,
        spec,
        store=store,
        aws=aws,
        assume_yes=args.yes,
        show_unchanged=args.show_unchanged,
        detailed_exitcode=args.detailed_exitcode,
        out=out,
        err=err,
    )


def run_export(
    args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run ``apigw-ws provision export``: write the config's gateway as infrastructure code.

    Reads the same config file as plan/apply but needs neither AWS credentials nor the
    secret (the output never contains it; ``--secret-from`` says where the deployed gateway
    takes it from).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    output = getattr(args, "output", None)
    syntax = "yaml" if args.yaml or str(output or "").endswith((".yaml", ".yml")) else "json"
    try:
        if syntax == "yaml" and args.format == "terraform":
            raise ProvisionError("Terraform is exported as JSON (write it to a *.tf.json file)")
        spec = load_config(args.config, need_secret=False).spec
        source = parse_secret_source(args.secret_from)
        template = export_template(
            spec, args.format, secret=source, alarms=bool(getattr(args, "alarms", False))
        )
        text = render_template(template, syntax)
    except ApigwWsError as exc:
        err.write(f"error: {exc}\n")
        return 1
    if output:
        Path(output).write_text(text, encoding="utf-8")
        err.write(f"wrote {args.format} ({syntax}) for gateway {spec.name!r} to {output}\n")
    else:
        out.write(text)
    return 0


# --- apigw-ws iam-policy -----------------------------------------------------------------


def add_iam_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``apigw-ws iam-policy``."""
    kind = parser.add_mutually_exclusive_group(required=True)
    kind.add_argument(
        "--runtime",
        action="store_true",
        help="policy for the app: execute-api:ManageConnections on the stage's @connections",
    )
    kind.add_argument(
        "--deploy", action="store_true", help="policy for whoever runs apigw-ws provision"
    )
    parser.add_argument(
        "--config",
        "-c",
        help=f"TOML config file (default: {DEFAULT_CONFIG} if it exists); with its state file "
        "the policy names the provisioned API id",
    )
    parser.add_argument("--state", help="JSON state file (default: as for provision)")
    _add_aws_arguments(parser)
    parser.add_argument("--account-id", help="AWS account id (default: ask STS)")
    parser.add_argument("--api-id", help="API id (default: from the state file, else *)")
    parser.add_argument("--stage", help="stage name (default: the config's, else *)")


def run_iam_policy(args: argparse.Namespace) -> int:
    """Run ``apigw-ws iam-policy --runtime|--deploy``: print the policy as JSON."""
    config_path = Path(args.config or DEFAULT_CONFIG)
    spec: GatewaySpec | None = None
    record = None
    api_id = args.api_id
    try:
        if args.config or config_path.exists():
            config = load_config(config_path, need_secret=False)
            spec = config.spec
            store = FileGatewayStore(_state_path(args, config_path, config.state_file))
            record = store.get_gateway(spec.name)
            if api_id is None and record is not None and record.status != "destroyed":
                api_id = record.api_id or None
        if args.deploy and spec is None:
            sys.stderr.write("error: --deploy needs --config (the policy depends on the spec)\n")
            return 1
        region = args.region or (spec.region if spec else None)
        account = args.account_id
        if account is None:
            try:
                aws = _clients(args, spec)
                account = aws.account_id()
                region = region or aws.region
            except Exception as exc:  # no credentials: say so, keep going with a wildcard
                sys.stderr.write(f"note: account id unknown ({exc}); using *\n")
                account = "*"
        if not region:
            sys.stderr.write("error: no region: pass --region or set it in the config\n")
            return 1
        if args.runtime:
            stage = args.stage or (spec.stage if spec else "*")
            policy = runtime_policy(region, account, api_id or "*", stage)
        else:
            assert spec is not None
            zone = record.resources.get("dns:zone") if record is not None else None
            policy = deploy_policy(spec, account, region=region, api_id=api_id, hosted_zone_id=zone)
    except (ApigwWsError, ProvisionError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    sys.stdout.write(json.dumps(policy, indent=2) + "\n")
    return 0
