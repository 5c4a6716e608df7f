"""Command line of the local gateway: ``apigw-ws local`` and ``python -m apigw_ws_core.local``.

:func:`add_arguments` declares the flags on any :class:`argparse.ArgumentParser`
(the ``apigw-ws`` console script mounts them as its ``local`` sub-command);
:func:`run` builds the configuration, serves until SIGINT/SIGTERM, and
returns the exit status. Once serving, exactly one line is printed to stdout::

    apigw-ws local ready ws=ws://127.0.0.1:PORT/STAGE management=http://127.0.0.1:PORT/STAGE
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any

import attrs

from ..discovery import register_local_gateway, unregister_local_gateway
from .config import (
    DEFAULT_STAGE,
    DEFAULT_TIMEOUT_MS,
    ApiConfig,
    Authorizer,
    ConfigError,
    GatewayOptions,
    config_from_apigw,
    config_from_backend,
    config_from_lambda,
    config_from_lambda_routes,
    load_config_file,
    parse_lambda_route,
    resolve_lambda_handler,
    sigv4_keys_from_file,
)
from .server import Gateway, start_gateway
from .sigv4 import parse_sigv4_keys
from .template import config_from_template, load_template, parse_parameters
from .tls import make_tls

__all__ = ["add_arguments", "build_api", "build_options", "main", "ready_line", "run"]

logger = logging.getLogger("apigw_ws_core.local")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the local gateway's flags on ``parser``."""
    source = parser.add_argument_group(
        "API definition",
        "Use at most one of --backend, --config, --from-apigw, --from-template (or --lambda "
        "alone). "
        "Without any, the API has no routes: connections are accepted and every "
        "message is answered 'Forbidden'.",
    )
    source.add_argument(
        "--backend",
        metavar="URL",
        help="HTTP_PROXY base URL: POST {URL}connect, {URL}disconnect, {URL}default, {URL}<route>",
    )
    source.add_argument(
        "--route",
        action="append",
        default=[],
        metavar="NAME",
        help="a custom route key (repeatable), with --backend or --lambda",
    )
    source.add_argument(
        "--secret",
        help="with --backend: static value of the X-Apigw-Ws-Secret header mapping",
    )
    source.add_argument(
        "--one-way",
        action="store_true",
        help="with --backend/--lambda: message routes do not send backend replies to the client",
    )
    source.add_argument(
        "--integration-timeout-ms",
        type=int,
        default=DEFAULT_TIMEOUT_MS,
        metavar="MS",
        help="with --backend/--lambda: integration timeout (default: %(default)s)",
    )
    source.add_argument("--config", metavar="FILE", help="a JSON or TOML API definition")
    source.add_argument(
        "--from-apigw",
        metavar="API_ID",
        help="read routes, integrations and stage variables from an apigatewayv2 API",
    )
    source.add_argument(
        "--from-template",
        metavar="FILE",
        help="read the API from a CloudFormation/SAM template (JSON or YAML), e.g. one "
        "written by 'apigw-ws provision export'",
    )
    source.add_argument(
        "--parameter",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="with --from-template: a template parameter value (repeatable), e.g. "
        "SharedSecret=... or TargetBaseUrl=http://127.0.0.1:8000/ws/",
    )
    source.add_argument(
        "--region",
        help="AWS region for --from-apigw; also the region in ARNs and the AWS_REGION "
        "in-process handlers get when unset (default: us-east-1)",
    )
    source.add_argument("--profile", help="AWS profile for --from-apigw")
    source.add_argument(
        "--aws-endpoint-url", metavar="URL", help="apigatewayv2 endpoint for --from-apigw"
    )
    source.add_argument(
        "--lambda",
        dest="lambda_handler",
        metavar="MODULE:FUNCTION",
        help="alone: every route calls this Python Lambda handler (AWS_PROXY); with "
        "--from-apigw/--config: the handler AWS_PROXY integrations call",
    )
    source.add_argument(
        "--lambda-route",
        action="append",
        default=[],
        metavar="ROUTE=MODULE:FUNCTION",
        help="one Lambda function per route (repeatable), as Chalice and SAM deploy: "
        "'$connect=app:connect'; only the routes given exist",
    )
    source.add_argument(
        "--two-way",
        action="append",
        default=[],
        metavar="ROUTE",
        help="with --lambda/--lambda-route: this message route sends the function's return "
        "value to the client (it has a route response); others are one-way, as on AWS",
    )
    source.add_argument(
        "--authorizer",
        metavar="MODULE:FUNCTION",
        help="a Lambda REQUEST authorizer run before $connect (with --backend, --lambda, "
        "--lambda-route; with --from-apigw/--from-template: the Python stand-in for the "
        "API's authorizer function)",
    )
    source.add_argument(
        "--identity-source",
        action="append",
        default=[],
        metavar="SOURCE",
        help="with --authorizer: route.request.header.NAME or route.request.querystring.NAME "
        "(repeatable); missing: 401 without calling the authorizer",
    )
    source.add_argument(
        "--authorizer-context-key",
        action="append",
        default=[],
        metavar="KEY",
        help="with --backend --authorizer: map context.authorizer.KEY to the "
        "X-Apigw-Ws-Authorizer-KEY header (the principal is always mapped)",
    )
    source.add_argument("--api-id", help="override the API id shown to the backend")

    server = parser.add_argument_group("gateway")
    server.add_argument("--host", default="127.0.0.1", help="listen address (default: %(default)s)")
    server.add_argument(
        "--port", type=int, default=8001, help="listen port, 0 picks one (default: %(default)s)"
    )
    server.add_argument(
        "--stage", default=None, help=f"stage name (default: {DEFAULT_STAGE}, or the API's)"
    )
    server.add_argument(
        "--tls",
        action="store_true",
        help="serve wss:// and https:// with a certificate from a locally generated CA "
        "(its file is printed; see the docs for trusting it)",
    )
    server.add_argument(
        "--tls-dir",
        metavar="DIR",
        help="where the local CA is kept (default: ~/.cache/apigw-ws/local-tls)",
    )
    server.add_argument(
        "--idle-timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="close idle connections with 1001 (default: %(default)s)",
    )
    server.add_argument(
        "--max-duration",
        type=float,
        default=7200.0,
        metavar="SECONDS",
        help="close any connection after this long with 1001 (default: %(default)s)",
    )
    server.add_argument(
        "--management-latency-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="delay added to each @connections call (default: %(default)s)",
    )
    server.add_argument(
        "--throttle-rps",
        type=float,
        default=None,
        metavar="RATE",
        help="token-bucket rate for @connections calls; excess gets 429 (default: off)",
    )
    server.add_argument(
        "--throttle-burst", type=int, default=None, metavar="N", help="token-bucket size"
    )
    server.add_argument(
        "--inject-429-every",
        type=int,
        default=0,
        metavar="N",
        help="fault injection: answer every N-th POST @connections with 429 (default: off)",
    )
    server.add_argument(
        "--inject-5xx-every",
        type=int,
        default=0,
        metavar="N",
        help="fault injection: deliver every N-th POST @connections, then answer it 500 "
        "(a retrying sender delivers it twice; default: off)",
    )
    server.add_argument(
        "--inject-hang-every",
        type=int,
        default=0,
        metavar="N",
        help="fault injection: deliver every N-th POST @connections, then never answer "
        "(default: off)",
    )
    server.add_argument(
        "--drop-disconnect-every",
        type=int,
        default=0,
        metavar="N",
        help="fault injection: skip every N-th $disconnect call (1: all; default: off)",
    )
    server.add_argument(
        "--write-buffer-limit",
        type=int,
        default=1 << 20,
        metavar="BYTES",
        help="POST @connections answers 429 while this much is queued to the client "
        "(default: %(default)s)",
    )
    server.add_argument(
        "--special-char-ids",
        action="store_true",
        help="hand out only connection ids containing '+' and '/'",
    )
    server.add_argument(
        "--message-log-size",
        type=int,
        default=100,
        metavar="N",
        help="messages kept per connection for /_local/ inspection (default: %(default)s)",
    )
    server.add_argument(
        "--no-sigv4-check",
        action="store_true",
        help="accept @connections calls without a SigV4 Authorization header",
    )
    server.add_argument(
        "--sigv4-key",
        action="append",
        default=[],
        metavar="ACCESS_KEY_ID:SECRET_ACCESS_KEY",
        help="strict SigV4: recompute each @connections call's signature and answer 403 "
        "unless it was signed with one of these keys (repeatable or comma-separated; "
        "default: any well-formed SigV4 header is accepted)",
    )
    server.add_argument(
        "--no-local-endpoints",
        action="store_true",
        help="do not serve the /_local/ inspection endpoints and test hooks",
    )
    server.add_argument("--access-log", action="store_true", help="log every HTTP request")
    server.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        help="(default: %(default)s)",
    )


