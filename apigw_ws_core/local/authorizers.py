"""Lambda ``REQUEST`` authorizers on ``$connect``, evaluated as API Gateway does.

Before the ``$connect`` integration runs, API Gateway checks the authorizer's identity
sources (a missing or empty one: 401, the function is not called), calls the function with
a ``REQUEST`` event (``type``, ``methodArn``, the handshake's headers and query, stage
variables and the ``$connect`` request context) and evaluates the IAM policy it returns
against ``methodArn``: an explicit ``Deny`` or no matching ``Allow`` gives 403, a function
that raises ``Exception("Unauthorized")`` 401, any other failure (an exception, a timeout,
a malformed answer) 500. On ``Allow`` the principal and the ``context`` map are remembered
for the connection: Lambda integrations see them in ``requestContext.authorizer`` and
HTTP integrations through ``context.authorizer.*`` mappings, on every route. Context values
arrive as strings, as on AWS (its documentation's example output: ``"numberKey": "1"``,
``"booleanKey": "true"``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .config import ApiConfig, Authorizer
from .connection import Invocation
from .ids import new_trace_id
from .mapping import RouteRequest, resolve_source

__all__ = [
    "ACCOUNT_ID",
    "AuthorizerDecision",
    "build_authorizer_event",
    "evaluate_authorizer_result",
    "method_arn",
    "missing_identity",
]

#: The account id in local ARNs (AWS examples use 12 digits; nothing checks it).
ACCOUNT_ID = "000000000000"


class AuthorizerDecision:
    """The outcome of an authorizer: a rejection status, or the context to keep.

    :ivar status: ``None`` when the client is allowed, else 401, 403 or 500.
    :ivar context: ``principalId`` plus the authorizer's ``context`` (allowed only).
    :ivar reason: why it was rejected, for the log.
    """

    __slots__ = ("context", "reason", "status")

    def __init__(
        self, status: int | None, context: dict[str, Any] | None = None, reason: str = ""
    ) -> None:
        """Store the outcome."""
        self.status = status
        self.context = context
        self.reason = reason

    def __repr__(self) -> str:
        """Show status and reason for logs."""
        return f"AuthorizerDecision(status={self.status}, reason={self.reason!r})"


def method_arn(api: ApiConfig, route_key: str = "$connect") -> str:
    """The ``methodArn`` API Gateway gives a WebSocket authorizer."""
    return f"arn:aws:execute-api:{api.region}:{ACCOUNT_ID}:{api.api_id}/{api.stage}/{route_key}"


def missing_identity(authorizer: Authorizer, inv: Invocation, api: ApiConfig) -> str | None:
    """The first identity source that is missing or empty (``None``: all present)."""
    conn = inv.connection
    request = RouteRequest(headers=conn.headers, query=conn.query)
    context = inv.context(api.api_id, api.stage)
    for source in authorizer.identity_sources:
        value = resolve_source(
            source, context=context, stage_variables=api.stage_variables, request=request
        )
        if not value:
            return source
    return None


def single_and_multi(pairs: list[tuple[str, str]]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Fold ``(name, value)`` pairs into single- and multi-value maps (a Lambda event's
    ``headers``/``multiValueHeaders`` and query string pairs; the authorizer event's too)."""
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in pairs:
        single[name] = value
        multi.setdefault(name, []).append(value)
    return single, multi


def build_authorizer_event(inv: Invocation, api: ApiConfig) -> dict[str, Any]:
    """The ``REQUEST`` authorizer event for a ``$connect`` (Powertools' captured shape)."""
    conn = inv.connection
    pairs = [(k, v) for k, v in conn.headers if k.lower() != "host"]
    pairs.append(("Host", conn.domain_name))
    pairs.append(("X-Amzn-Trace-Id", new_trace_id()))
    pairs.append(("X-Forwarded-For", conn.source_ip))
    pairs.append(("X-Forwarded-Port", conn.forwarded_port))
    pairs.append(("X-Forwarded-Proto", conn.forwarded_proto))
    headers, multi_headers = single_and_multi(pairs)
    query, multi_query = single_and_multi(list(conn.query))
    context = inv.request_context(api.api_id, api.stage)
    context.pop("authorizer", None)
    return {
        "type": "REQUEST",
        "methodArn": method_arn(api, inv.route_key),
        "headers": headers,
        "multiValueHeaders": multi_headers,
        "queryStringParameters": query,
        "multiValueQueryStringParameters": multi_query,
        "stageVariables": dict(api.stage_variables),
        "requestContext": context,
    }


def _arn_matches(pattern: str, arn: str) -> bool:
    """IAM resource matching: ``*`` any run of characters, ``?`` one character."""
    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, arn) is not None


def _action_matches(action: str) -> bool:
    """Whether an IAM action covers ``execute-api:Invoke``."""
    return _arn_matches(action.lower(), "execute-api:invoke")


def _as_list(value: Any) -> list[Any]:
    """An IAM field that may be a single value or a list."""
    return list(value) if isinstance(value, list | tuple) else [value]


def evaluate_authorizer_result(value: Any, arn: str) -> AuthorizerDecision:
    """Evaluate what an authorizer returned against ``arn`` (its ``methodArn``)."""
    if not isinstance(value, Mapping):
        return AuthorizerDecision(500, reason="the authorizer did not return an object")
    principal = value.get("principalId")
    policy = value.get("policyDocument")
    if not isinstance(principal, str | int) or not isinstance(policy, Mapping):
        return AuthorizerDecision(500, reason="principalId or policyDocument is missing")
    statements = policy.get("Statement")
    if isinstance(statements, Mapping):
        statements = [statements]
    if not isinstance(statements, list) or not all(isinstance(s, Mapping) for s in statements):
        return AuthorizerDecision(500, reason="policyDocument.Statement is not a list")
    allowed = False
    for statement in statements:
        actions = _as_list(statement.get("Action", []))
        resources = _as_list(statement.get("Resource", []))
        if not any(isinstance(a, str) and _action_matches(a) for a in actions):
            continue
        if not any(isinstance(r, str) and _arn_matches(r, arn) for r in resources):
            continue
        effect = str(statement.get("Effect", "")).capitalize()
        if effect == "Deny":
            return AuthorizerDecision(403, reason="the policy denies execute-api:Invoke")
        if effect == "Allow":
            allowed = True
    if not allowed:
        return AuthorizerDecision(403, reason="no statement allows execute-api:Invoke")
    extra = value.get("context") or {}
    if not isinstance(extra, Mapping) or not all(
        isinstance(v, str | int | float | bool) for v in extra.values()
    ):
        return AuthorizerDecision(
            500, reason="context values must be strings, numbers or booleans (no objects)"
        )
    # Integrations see every value as a string ("numberKey": "1", "booleanKey": "true").
    strings = {str(k): _stringify(v) for k, v in extra.items()}
    return AuthorizerDecision(None, {"principalId": str(principal), **strings})


def _stringify(value: str | int | float | bool) -> str:
    """A context value the way integrations receive it (booleans lower-case, as in JSON)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
