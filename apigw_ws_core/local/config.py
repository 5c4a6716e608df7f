"""Configuration of the local gateway.

Two kinds of settings live here:

* :class:`ApiConfig` describes the API as AWS would hold it: the API id, the
  route selection expression, the routes with their integrations and request
  parameter mappings, the stage name and its stage variables. It can be built
  from a backend URL (:func:`config_from_backend`), a JSON/TOML file
  (:func:`load_config_file`), a plain mapping (:func:`config_from_dict`), a
  Python Lambda handler (:func:`config_from_lambda`) or read from a real or
  moto-mocked ``apigatewayv2`` API (:func:`config_from_apigw`).
* :class:`GatewayOptions` holds the knobs of the local stand-in itself
  (timeouts, throttling, limits, test conveniences) that have no AWS
  counterpart in the API definition.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import sys
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast
from urllib.parse import quote

import attrs

from apigw_ws_core.events import authorizer_request_parameters

from .sigv4 import parse_sigv4_keys

__all__ = [
    "CONNECT",
    "DEFAULT",
    "DEFAULT_API_ID",
    "DEFAULT_REQUEST_PARAMETERS",
    "DEFAULT_ROUTE_SELECTION_EXPRESSION",
    "DEFAULT_STAGE",
    "DEFAULT_TIMEOUT_MS",
    "DISCONNECT",
    "ApiConfig",
    "Authorizer",
    "ConfigError",
    "GatewayOptions",
    "Integration",
    "IntegrationType",
    "LambdaHandler",
    "Route",
    "config_from_apigw",
    "config_from_backend",
    "config_from_dict",
    "config_from_lambda",
    "config_from_lambda_routes",
    "default_request_parameters",
    "load_config_file",
    "resolve_lambda_handler",
    "sigv4_keys_from_file",
]

logger = logging.getLogger("apigw_ws_core.local")

CONNECT = "$connect"
DISCONNECT = "$disconnect"
DEFAULT = "$default"

#: API id used when none is configured (AWS ids are 10 lowercase alphanumerics).
DEFAULT_API_ID = "apigwlocal"
#: Stage used when none is configured.
DEFAULT_STAGE = "local"
#: AWS's default route selection expression for WebSocket APIs.
DEFAULT_ROUTE_SELECTION_EXPRESSION = "$request.body.action"
#: AWS's default (and maximum) integration timeout for WebSocket APIs.
DEFAULT_TIMEOUT_MS = 29_000
#: Region in ARNs, ``AWS_REGION`` for in-process handlers (when unset) and the like.
DEFAULT_REGION = "us-east-1"

IntegrationType = Literal["HTTP_PROXY", "AWS_PROXY"]

#: A Lambda-style handler: ``handler(event, context) -> response``.
LambdaHandler = Callable[[dict[str, Any], Any], Any]

#: The request parameter mappings of the apigw-ws wire contract (DESIGN.md),
#: minus the secret header, which :func:`default_request_parameters` adds.
DEFAULT_REQUEST_PARAMETERS: Mapping[str, str] = MappingProxyType(
    {
        "integration.request.header.X-Apigw-Ws-Connection-Id": "context.connectionId",
        "integration.request.header.X-Apigw-Ws-Route-Key": "context.routeKey",
        "integration.request.header.X-Apigw-Ws-Event-Type": "context.eventType",
        "integration.request.header.X-Apigw-Ws-Request-Id": "context.requestId",
        "integration.request.header.X-Apigw-Ws-Stage": "context.stage",
        "integration.request.header.X-Apigw-Ws-Source-Ip": "context.identity.sourceIp",
        "integration.request.header.connectionId": "context.connectionId",
    }
)

_SECRET_TARGET = "integration.request.header.X-Apigw-Ws-Secret"
_VALID_TARGET = re.compile(r"integration\.request\.(header|querystring)\.[^\s]+")
_VALID_SOURCE = re.compile(
    r"'[^']*'"
    r"|context\.[A-Za-z0-9_.]+"
    r"|stageVariables\.[A-Za-z0-9_.\-]+"
    r"|route\.request\.(querystring|header|multivaluequerystring|multivalueheader)\.[^\s]+"
    r"|route\.request\.body\.[^\s]+"
)


class ConfigError(ValueError):
    """Raised when a configuration source is invalid or incomplete."""


def _upper(value: str) -> str:
    """Upper-case an HTTP method."""
    return str(value).upper()


def _frozen_str_map(value: Mapping[str, Any] | None) -> Mapping[str, str]:
    """Copy a mapping into a read-only ``{str: str}`` view."""
    if value is None:
        return MappingProxyType({})
    return MappingProxyType({str(k): str(v) for k, v in dict(value).items()})


def _frozen_routes(value: Mapping[str, Route] | Iterable[Route]) -> Mapping[str, Route]:
    """Copy routes (a mapping or an iterable of :class:`Route`) into a read-only mapping."""
    routes = list(value.values()) if isinstance(value, Mapping) else list(value)
    return MappingProxyType({route.key: route for route in routes})


def default_request_parameters(secret: str | None = None) -> dict[str, str]:
    """Return the wire-contract request parameter mappings.

    :param secret: when given, a static ``X-Apigw-Ws-Secret`` header carrying it
        is added, exactly as provisioning does on AWS.
    """
    params = dict(DEFAULT_REQUEST_PARAMETERS)
    if secret is not None:
        if "'" in secret:
            raise ConfigError("the secret cannot contain a single quote")
        params[_SECRET_TARGET] = f"'{secret}'"
    return params


def _check_request_parameters(params: Mapping[str, str]) -> None:
    """Reject mappings whose target or source AWS would not accept for WebSocket APIs."""
    for target, source in params.items():
        if not _VALID_TARGET.fullmatch(target):
            raise ConfigError(
                f"unsupported request parameter target {target!r}: expected "
                "integration.request.header.<name> or integration.request.querystring.<name>"
            )
        if not _VALID_SOURCE.fullmatch(source):
            raise ConfigError(
                f"unsupported request parameter source {source!r} for {target!r}: expected "
                "context.<var>, stageVariables.<name>, route.request.<kind>.<name> or 'static'"
            )


@attrs.frozen
class Integration:
    """The backend a route calls.

    :ivar type: ``HTTP_PROXY`` (an HTTP call to :attr:`uri`) or ``AWS_PROXY``
        (an in-process call of a Lambda-style Python handler).
    :ivar uri: the HTTP URL for ``HTTP_PROXY`` (may contain
        ``${stageVariables.name}``); for ``AWS_PROXY`` a ``module:function``
        import path, or any string (such as a Lambda ARN) when :attr:`handler`
        is given.
    :ivar method: the HTTP method of ``HTTP_PROXY`` calls.
    :ivar request_parameters: AWS-style mappings from
        ``integration.request.header.X`` / ``integration.request.querystring.X``
        to a source (``context.*``, ``stageVariables.*``,
        ``route.request.querystring.*``/``header.*`` on ``$connect``, ``'static'``).
    :ivar timeout_ms: how long to wait for the backend (AWS: 50 to 29,000 ms).
    :ivar handler: a Python callable used for ``AWS_PROXY`` instead of importing :attr:`uri`.
    """

    type: IntegrationType = "HTTP_PROXY"
    uri: str = ""
    method: str = attrs.field(default="POST", converter=_upper)
    request_parameters: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_str_map)
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    handler: LambdaHandler | None = attrs.field(default=None, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        """Validate the integration as AWS would when it is created."""
        if self.type not in ("HTTP_PROXY", "AWS_PROXY"):
            raise ConfigError(
                f"integration type {self.type!r} is not supported locally "
                "(use HTTP_PROXY or AWS_PROXY)"
            )
        if self.type == "HTTP_PROXY" and not re.match(r"https?://|\$\{stageVariables\.", self.uri):
            raise ConfigError(f"HTTP_PROXY integration needs an http(s) uri, got {self.uri!r}")
        if self.type == "AWS_PROXY" and self.handler is None and ":" not in self.uri:
            raise ConfigError(
                f"AWS_PROXY integration needs a handler or a 'module:function' uri, got "
                f"{self.uri!r}"
            )
        # AWS accepts 50..29,000 ms; locally anything positive goes (tests use tiny values).
        if self.timeout_ms <= 0:
            raise ConfigError(f"timeout_ms must be positive, got {self.timeout_ms}")
        _check_request_parameters(self.request_parameters)


_IDENTITY_SOURCE = re.compile(
    r"route\.request\.(header|querystring)\.[^\s,]+|stageVariables\.[A-Za-z0-9_]+"
    r"|context\.[A-Za-z0-9_.]+"
)


def _str_tuple(value: Iterable[str] | str) -> tuple[str, ...]:
    """A tuple of strings from one string or an iterable of them."""
    return (value,) if isinstance(value, str) else tuple(str(v) for v in value)


@attrs.frozen
class Authorizer:
    """A Lambda ``REQUEST`` authorizer, run in-process before the ``$connect`` integration.

    :ivar uri: ``module:function`` of the authorizer handler (or any label when
        :attr:`handler` is given).
    :ivar identity_sources: ``route.request.header.<name>``,
        ``route.request.querystring.<name>``, ``stageVariables.<name>`` or
        ``context.<var>``; when one is missing or empty the client gets 401 and the
        authorizer is not called (as on AWS).
    :ivar timeout_ms: how long the handler may run (an overrun answers 500).
    :ivar handler: the Python callable, instead of importing :attr:`uri`.
    """

    uri: str = ""
    identity_sources: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    handler: LambdaHandler | None = attrs.field(default=None, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        """Validate like AWS's ``CreateAuthorizer``."""
        if self.handler is None and ":" not in self.uri:
            raise ConfigError(f"an authorizer needs a 'module:function' uri, got {self.uri!r}")
        for source in self.identity_sources:
            if not _IDENTITY_SOURCE.fullmatch(source):
                raise ConfigError(
                    f"unsupported identity source {source!r}: expected "
                    "route.request.header.<name>, route.request.querystring.<name>, "
                    "stageVariables.<name> or context.<var>"
                )
        if self.timeout_ms <= 0:
            raise ConfigError(f"authorizer timeout_ms must be positive, got {self.timeout_ms}")

    def to_dict(self) -> dict[str, Any]:
        """The file representation (see :func:`config_from_dict`)."""
        return {"uri": self.uri, "identity_sources": list(self.identity_sources)}