def _apigw_client(args: argparse.Namespace) -> Any:
    """Build the boto3 ``apigatewayv2`` client for ``--from-apigw``."""
    import boto3

    session = boto3.Session(profile_name=args.profile, region_name=args.region)
    return session.client("apigatewayv2", endpoint_url=args.aws_endpoint_url)


def build_api(args: argparse.Namespace) -> ApiConfig:
    """Turn the parsed flags into an :class:`ApiConfig`.

    :raises ConfigError: on contradictory or invalid flags.
    """
    sources = [
        name
        for name in ("backend", "config", "from_apigw", "from_template")
        if getattr(args, name, None) is not None
    ]
    if len(sources) > 1:
        flags = ", ".join("--" + s.replace("_", "-") for s in sources)
        raise ConfigError(
            f"use only one of --backend, --config, --from-apigw, --from-template (got {flags})"
        )
    if getattr(args, "parameter", None) and getattr(args, "from_template", None) is None:
        raise ConfigError("--parameter only applies to --from-template")
    if args.route and sources and sources[0] != "backend":
        raise ConfigError("--route only applies to --backend or --lambda")
    lambda_routes = dict(parse_lambda_route(v) for v in args.lambda_route)
    if lambda_routes and (sources or args.lambda_handler or args.route):
        raise ConfigError("--lambda-route cannot be combined with other API definitions")
    if args.two_way and not (args.lambda_handler or lambda_routes):
        raise ConfigError("--two-way only applies to --lambda or --lambda-route")
    if args.identity_source and not args.authorizer:
        raise ConfigError("--identity-source needs --authorizer")
    if args.authorizer_context_key and args.backend is None:
        raise ConfigError("--authorizer-context-key only applies to --backend")
    authorizer = None
    if args.authorizer and args.from_apigw is None and getattr(args, "from_template", None) is None:
        authorizer = Authorizer(uri=args.authorizer, identity_sources=args.identity_source)
        if args.config is not None:
            raise ConfigError("with --config, declare the authorizer in the file")
    if args.secret is not None and args.backend is None:
        raise ConfigError("--secret only applies to --backend")
    stage = args.stage or DEFAULT_STAGE
    api: ApiConfig
    if args.backend is not None:
        api = config_from_backend(
            args.backend,
            routes=args.route,
            secret=args.secret,
            two_way=not args.one_way,
            timeout_ms=args.integration_timeout_ms,
            stage=stage,
            authorizer=authorizer,
            authorizer_context_keys=args.authorizer_context_key,
        )
    elif lambda_routes:
        api = config_from_lambda_routes(
            lambda_routes,
            two_way_routes=args.two_way,
            timeout_ms=args.integration_timeout_ms,
            stage=stage,
            authorizer=authorizer,
        )
    elif args.config is not None:
        api = load_config_file(args.config)
        if args.stage:
            api = api.replace(stage=args.stage)
        if args.lambda_handler:
            handler = resolve_lambda_handler(args.lambda_handler)
            api = api.replace(
                routes=[
                    attrs.evolve(r, integration=attrs.evolve(r.integration, handler=handler))
                    if r.integration.type == "AWS_PROXY"
                    else r
                    for r in api.routes.values()
                ]
            )
    elif getattr(args, "from_template", None) is not None:
        bound = resolve_lambda_handler(args.lambda_handler) if args.lambda_handler else None
        api = config_from_template(
            load_template(args.from_template),
            parse_parameters(args.parameter),
            stage=args.stage,
            lambda_handler=bound,
            authorizer_handler=resolve_lambda_handler(args.authorizer) if args.authorizer else None,
        )
    elif args.from_apigw is not None:
        bound = resolve_lambda_handler(args.lambda_handler) if args.lambda_handler else None
        auth = resolve_lambda_handler(args.authorizer) if args.authorizer else None
        try:
            api = config_from_apigw(
                _apigw_client(args),
                args.from_apigw,
                args.stage,
                lambda_handler=bound,
                authorizer_handler=auth,
            )
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"cannot read API {args.from_apigw}: {exc}") from exc
    elif args.lambda_handler:
        api = config_from_lambda(
            args.lambda_handler,
            routes=args.route,
            two_way_routes=args.two_way,
            timeout_ms=args.integration_timeout_ms,
            stage=stage,
            authorizer=authorizer,
        )
    else:
        if args.route:
            raise ConfigError("--route only applies to --backend or --lambda")
        api = ApiConfig(stage=stage)
    if (
        authorizer is not None
        and args.backend is None
        and not lambda_routes
        and not args.lambda_handler
    ):
        raise ConfigError("--authorizer needs a $connect route (--backend, --lambda, ...)")
    if args.api_id:
        api = api.replace(api_id=args.api_id)
    if getattr(args, "region", None):
        api = api.replace(region=args.region)
    return api


