"""A local stand-in for an AWS API Gateway WebSocket API (needs the ``[local]`` extra).

One aiohttp server on one port provides the WebSocket endpoint, calls the
backend like API Gateway does (``HTTP_PROXY`` requests with request parameter
mappings, or in-process ``AWS_PROXY`` Lambda handlers), and serves the
``@connections`` management API that boto3 talks to. See
``docs/local-gateway.rst``.

Entry points: the ``apigw-ws local`` command (or ``python -m
apigw_ws_core.local``), :class:`Gateway` for embedding, and
:mod:`apigw_ws_core.local.testing` for tests.
"""

from __future__ import annotations

from .config import (
    DEFAULT_REQUEST_PARAMETERS,
    ApiConfig,
    Authorizer,
    ConfigError,
    GatewayOptions,
    Integration,
    Route,
    config_from_apigw,
    config_from_backend,
    config_from_dict,
    config_from_lambda,
    config_from_lambda_routes,
    default_request_parameters,
    load_config_file,
    sigv4_keys_from_file,
)
from .server import Gateway, start_gateway
from .template import config_from_template, load_template

__all__ = [
    "DEFAULT_REQUEST_PARAMETERS",
    "ApiConfig",
    "Authorizer",
    "ConfigError",
    "Gateway",
    "GatewayOptions",
    "Integration",
    "Route",
    "config_from_apigw",
    "config_from_backend",
    "config_from_dict",
    "config_from_lambda",
    "config_from_lambda_routes",
    "config_from_template",
    "default_request_parameters",
    "load_config_file",
    "load_template",
    "sigv4_keys_from_file",
    "start_gateway",
]