@attrs.frozen
class Route:
    """A route key and the integration it calls.

    :ivar key: ``$connect``, ``$disconnect``, ``$default`` or a custom key
        matched against the route selection expression.
    :ivar integration: the backend called for this route.
    :ivar two_way: whether the backend's reply is sent back to the client (on
        AWS: the route has a ``$default`` route response). Meaningless for
        ``$connect`` and ``$disconnect``.
    :ivar authorizer: a Lambda ``REQUEST`` authorizer (``$connect`` only, as on AWS).
    """

    key: str
    integration: Integration
    two_way: bool = False
    authorizer: Authorizer | None = None

    def __attrs_post_init__(self) -> None:
        """AWS runs authorizers on ``$connect`` only."""
        if self.authorizer is not None and self.key != CONNECT:
            raise ConfigError(f"route {self.key!r}: authorizers run on $connect only")


@attrs.frozen
class ApiConfig:
    """A WebSocket API as AWS holds it: routes, selection expression, stage.

    :ivar routes: route key to :class:`Route`.
    :ivar api_id: shown to the backend in ``X-Amzn-Apigateway-Api-Id``, the
        ``AmazonAPIGateway_<apiId>`` User-Agent and ``context.apiId``.
    :ivar route_selection_expression: ``$request.body.<path>`` (``${...}`` also accepted).
    :ivar stage: the stage the WebSocket URL and the management API live under.
    :ivar stage_variables: values for ``stageVariables.*`` sources and
        ``${stageVariables.name}`` in integration URIs.
    :ivar region: the region in ARNs (``methodArn``) and the ``AWS_REGION`` given to
        in-process handlers when the environment has none.
    """

    routes: Mapping[str, Route] = attrs.field(factory=dict, converter=_frozen_routes)
    api_id: str = DEFAULT_API_ID
    route_selection_expression: str = DEFAULT_ROUTE_SELECTION_EXPRESSION
    stage: str = DEFAULT_STAGE
    stage_variables: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_str_map)
    region: str = DEFAULT_REGION

    def __attrs_post_init__(self) -> None:
        """Validate the stage name (it becomes a URL path segment)."""
        if not self.stage or "/" in self.stage or self.stage.startswith(("@", "_")):
            raise ConfigError(f"invalid stage name {self.stage!r}")

    def replace(self, **changes: Any) -> ApiConfig:
        """Return a copy with some fields changed (``attrs.evolve``)."""
        return attrs.evolve(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Return the config in the file format accepted by :func:`config_from_dict`."""
        return {
            "api_id": self.api_id,
            "route_selection_expression": self.route_selection_expression,
            "stage": self.stage,
            "stage_variables": dict(self.stage_variables),
            "region": self.region,
            "routes": {
                key: {
                    "type": route.integration.type,
                    "uri": route.integration.uri,
                    "method": route.integration.method,
                    "request_parameters": dict(route.integration.request_parameters),
                    "timeout_ms": route.integration.timeout_ms,
                    "two_way": route.two_way,
                    **(
                        {"authorizer": route.authorizer.to_dict()}
                        if route.authorizer is not None
                        else {}
                    ),
                }
                for key, route in self.routes.items()
            },
        }


def _sigv4_keys(value: Mapping[str, str] | Iterable[str] | None) -> Mapping[str, str]:
    """Parse strict-SigV4 keys into a read-only ``{access_key_id: secret}`` mapping."""
    try:
        return MappingProxyType(parse_sigv4_keys(value))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


@attrs.frozen
class GatewayOptions:
    """Behaviour of the local stand-in itself (not part of the API definition).

    :ivar idle_timeout: seconds without a data frame (either direction) before
        the connection is closed with 1001 (AWS: 600).
    :ivar max_duration: seconds after which any connection is closed with 1001 (AWS: 7200).
    :ivar management_latency_ms: round-trip delay added to every management API call, to
        mimic the network distance to AWS: half before the call is handled, half after
        (a call whose caller went away after sending it is still carried out).
    :ivar throttle_rps: token-bucket rate for the management API (``None``: off);
        excess calls get 429 ``LimitExceededException``.
    :ivar throttle_burst: bucket size (defaults to ``max(1, throttle_rps)``).
    :ivar write_buffer_high_water: bytes queued towards a client above which
        ``POST @connections`` answers 429 (the client is not reading).
    :ivar inject_429_every: fault injection for tests and benchmarks: answer every
        N-th ``POST @connections`` with 429 ``LimitExceededException`` (0: off). Counted
        in the ``management_injected_429`` counter; changeable at run time through
        ``Gateway.inject_429_every``.
    :ivar inject_5xx_every: fault injection: every N-th ``POST @connections`` that was
        delivered is then answered 500 ``InternalServerErrorException`` (0: off), as when
        AWS delivers a message and its answer fails: a sender that retries delivers it
        twice. Counted in ``management_injected_5xx``.
    :ivar inject_hang_every: fault injection: every N-th ``POST @connections`` that was
        delivered then never answers (0: off): the caller learns nothing until its own
        timeout (the call is released when the gateway shuts down). Counted in
        ``management_injected_hang``.
    :ivar drop_disconnect_every: fault injection: every N-th ``$disconnect`` call is not
        made (1: none is; 0: off), as when the backend was down or killed while clients
        closed. Counted in ``disconnects_dropped``.
    :ivar max_frame_size: largest accepted client frame; larger closes with 1009 (AWS: 32 KiB).
    :ivar max_message_size: largest accepted client message; larger closes with 1009 (AWS: 128 KiB).
    :ivar max_post_size: largest ``POST @connections`` body; larger answers 413 (AWS: 128 KiB).
    :ivar max_inflight_per_connection: integration calls that may run at once
        for one connection; reading from the client pauses beyond that.
    :ivar special_char_ids: hand out only connection ids containing ``+`` and ``/``.
    :ivar message_log_size: messages remembered per connection for ``/_local/`` inspection.
    :ivar closed_history_size: closed connections remembered for ``/_local/`` inspection.
    :ivar require_sigv4: answer 403 to management calls without a well-formed
        SigV4 ``Authorization`` header.
    :ivar sigv4_keys: strict SigV4 mode: ``{access_key_id: secret_access_key}``
        (or ``ACCESS_KEY_ID:SECRET_ACCESS_KEY`` strings). When not empty, every
        management call's signature is recomputed with botocore's signer and a
        call with an unknown key, a wrong signature, a service other than
        ``execute-api`` or an ``X-Amz-Date`` more than 5 minutes off answers 403.
    :ivar local_endpoints: serve the ``/_local/`` inspection and test-hook endpoints.
    :ivar close_timeout: seconds to wait for a client's close frame.
    :ivar shutdown_timeout: seconds to wait for ``$disconnect`` calls on shutdown.
    :ivar lambda_workers: threads running ``AWS_PROXY`` handlers.
    :ivar integration_connections: concurrent HTTP connections to backends.
    """

    idle_timeout: float = 600.0
    max_duration: float = 7200.0
    management_latency_ms: float = 0.0
    throttle_rps: float | None = None
    throttle_burst: int | None = None
    write_buffer_high_water: int = 1 << 20
    inject_429_every: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    inject_5xx_every: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    inject_hang_every: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    drop_disconnect_every: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    max_frame_size: int = 32 * 1024
    max_message_size: int = 128 * 1024
    max_post_size: int = 128 * 1024
    max_inflight_per_connection: int = 16
    special_char_ids: bool = False
    message_log_size: int = 100
    closed_history_size: int = 1000
    require_sigv4: bool = True
    sigv4_keys: Mapping[str, str] = attrs.field(
        factory=dict, converter=_sigv4_keys, repr=lambda keys: f"<{len(keys)} key(s)>"
    )
    local_endpoints: bool = True
    close_timeout: float = 5.0
    shutdown_timeout: float = 10.0
    lambda_workers: int = 16
    integration_connections: int = 256

    def __attrs_post_init__(self) -> None:
        """Reject values that cannot work."""
        if self.idle_timeout <= 0 or self.max_duration <= 0:
            raise ConfigError("idle_timeout and max_duration must be positive")
        if self.throttle_rps is not None and self.throttle_rps <= 0:
            raise ConfigError("throttle_rps must be positive")
        if self.max_inflight_per_connection < 1:
            raise ConfigError("max_inflight_per_connection must be at least 1")
        if self.sigv4_keys and not self.require_sigv4:
            raise ConfigError("sigv4_keys (strict SigV4) needs require_sigv4=True")


# --------------------------------------------------------------------------- sources


def _slug(route_key: str) -> str:
    """Return the URL path segment a custom route is posted to."""
    return quote(route_key, safe="-_.~")


def config_from_backend(
    backend: str,
    *,
    routes: Iterable[str] = (),
    secret: str | None = None,
    two_way: bool = True,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
    api_id: str = DEFAULT_API_ID,
    stage: str = DEFAULT_STAGE,
    route_selection_expression: str = DEFAULT_ROUTE_SELECTION_EXPRESSION,
    stage_variables: Mapping[str, str] | None = None,
    authorizer: Authorizer | None = None,
    authorizer_context_keys: Iterable[str] = (),
) -> ApiConfig:
    """Build the API apigw-ws provisions: HTTP_PROXY ``POST {backend}{route}``.

    ``$connect`` posts to ``{backend}connect``, ``$disconnect`` to
    ``{backend}disconnect``, ``$default`` to ``{backend}default`` and each
    custom route to ``{backend}<route>``; all carry
    :func:`default_request_parameters`. A missing trailing ``/`` on
    ``backend`` is added.

    :param routes: custom route keys.
    :param secret: value of the static ``X-Apigw-Ws-Secret`` header.
    :param two_way: whether message routes send the backend reply to the client.
    :param authorizer: a Lambda REQUEST authorizer on ``$connect``; its principal and
        ``authorizer_context_keys`` are then mapped to ``X-Apigw-Ws-Authorizer-*``
        headers on every route, as provisioning does.
    """
    if not re.match(r"https?://", backend):
        raise ConfigError(f"--backend must be an http(s) URL, got {backend!r}")
    base = backend if backend.endswith("/") else backend + "/"
    params = default_request_parameters(secret)
    if authorizer is not None:
        try:
            params.update(authorizer_request_parameters(authorizer_context_keys))
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    elif tuple(authorizer_context_keys):
        raise ConfigError("authorizer context keys need an authorizer")

    def make(key: str, path: str, reply: bool) -> Route:
        """One route posting to ``{base}{path}``."""
        integration = Integration(
            type="HTTP_PROXY",
            uri=base + path,
            method="POST",
            request_parameters=params,
            timeout_ms=timeout_ms,
        )
        return Route(key=key, integration=integration, two_way=reply)

    built = [
        attrs.evolve(make(CONNECT, "connect", False), authorizer=authorizer),
        make(DISCONNECT, "disconnect", False),
        make(DEFAULT, "default", two_way),
    ]
    for key in routes:
        if key.startswith("$"):
            raise ConfigError(f"custom route keys cannot start with '$': {key!r}")
        built.append(make(key, _slug(key), two_way))
    return ApiConfig(
        routes=built,
        api_id=api_id,
        stage=stage,
        route_selection_expression=route_selection_expression,
        stage_variables=stage_variables or {},
    )


def _lambda_integration(handler: LambdaHandler | str, timeout_ms: int) -> Integration:
    """An AWS_PROXY integration calling ``handler`` (a callable or ``module:function``)."""
    if isinstance(handler, str):
        return Integration(type="AWS_PROXY", uri=handler, timeout_ms=timeout_ms)
    name = f"{getattr(handler, '__module__', '?')}:{getattr(handler, '__qualname__', '?')}"
    return Integration(type="AWS_PROXY", uri=name, handler=handler, timeout_ms=timeout_ms)


def config_from_lambda(
    handler: LambdaHandler | str,
    *,
    routes: Iterable[str] = (),
    two_way: bool = False,
    two_way_routes: Iterable[str] = (),
    connect: bool = True,
    disconnect: bool = True,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
    api_id: str = DEFAULT_API_ID,
    stage: str = DEFAULT_STAGE,
    route_selection_expression: str = DEFAULT_ROUTE_SELECTION_EXPRESSION,
    authorizer: Authorizer | None = None,
) -> ApiConfig:
    """Build an API whose routes all call one in-process Lambda handler (AWS_PROXY).

    As on AWS, a Lambda's return value reaches the client only on two-way routes (routes
    with a route response): message routes are one-way unless ``two_way`` (all of them)
    or ``two_way_routes`` (these keys) say otherwise.

    :param handler: the callable, or its ``module:function`` import path.
    :param routes: custom route keys besides ``$connect``/``$disconnect``/``$default``.
    :param connect: whether a ``$connect`` route exists.
    :param disconnect: whether a ``$disconnect`` route exists.
    :param authorizer: a Lambda REQUEST authorizer on ``$connect``.
    """
    integration = _lambda_integration(handler, timeout_ms)
    keys = [DEFAULT, *routes]
    replying = set(two_way_routes)
    unknown = replying - set(keys)
    if unknown:
        raise ConfigError(f"two-way routes {sorted(unknown)} are not routes of this API")
    built = [
        Route(key=key, integration=integration, two_way=two_way or key in replying) for key in keys
    ]
    if connect:
        built.append(Route(key=CONNECT, integration=integration, authorizer=authorizer))
    elif authorizer is not None:
        raise ConfigError("an authorizer needs a $connect route")
    if disconnect:
        built.append(Route(key=DISCONNECT, integration=integration))
    return ApiConfig(
        routes=built,
        api_id=api_id,
        stage=stage,
        route_selection_expression=route_selection_expression,
    )


def config_from_lambda_routes(
    handlers: Mapping[str, LambdaHandler | str],
    *,
    two_way_routes: Iterable[str] = (),
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
    api_id: str = DEFAULT_API_ID,
    stage: str = DEFAULT_STAGE,
    route_selection_expression: str = DEFAULT_ROUTE_SELECTION_EXPRESSION,
    authorizer: Authorizer | None = None,
) -> ApiConfig:
    """Build an API with one Lambda function per route, the way Chalice and SAM deploy.

    ``handlers`` maps route keys (``$connect``, ``$disconnect``, ``$default``, custom keys)
    to a callable or ``module:function``; only these routes exist. Message routes are
    one-way unless listed in ``two_way_routes``.
    """
    if not handlers:
        raise ConfigError("no routes: give at least one ROUTE=module:function")
    replying = set(two_way_routes)
    unknown = replying - set(handlers)
    if unknown:
        raise ConfigError(f"two-way routes {sorted(unknown)} are not routes of this API")
    if authorizer is not None and CONNECT not in handlers:
        raise ConfigError("an authorizer needs a $connect route")
    built = [
        Route(
            key=key,
            integration=_lambda_integration(handler, timeout_ms),
            two_way=key in replying and key not in (CONNECT, DISCONNECT),
            authorizer=authorizer if key == CONNECT else None,
        )
        for key, handler in handlers.items()
    ]
    return ApiConfig(
        routes=built,
        api_id=api_id,
        stage=stage,
        route_selection_expression=route_selection_expression,
    )


def parse_lambda_route(value: str) -> tuple[str, str]:
    """Split ``ROUTE=module:function`` (the ``--lambda-route`` syntax)."""
    key, sep, target = value.partition("=")
    if not sep or not key or ":" not in target:
        raise ConfigError(f"expected ROUTE=module:function, got {value!r}")
    return key, target


def _authorizer_from_dict(data: Any, where: str) -> Authorizer:
    """Build an authorizer from its file representation."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a table")
    unknown = set(data) - {"uri", "identity_sources", "timeout_ms"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    sources = data.get("identity_sources") or []
    if isinstance(sources, str) or not isinstance(sources, list):
        raise ConfigError(f"{where}.identity_sources must be a list")
    return Authorizer(
        uri=str(data.get("uri", "")),
        identity_sources=[str(v) for v in sources],
        timeout_ms=int(data.get("timeout_ms", DEFAULT_TIMEOUT_MS)),
    )


def _route_from_dict(key: str, data: Mapping[str, Any], defaults: Mapping[str, Any]) -> Route:
    """Build one route from its file representation."""
    merged = {**defaults, **data}
    unknown = set(merged) - {
        "type",
        "integration_type",
        "uri",
        "method",
        "request_parameters",
        "timeout_ms",
        "two_way",
        "route_key",
        "authorizer",
    }
    if unknown:
        raise ConfigError(f"route {key!r}: unknown keys {sorted(unknown)}")
    kind = merged.get("type", merged.get("integration_type", "HTTP_PROXY"))
    integration = Integration(
        type=cast(IntegrationType, str(kind).upper()),
        uri=str(merged.get("uri", "")),
        method=str(merged.get("method", "POST")),
        request_parameters=merged.get("request_parameters") or {},
        timeout_ms=int(merged.get("timeout_ms", DEFAULT_TIMEOUT_MS)),
    )
    default_two_way = key not in (CONNECT, DISCONNECT)
    two_way = bool(merged.get("two_way", default_two_way))
    authorizer = None
    if data.get("authorizer") is not None:
        authorizer = _authorizer_from_dict(data["authorizer"], f"route {key!r} authorizer")
    return Route(key=key, integration=integration, two_way=two_way, authorizer=authorizer)


def config_from_dict(data: Mapping[str, Any]) -> ApiConfig:
    """Build an :class:`ApiConfig` from the JSON/TOML file structure.

    Top-level keys: ``api_id``, ``stage``, ``stage_variables``,
    ``route_selection_expression``, ``routes`` (a table keyed by route key, or
    a list of tables with ``route_key``), and the shorthands ``backend``,
    ``secret`` and ``custom_routes`` which expand like ``--backend`` and are
    then overridden by explicit ``routes``. Each route has ``type``
    (``HTTP_PROXY``/``AWS_PROXY``), ``uri``, ``method``,
    ``request_parameters``, ``timeout_ms``, ``two_way`` (default: true for
    message routes) and ``authorizer`` (``$connect`` only). ``lambda_routes`` maps route
    keys to ``module:function`` (one Lambda per route, like ``--lambda-route``;
    message routes one-way unless listed in ``two_way_routes``). ``authorizer``
    (``uri``, ``identity_sources``, ``timeout_ms``) puts a Lambda REQUEST authorizer on
    ``$connect``; with ``backend``, ``authorizer_context_keys`` maps its context to
    headers. ``region`` sets the region in ARNs and for in-process handlers. A
    ``route_defaults`` table supplies values every route
    lacks. ``sigv4_keys`` (strict SigV4 keys, see :func:`sigv4_keys_from_file`)
    is a gateway option, not part of the API, and is ignored here.
    """
    known = {
        "api_id",
        "stage",
        "stage_variables",
        "route_selection_expression",
        "routes",
        "backend",
        "secret",
        "custom_routes",
        "route_defaults",
        "sigv4_keys",
        "region",
        "authorizer",
        "authorizer_context_keys",
        "lambda_routes",
        "two_way_routes",
    }
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"unknown top-level keys {sorted(unknown)}")
    api_id = str(data.get("api_id", DEFAULT_API_ID))
    stage = str(data.get("stage", DEFAULT_STAGE))
    expression = str(data.get("route_selection_expression", DEFAULT_ROUTE_SELECTION_EXPRESSION))
    stage_variables = data.get("stage_variables") or {}
    routes: dict[str, Route] = {}
    authorizer = None
    if data.get("authorizer") is not None:
        authorizer = _authorizer_from_dict(data["authorizer"], "authorizer")
    context_keys = [str(k) for k in data.get("authorizer_context_keys") or []]
    two_way_routes = [str(k) for k in data.get("two_way_routes") or []]
    if "backend" in data:
        base = config_from_backend(
            str(data["backend"]),
            routes=[str(r) for r in data.get("custom_routes", [])],
            secret=None if data.get("secret") is None else str(data["secret"]),
            authorizer=authorizer,
            authorizer_context_keys=context_keys,
        )
        routes.update(base.routes)
    elif "secret" in data or "custom_routes" in data or context_keys:
        raise ConfigError(
            "'secret', 'custom_routes' and 'authorizer_context_keys' only make sense with 'backend'"
        )
    if data.get("lambda_routes") is not None:
        table = data["lambda_routes"]
        if not isinstance(table, Mapping):
            raise ConfigError("'lambda_routes' must map route keys to 'module:function'")
        lambda_api = config_from_lambda_routes(
            {str(k): str(v) for k, v in table.items()},
            two_way_routes=two_way_routes,
            authorizer=authorizer,
        )
        routes.update(lambda_api.routes)
    elif two_way_routes:
        raise ConfigError("'two_way_routes' only makes sense with 'lambda_routes'")
    defaults = data.get("route_defaults") or {}
    raw_routes = data.get("routes") or {}
    items: list[tuple[str, Mapping[str, Any]]]
    if isinstance(raw_routes, Mapping):
        items = [(str(k), v) for k, v in raw_routes.items()]
    elif isinstance(raw_routes, list):
        items = []
        for entry in raw_routes:
            if not isinstance(entry, Mapping) or "route_key" not in entry:
                raise ConfigError("each entry of a 'routes' list needs a 'route_key'")
            items.append((str(entry["route_key"]), entry))
    else:
        raise ConfigError("'routes' must be a table or a list")
    for key, spec in items:
        if not isinstance(spec, Mapping):
            raise ConfigError(f"route {key!r} must be a table")
        routes[key] = _route_from_dict(key, spec, defaults)
    connect_route = routes.get(CONNECT)
    if authorizer is not None:
        if connect_route is None:
            raise ConfigError("'authorizer' needs a $connect route")
        if connect_route.authorizer is None:
            routes[CONNECT] = attrs.evolve(connect_route, authorizer=authorizer)
    return ApiConfig(
        routes=routes,
        api_id=api_id,
        stage=stage,
        route_selection_expression=expression,
        stage_variables=stage_variables,
        region=str(data.get("region", DEFAULT_REGION)),
    )