def build_options(args: argparse.Namespace) -> GatewayOptions:
    """Turn the parsed flags into :class:`GatewayOptions`.

    Strict SigV4 keys come from ``--config``'s ``sigv4_keys`` entry and the
    ``--sigv4-key`` flags (which win for the same access key id).

    :raises ConfigError: on invalid values.
    """
    sigv4_keys: dict[str, str] = {}
    if getattr(args, "config", None) is not None:
        sigv4_keys.update(sigv4_keys_from_file(args.config))
    try:
        sigv4_keys.update(parse_sigv4_keys(getattr(args, "sigv4_key", None) or []))
    except ValueError as exc:
        raise ConfigError(f"--sigv4-key: {exc}") from exc
    return GatewayOptions(
        idle_timeout=args.idle_timeout,
        max_duration=args.max_duration,
        management_latency_ms=args.management_latency_ms,
        throttle_rps=args.throttle_rps,
        throttle_burst=args.throttle_burst,
        write_buffer_high_water=args.write_buffer_limit,
        inject_429_every=args.inject_429_every,
        inject_5xx_every=args.inject_5xx_every,
        inject_hang_every=args.inject_hang_every,
        drop_disconnect_every=args.drop_disconnect_every,
        special_char_ids=args.special_char_ids,
        message_log_size=args.message_log_size,
        require_sigv4=not args.no_sigv4_check,
        sigv4_keys=sigv4_keys,
        local_endpoints=not args.no_local_endpoints,
    )


