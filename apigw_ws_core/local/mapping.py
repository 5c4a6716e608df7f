"""Context variables and request parameter mappings, evaluated as AWS does.

API Gateway lets each integration map values into the backend request::

    {"integration.request.header.X-Conn": "context.connectionId",
     "integration.request.querystring.token": "route.request.querystring.token",
     "integration.request.header.X-Secret": "'static value'"}

This module evaluates such mappings generically: nothing about the apigw-ws
wire contract is hard-coded here. A source that resolves to nothing (an
absent query parameter, a context variable that does not apply to the event)
is skipped, so the target is not sent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "RouteRequest",
    "apply_request_parameters",
    "resolve_source",
    "select_route_key",
]


class RouteRequest:
    """What the client sent that mappings may read.

    :ivar headers: the handshake headers (``$connect`` only), as ``(name, value)`` pairs.
    :ivar query: the handshake query string (``$connect`` only), as ``(name, value)`` pairs.
    :ivar body: the message text (messages only).
    """

    __slots__ = ("body", "headers", "query")

    def __init__(
        self,
        headers: Sequence[tuple[str, str]] = (),
        query: Sequence[tuple[str, str]] = (),
        body: str | None = None,
    ) -> None:
        """Store the parts of the client request."""
        self.headers = headers
        self.query = query
        self.body = body

    def header_values(self, name: str) -> list[str]:
        """Return every value of header ``name`` (case-insensitive)."""
        lowered = name.lower()
        return [value for key, value in self.headers if key.lower() == lowered]

    def query_values(self, name: str) -> list[str]:
        """Return every value of query parameter ``name`` (case-sensitive, as on AWS)."""
        return [value for key, value in self.query if key == name]


def _json_path(document: Any, path: str) -> Any:
    """Walk a dotted path (``a.b.0.c``; a leading ``$.`` is ignored) through JSON data.

    Returns ``None`` when any step is missing.
    """
    if path.startswith("$."):
        path = path[2:]
    current = document
    for part in path.split("."):
        if part == "":
            continue
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return None
    return current


def _stringify(value: Any) -> str:
    """Render a JSON value the way AWS puts it into a string (strings unquoted)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def select_route_key(expression: str, body: str) -> str:
    """Evaluate a route selection expression against a message body.

    Supports ``$request.body.<path>`` and ``${request.body.<path>}``. Bodies
    that are not JSON objects, and missing paths, give ``""``, which matches no
    route (the caller falls back to ``$default``). Any other expression is
    treated as a static route key.
    """
    expr = expression.strip()
    if expr.startswith("${") and expr.endswith("}"):
        expr = "$" + expr[2:-1]
    prefix = "$request.body."
    if not expr.startswith(prefix):
        return expression
    try:
        document = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(document, dict):
        return ""
    value = _json_path(document, expr[len(prefix) :])
    if value is None:
        return ""
    return _stringify(value)


def resolve_source(
    source: str,
    *,
    context: Mapping[str, Any],
    stage_variables: Mapping[str, str],
    request: RouteRequest,
) -> str | None:
    """Return the value a mapping source stands for, or ``None`` when it has none.

    :param source: ``'static'``, ``context.<var>`` (dotted, e.g.
        ``context.identity.sourceIp``), ``stageVariables.<name>``,
        ``route.request.header.<name>``, ``route.request.querystring.<name>``,
        their ``multivalue`` forms (comma-joined) or ``route.request.body.<path>``.
    :param context: the flat context variables (keys like ``identity.sourceIp``).
    """
    if len(source) >= 2 and source.startswith("'") and source.endswith("'"):
        return source[1:-1]
    kind, _, rest = source.partition(".")
    if kind == "context":
        value = context.get(rest)
        return None if value is None else str(value)
    if kind == "stageVariables":
        return stage_variables.get(rest)
    if kind == "route" and rest.startswith("request."):
        section, _, name = rest[len("request.") :].partition(".")
        if section == "header":
            values = request.header_values(name)
            return values[0] if values else None
        if section == "multivalueheader":
            values = request.header_values(name)
            return ",".join(values) if values else None
        if section == "querystring":
            values = request.query_values(name)
            return values[0] if values else None
        if section == "multivaluequerystring":
            values = request.query_values(name)
            return ",".join(values) if values else None
        if section == "body" and request.body is not None:
            try:
                document = json.loads(request.body)
            except ValueError:
                return None
            value = _json_path(document, name)
            return None if value is None else _stringify(value)
    return None


def apply_request_parameters(
    parameters: Mapping[str, str],
    *,
    context: Mapping[str, Any],
    stage_variables: Mapping[str, str],
    request: RouteRequest,
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Evaluate mappings; return ``(headers, query)`` pairs to add to the backend call.

    Targets are ``integration.request.header.<name>`` and
    ``integration.request.querystring.<name>``; other targets are ignored.
    """
    headers: list[tuple[str, str]] = []
    query: list[tuple[str, str]] = []
    for target, source in parameters.items():
        value = resolve_source(
            source, context=context, stage_variables=stage_variables, request=request
        )
        if value is None:
            continue
        if target.startswith("integration.request.header."):
            headers.append((target[len("integration.request.header.") :], value))
        elif target.startswith("integration.request.querystring."):
            query.append((target[len("integration.request.querystring.") :], value))
    return headers, query