def load_config_file(path: str | Path) -> ApiConfig:
    """Read a JSON (``.json``) or TOML (``.toml``, or anything else that parses) config file."""
    return config_from_dict(_read_config_file(path))


def sigv4_keys_from_file(path: str | Path) -> dict[str, str]:
    """Return the strict SigV4 keys of a config file's ``sigv4_keys`` entry.

    The entry is a list of ``"ACCESS_KEY_ID:SECRET_ACCESS_KEY"`` strings or a
    table ``{ACCESS_KEY_ID = "SECRET_ACCESS_KEY"}``; absent: no keys.

    :raises ConfigError: when the file or the entry is invalid.
    """
    raw = _read_config_file(path).get("sigv4_keys")
    if raw is None:
        return {}
    if not isinstance(raw, (Mapping, list, str)):
        raise ConfigError("'sigv4_keys' must be a list of 'ID:SECRET' strings or a table")
    try:
        return parse_sigv4_keys(raw if isinstance(raw, (Mapping, str)) else [str(v) for v in raw])
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def _read_config_file(path: str | Path) -> Mapping[str, Any]:
    """Parse a JSON or TOML config file into a mapping."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {file}: {exc}") from exc
    data: Any
    try:
        if file.suffix.lower() == ".json" or text.lstrip().startswith("{"):
            data = json.loads(text)
        else:
            data = tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot parse config file {file}: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {file} must hold a table/object")
    return data


def _import_from_cwd() -> None:
    """Make modules in the current directory importable, as Lambda's task root is (and as
    ``flask --app`` does): ``apigw-ws local --lambda chat:handler`` run next to ``chat.py``."""
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)


def resolve_lambda_handler(path: str) -> LambdaHandler:
    """Import ``module:function`` (``function`` may be dotted) and return the callable."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"expected 'module:function', got {path!r}")
    _import_from_cwd()
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise ConfigError(f"{module_name!r} has no attribute {attr!r}") from exc
    if not callable(target):
        raise ConfigError(f"{path!r} is not callable")
    return cast(LambdaHandler, target)