def ready_line(host: str, port: int, stage: str, ca_file: str | None = None) -> str:
    """The line printed once the gateway serves (``wss``/``https`` and ``ca=`` with TLS)."""
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - only formatting a URL
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    ws, http = ("wss", "https") if ca_file else ("ws", "http")
    line = (
        f"apigw-ws local ready ws={ws}://{host}:{port}/{stage} "
        f"management={http}://{host}:{port}/{stage}"
    )
    return f"{line} ca={ca_file}" if ca_file else line


def _raise_nofile_limit() -> None:
    """Raise the soft open-files limit to the hard limit (many connections need many fds)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):  # pragma: no cover - platform specific
        pass


async def _serve(api: ApiConfig, options: GatewayOptions, args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM, then close every connection gracefully."""
    tls = make_tls(args.tls_dir, [args.host]) if args.tls else None
    gateway = Gateway(api, options, ca_bundle=str(tls.bundle_file) if tls else None)
    runner, port = await start_gateway(
        gateway,
        args.host,
        args.port,
        access_log=args.access_log,
        ssl_context=tls.context if tls else None,
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    routes = ", ".join(sorted(api.routes)) or "(none)"
    logger.info("api %s stage %s routes: %s", api.api_id, api.stage, routes)
    if tls is not None:
        logger.info(
            "TLS: trust %s (CA only: browsers, NODE_EXTRA_CA_CERTS) or %s "
            "(CA + the usual roots: AWS_CA_BUNDLE, REQUESTS_CA_BUNDLE)",
            tls.ca_file,
            tls.bundle_file,
        )
    # Let senders in other terminals find this gateway (apigw_ws_core.discovery).
    discovery = register_local_gateway(
        host=args.host,
        port=port,
        stage=api.stage,
        secret=getattr(args, "secret", None),
        backend=getattr(args, "backend", None)
        or (f"lambda:{args.lambda_handler}" if getattr(args, "lambda_handler", None) else None),
        tls=tls is not None,
        ca_bundle=str(tls.bundle_file) if tls is not None else None,
    )
    print(ready_line(args.host, port, api.stage, str(tls.ca_file) if tls else None), flush=True)
    try:
        await stop.wait()
    finally:
        unregister_local_gateway(discovery)
        logger.info("shutting down: closing %d connections", len(gateway.connections))
        await runner.cleanup()
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the gateway from parsed flags; return the process exit status."""
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        api = build_api(args)
        options = build_options(args)
    except ConfigError as exc:
        print(f"apigw-ws local: {exc}", file=sys.stderr)
        return 2
    _raise_nofile_limit()
    try:
        return asyncio.run(_serve(api, options, args))
    except OSError as exc:
        print(f"apigw-ws local: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # pragma: no cover - signal handler normally catches it
        return 0


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run (entry point of ``python -m apigw_ws_core.local``)."""
    parser = argparse.ArgumentParser(
        prog="python -m apigw_ws_core.local",
        description="A local stand-in for an AWS API Gateway WebSocket API.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
