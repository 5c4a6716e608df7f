"""The ``apigw-ws`` console script.

Subcommands are thin: each lives with the code it drives and is imported only when used,
so ``apigw-ws --help`` works without the optional extras installed.

* ``apigw-ws local``      the local API Gateway (needs ``apigw-ws[local]``);
* ``apigw-ws send``       send a message through your app (``--app MODULE[:NAME]``);
* ``apigw-ws token``      print a connection token for a user, for trying clients;
* ``apigw-ws provision``  plan / apply / destroy the AWS WebSocket API;
* ``apigw-ws iam-policy`` print least-privilege IAM policies.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

__all__ = ["build_parser", "main"]

#: subcommand -> (module, add-arguments function, run function, help)
SUBCOMMANDS: dict[str, tuple[str, str, str, str]] = {
    "local": (
        "apigw_ws_core.local.cli",
        "add_arguments",
        "run",
        "run the local API Gateway WebSocket stand-in",
    ),
    "send": (
        "apigw_ws_core.send_cli",
        "add_arguments",
        "run",
        "send a message through a WebSocketApp (--app MODULE[:NAME])",
    ),
    "token": (
        "apigw_ws_core.send_cli",
        "add_token_arguments",
        "run_token",
        "print a single-use connection token for a user (--app MODULE[:NAME])",
    ),
    "provision": (
        "apigw_ws_core.provision_cli",
        "add_provision_arguments",
        "run_provision",
        "plan, apply or destroy the AWS WebSocket API",
    ),
    "iam-policy": (
        "apigw_ws_core.provision_cli",
        "add_iam_arguments",
        "run_iam_policy",
        "print least-privilege IAM policies",
    ),
}


def _load(module: str, name: str) -> Callable[..., object]:
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise SystemExit(
            f"apigw-ws: this command needs an optional dependency ({exc.name}); "
            "install apigw-ws[all]"
        ) from exc
    func: Callable[..., object] = getattr(mod, name)
    return func


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The top-level parser; only the chosen subcommand's module is imported."""
    parser = argparse.ArgumentParser(
        prog="apigw-ws", description="WebSockets through AWS API Gateway for Python web apps."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in (argv or []) if not a.startswith("-")), None)
    for name, (module, add, run, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            _load(module, add)(p)
            p.set_defaults(_run=(module, run))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``apigw-ws`` console script."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list)
    args = parser.parse_args(args_list)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    module, run = args._run
    result = _load(module, run)(args)
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