def _paginate(call: Callable[..., Any], key: str, **kwargs: Any) -> list[dict[str, Any]]:
    """Collect ``Items`` across ``NextToken`` pages of an apigatewayv2 list call."""
    items: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        page = call(**kwargs, **({"NextToken": token} if token else {}))
        items.extend(page.get(key, []))
        token = page.get("NextToken")
        if not token:
            return items


def config_from_apigw(
    client: Any,
    api_id: str,
    stage: str | None = None,
    *,
    lambda_handler: LambdaHandler | None = None,
    authorizer_handler: LambdaHandler | None = None,
) -> ApiConfig:
    """Read routes, integrations, mappings and stage variables from ``apigatewayv2``.

    Works against real AWS and under moto's ``mock_aws``. A route is two-way
    when it has a ``RouteResponseSelectionExpression`` and (where the service
    implements ``get_route_responses``; moto does not) at least one route
    response.

    :param client: a boto3 ``apigatewayv2`` client.
    :param api_id: the WebSocket API to read.
    :param stage: the stage whose variables to use; default: the first stage
        of the API, or ``local`` when it has none.
    :param lambda_handler: the Python callable every ``AWS_PROXY`` integration
        calls (their URIs are Lambda ARNs, which cannot be called locally).
    :param authorizer_handler: the Python callable a route's Lambda ``REQUEST``
        authorizer (``AuthorizationType=CUSTOM``) calls; its identity sources are read
        from the API. Without it the authorizer is not run (a warning says so).
    """
    api = client.get_api(ApiId=api_id)
    if api.get("ProtocolType", "WEBSOCKET") != "WEBSOCKET":
        raise ConfigError(f"API {api_id} is not a WebSocket API ({api.get('ProtocolType')})")
    integrations = {
        item["IntegrationId"]: item
        for item in _paginate(client.get_integrations, "Items", ApiId=api_id)
    }
    routes: list[Route] = []
    for item in _paginate(client.get_routes, "Items", ApiId=api_id):
        key = item["RouteKey"]
        target = item.get("Target") or ""
        integration_id = target.split("/", 1)[1] if target.startswith("integrations/") else ""
        spec = integrations.get(integration_id)
        if spec is None:
            raise ConfigError(f"route {key!r} has no integration target ({target!r})")
        kind = str(spec.get("IntegrationType", "")).upper()
        uri = str(spec.get("IntegrationUri", ""))
        handler: LambdaHandler | None = None
        if kind == "AWS_PROXY":
            if lambda_handler is not None:
                handler = lambda_handler
            elif not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", uri):
                raise ConfigError(
                    f"route {key!r} is AWS_PROXY to {uri!r}; pass lambda_handler "
                    "(--lambda module:function) to run it locally"
                )
        elif kind != "HTTP_PROXY":
            raise ConfigError(f"route {key!r}: integration type {kind} is not supported locally")
        integration = Integration(
            type=cast(IntegrationType, kind),
            uri=uri,
            method=str(spec.get("IntegrationMethod") or "POST"),
            request_parameters=spec.get("RequestParameters") or {},
            timeout_ms=int(spec.get("TimeoutInMillis") or DEFAULT_TIMEOUT_MS),
            handler=handler,
        )
        two_way = bool(item.get("RouteResponseSelectionExpression"))
        if two_way:
            try:
                responses = client.get_route_responses(ApiId=api_id, RouteId=item["RouteId"])
            except Exception:  # moto does not implement it: keep the expression's verdict
                responses = None
            if responses is not None:
                two_way = bool(responses.get("Items"))
        authorizer = None
        if item.get("AuthorizationType") == "CUSTOM" and item.get("AuthorizerId"):
            found = client.get_authorizer(ApiId=api_id, AuthorizerId=item["AuthorizerId"])
            if authorizer_handler is None:
                logger.warning(
                    "route %s has the Lambda authorizer %r, which cannot run locally without "
                    "its code: clients connect without it (pass --authorizer module:function)",
                    key,
                    found.get("Name"),
                )
            else:
                authorizer = Authorizer(
                    uri=str(found.get("AuthorizerUri") or "authorizer"),
                    identity_sources=found.get("IdentitySource") or (),
                    handler=authorizer_handler,
                )
        routes.append(
            Route(key=key, integration=integration, two_way=two_way, authorizer=authorizer)
        )
    stages = _paginate(client.get_stages, "Items", ApiId=api_id)
    chosen: dict[str, Any] | None = None
    if stage is None:
        chosen = stages[0] if stages else None
    else:
        chosen = next((s for s in stages if s.get("StageName") == stage), None)
    if stage is not None and chosen is None:
        logger.warning("API %s has no stage %r; using it without stage variables", api_id, stage)
    stage_name = stage or (chosen or {}).get("StageName") or DEFAULT_STAGE
    return ApiConfig(
        routes=routes,
        api_id=api_id,
        route_selection_expression=api.get("RouteSelectionExpression")
        or DEFAULT_ROUTE_SELECTION_EXPRESSION,
        stage=stage_name,
        stage_variables=(chosen or {}).get("StageVariables") or {},
        region=getattr(getattr(client, "meta", None), "region_name", None) or DEFAULT_REGION,
    )
