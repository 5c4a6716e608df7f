"""Calling integrations: HTTP_PROXY requests and in-process AWS_PROXY (Lambda) calls.

:func:`build_http_call` turns an :class:`~.connection.Invocation` into the
HTTP request API Gateway would send to an ``HTTP_PROXY`` backend, and
:func:`build_lambda_event` into the event an ``AWS_PROXY`` Lambda would get.
:class:`IntegrationRunner` performs either and reports an
:class:`IntegrationResult`; it never raises for backend failures.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal
from urllib.parse import quote

import aiohttp

from .authorizers import (
    AuthorizerDecision,
    build_authorizer_event,
    evaluate_authorizer_result,
    missing_identity,
    single_and_multi,
)
from .config import (
    ApiConfig,
    Authorizer,
    ConfigError,
    GatewayOptions,
    Integration,
    LambdaHandler,
    Route,
)
from .config import resolve_lambda_handler as _resolve_lambda_handler
from .connection import Invocation
from .ids import new_trace_id
from .mapping import RouteRequest, apply_request_parameters

__all__ = [
    "Headers",
    "HttpCall",
    "IntegrationResult",
    "IntegrationRunner",
    "LambdaContext",
    "build_http_call",
    "build_lambda_event",
    "function_name",
    "lambda_environment",
]

logger = logging.getLogger("apigw_ws_core.local")

#: Handshake headers API Gateway does not pass on (hop-by-hop, or replaced by its own).
_DROPPED_HEADERS = frozenset(
    {
        "connection",
        "upgrade",
        "host",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "content-length",
    }
)
_STAGE_VARIABLE = re.compile(r"\$\{stageVariables\.([A-Za-z0-9_.\-]+)\}")

ErrorKind = Literal["timeout", "unreachable", "error"]


class Headers:
    """An ordered, case-insensitive list of HTTP headers (names keep their spelling)."""

    __slots__ = ("_pairs",)

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        """Start with ``pairs``."""
        self._pairs: list[tuple[str, str]] = list(pairs)

    def add(self, name: str, value: str) -> None:
        """Append a header, keeping existing ones with the same name."""
        self._pairs.append((name, value))

    def __setitem__(self, name: str, value: str) -> None:
        """Replace every header called ``name`` (case-insensitive) with one value."""
        self.popall(name)
        self._pairs.append((name, value))

    def get(self, name: str, default: str | None = None) -> str | None:
        """Return the first value of ``name`` (case-insensitive)."""
        lowered = name.lower()
        for key, value in self._pairs:
            if key.lower() == lowered:
                return value
        return default

    def getall(self, name: str) -> list[str]:
        """Return every value of ``name`` (case-insensitive)."""
        lowered = name.lower()
        return [value for key, value in self._pairs if key.lower() == lowered]

    def popall(self, name: str) -> None:
        """Remove every header called ``name`` (case-insensitive)."""
        lowered = name.lower()
        self._pairs = [(k, v) for k, v in self._pairs if k.lower() != lowered]

    def items(self) -> list[tuple[str, str]]:
        """Return the ``(name, value)`` pairs in order."""
        return list(self._pairs)

    def __contains__(self, name: object) -> bool:
        """Tell whether a header called ``name`` exists (case-insensitive)."""
        return isinstance(name, str) and self.get(name) is not None

    def __repr__(self) -> str:
        """Show the pairs."""
        return f"Headers({self._pairs!r})"


class IntegrationResult:
    """The outcome of an integration call.

    :ivar status: the HTTP status (or Lambda ``statusCode``); 0 on failure.
    :ivar headers: response headers (case-insensitive).
    :ivar body: the response body.
    :ivar error: ``None`` on success, else ``"timeout"``, ``"unreachable"``
        (connection refused/reset) or ``"error"`` (anything else, including a
        Lambda handler raising).
    """

    __slots__ = ("body", "error", "headers", "status")

    def __init__(
        self,
        status: int,
        headers: Headers | None = None,
        body: bytes = b"",
        error: ErrorKind | None = None,
    ) -> None:
        """Store the outcome."""
        self.status = status
        self.headers: Headers = headers if headers is not None else Headers()
        self.body = body
        self.error: ErrorKind | None = error

    @property
    def ok(self) -> bool:
        """True when the call completed with a 2xx status."""
        return self.error is None and 200 <= self.status < 300

    def __repr__(self) -> str:
        """Show status and error for logs."""
        return f"IntegrationResult(status={self.status}, error={self.error!r})"


class HttpCall:
    """A fully built HTTP_PROXY request."""

    __slots__ = ("body", "headers", "method", "url")

    def __init__(self, method: str, url: str, headers: Headers, body: bytes) -> None:
        """Store the request parts."""
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body


def _substitute_stage_variables(uri: str, stage_variables: Mapping[str, str]) -> str:
    """Replace ``${stageVariables.name}`` in an integration URI."""
    return _STAGE_VARIABLE.sub(lambda m: stage_variables.get(m.group(1), ""), uri)


def _route_request(inv: Invocation) -> RouteRequest:
    """Return what mappings may read from the client for this call."""
    conn = inv.connection
    if inv.event_type == "CONNECT":
        return RouteRequest(headers=conn.headers, query=conn.query)
    if inv.event_type == "MESSAGE":
        return RouteRequest(body=inv.body)
    return RouteRequest()


def build_http_call(integration: Integration, inv: Invocation, api: ApiConfig) -> HttpCall:
    """Build the request API Gateway sends to an HTTP_PROXY integration.

    * URL: the integration URI (stage variables substituted), plus the
      client's query string on ``$connect``, plus mapped query parameters.
    * Headers: on ``$connect`` the client's handshake headers minus hop-by-hop
      ones; ``Host`` of the backend; ``User-Agent`` (the client's on
      ``$connect``, else ``AmazonAPIGateway_<apiId>``); ``X-Forwarded-For``
      (appended to any the client sent), ``-Port``, ``-Proto``;
      ``X-Amzn-Trace-Id``; ``X-Amzn-Apigateway-Api-Id``; mapped headers;
      ``Content-Length`` always.
    * Body: empty on ``$connect``/``$disconnect``, the raw message text otherwise.
    """
    conn = inv.connection
    url = _substitute_stage_variables(integration.uri, api.stage_variables)
    headers = Headers()
    if inv.event_type == "CONNECT":
        for name, value in conn.headers:
            if name.lower() not in _DROPPED_HEADERS:
                headers.add(name, value)
    authority = url.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]
    headers["Host"] = authority.rsplit("@", 1)[-1]
    if inv.event_type == "CONNECT":
        if conn.user_agent:
            headers["User-Agent"] = conn.user_agent
        else:
            headers.popall("User-Agent")
    else:
        headers["User-Agent"] = f"AmazonAPIGateway_{api.api_id}"
    forwarded = headers.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{forwarded}, {conn.source_ip}" if forwarded else conn.source_ip
    headers["X-Forwarded-Port"] = conn.forwarded_port
    headers["X-Forwarded-Proto"] = conn.forwarded_proto
    headers["X-Amzn-Trace-Id"] = new_trace_id()
    headers["X-Amzn-Apigateway-Api-Id"] = api.api_id

    context = inv.context(api.api_id, api.stage)
    mapped_headers, mapped_query = apply_request_parameters(
        integration.request_parameters,
        context=context,
        stage_variables=api.stage_variables,
        request=_route_request(inv),
    )
    for name, value in mapped_headers:
        headers[name] = value

    query_parts: list[str] = []
    if inv.event_type == "CONNECT" and conn.raw_query:
        query_parts.append(conn.raw_query)
    query_parts.extend(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in mapped_query)
    if query_parts:
        url += ("&" if "?" in url else "?") + "&".join(query_parts)

    body = (inv.body or "").encode("utf-8") if inv.event_type == "MESSAGE" else b""
    headers["Content-Length"] = str(len(body))
    return HttpCall(integration.method, url, headers, body)


def build_lambda_event(inv: Invocation, api: ApiConfig) -> dict[str, Any]:
    """Build the AWS_PROXY Lambda event for a WebSocket call (facts §1.3 shapes)."""
    conn = inv.connection
    event: dict[str, Any] = {}
    if inv.event_type == "CONNECT":
        pairs = [(k, v) for k, v in conn.headers if k.lower() not in ("connection", "upgrade")]
        pairs = [(k, v) for k, v in pairs if k.lower() != "host"]
        pairs.append(("Host", conn.domain_name))
        pairs.append(("X-Amzn-Trace-Id", new_trace_id()))
        pairs.append(("X-Forwarded-For", conn.source_ip))
        pairs.append(("X-Forwarded-Port", conn.forwarded_port))
        pairs.append(("X-Forwarded-Proto", conn.forwarded_proto))
        event["headers"], event["multiValueHeaders"] = single_and_multi(pairs)
        if conn.query:
            (
                event["queryStringParameters"],
                event["multiValueQueryStringParameters"],
            ) = single_and_multi(list(conn.query))
    elif inv.event_type == "DISCONNECT":
        pairs = [
            ("Host", conn.domain_name),
            ("x-api-key", ""),
            ("X-Forwarded-For", ""),
            ("x-restapi", ""),
        ]
        event["headers"], event["multiValueHeaders"] = single_and_multi(pairs)
    event["requestContext"] = inv.request_context(api.api_id, api.stage)
    if inv.event_type == "MESSAGE":
        event["body"] = inv.body or ""
    event["isBase64Encoded"] = False
    return event


def function_name(uri: str) -> str:
    """A Lambda-style function name for a ``module:function`` handler (``module-function``)."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", uri).strip("-")
    return (name or "apigw-ws-local")[:64]


def lambda_environment(api: ApiConfig, name: str, ca_bundle: str | None = None) -> dict[str, str]:
    """What Lambda always sets and in-process handlers get when the process lacks it.

    ``AWS_REGION`` and ``AWS_DEFAULT_REGION`` (boto3 raises ``NoRegionError`` without a
    region; Chalice builds its Management API endpoint from ``AWS_REGION``) and
    ``AWS_LAMBDA_FUNCTION_NAME``; with TLS, ``AWS_CA_BUNDLE`` (botocore's bundle plus the
    local CA) so ``https://{domainName}/{stage}`` clients trust the gateway. Only unset
    variables are set; the process shares them.
    """
    wanted = {
        "AWS_REGION": os.environ.get("AWS_DEFAULT_REGION") or api.region,
        "AWS_DEFAULT_REGION": os.environ.get("AWS_REGION") or api.region,
        "AWS_LAMBDA_FUNCTION_NAME": name,
    }
    if ca_bundle:
        wanted["AWS_CA_BUNDLE"] = ca_bundle
    added = {k: v for k, v in wanted.items() if not os.environ.get(k)}
    os.environ.update(added)
    return added


class LambdaContext:
    """A minimal stand-in for the Lambda ``context`` object handlers receive."""

    function_version = "$LATEST"
    memory_limit_in_mb = 128
    log_stream_name = "local"

    def __init__(
        self, timeout_ms: int, loop_time: float, name: str = "apigw-ws-local", region: str = ""
    ) -> None:
        """Remember the deadline so :meth:`get_remaining_time_in_millis` works."""
        self.aws_request_id = str(uuid.uuid4())
        self.function_name = name
        self.log_group_name = f"/aws/lambda/{name}"
        self.invoked_function_arn = (
            f"arn:aws:lambda:{region or 'us-east-1'}:000000000000:function:{name}"
        )
        self._deadline = loop_time + timeout_ms / 1000
        self._timeout_ms = timeout_ms

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the integration times out."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _lambda_result(value: Any) -> IntegrationResult:
    """Interpret a Lambda proxy return value (``statusCode``/``headers``/``body``)."""
    if value is None:
        return IntegrationResult(200)
    if isinstance(value, Mapping):
        status = int(value.get("statusCode", 200))
        headers = Headers()
        for name, values in (value.get("multiValueHeaders") or {}).items():
            for item in values:
                headers.add(str(name), str(item))
        for name, item in (value.get("headers") or {}).items():
            headers[str(name)] = str(item)
        raw = value.get("body")
        body: bytes
        if raw is None:
            body = b""
        elif value.get("isBase64Encoded") and isinstance(raw, str):
            body = base64.b64decode(raw)
        elif isinstance(raw, str):
            body = raw.encode("utf-8")
        else:
            body = json.dumps(raw).encode("utf-8")
        return IntegrationResult(status, headers, body)
    if isinstance(value, bytes):
        return IntegrationResult(200, body=value)
    if isinstance(value, str):
        return IntegrationResult(200, body=value.encode("utf-8"))
    return IntegrationResult(200, body=json.dumps(value).encode("utf-8"))


class IntegrationRunner:
    """Performs integration calls for the gateway (one per gateway, one event loop).

    Owns an :class:`aiohttp.ClientSession` for HTTP_PROXY calls and a thread
    pool for AWS_PROXY handlers; :meth:`start` and :meth:`close` must be
    called on the gateway's loop.
    """

    def __init__(self, api: ApiConfig, options: GatewayOptions) -> None:
        """Prepare (but do not open) the HTTP session and thread pool."""
        self.api = api
        self.options = options
        self._session: aiohttp.ClientSession | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._handlers: dict[str, LambdaHandler] = {}
        #: With TLS: the CA bundle in-process handlers get as ``AWS_CA_BUNDLE`` when unset.
        self.ca_bundle: str | None = None
        self.calls = 0
        self.failures = 0

    async def start(self) -> None:
        """Open the HTTP client session."""
        connector = aiohttp.TCPConnector(limit=self.options.integration_connections)
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        )

    async def close(self) -> None:
        """Close the HTTP session and stop the thread pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def invoke(self, route: Route, inv: Invocation) -> IntegrationResult:
        """Call ``route``'s integration for ``inv``; never raises for backend failures."""
        self.calls += 1
        integration = route.integration
        if integration.type == "AWS_PROXY":
            result = await self._invoke_lambda(integration, inv)
        else:
            result = await self._invoke_http(integration, inv)
        if result.error is not None:
            self.failures += 1
        return result

    async def _invoke_http(self, integration: Integration, inv: Invocation) -> IntegrationResult:
        """Send the HTTP_PROXY request and collect the response."""
        if self._session is None:
            raise RuntimeError("IntegrationRunner.start() was not called")
        call = build_http_call(integration, inv, self.api)
        timeout = aiohttp.ClientTimeout(total=integration.timeout_ms / 1000)
        try:
            async with self._session.request(
                call.method,
                call.url,
                headers=call.headers.items(),
                data=call.body,
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                body = await response.read()
                return IntegrationResult(response.status, Headers(response.headers.items()), body)
        except TimeoutError:
            logger.warning("%s %s timed out (%s)", call.method, call.url, inv.route_key)
            return IntegrationResult(0, error="timeout")
        except (aiohttp.ClientConnectionError, OSError) as exc:
            logger.warning("%s %s failed: %r", call.method, call.url, exc)
            return IntegrationResult(0, error="unreachable")
        except (aiohttp.ClientError, RuntimeError) as exc:
            # RuntimeError: the session was closed while shutting down.
            logger.warning("%s %s failed: %r", call.method, call.url, exc)
            return IntegrationResult(0, error="error")

    def _resolve(self, uri: str, handler: LambdaHandler | None) -> LambdaHandler:
        """Return (importing once) the Python callable behind ``uri``."""
        if handler is not None:
            return handler
        found = self._handlers.get(uri)
        if found is None:
            found = _resolve_lambda_handler(uri)
            self._handlers[uri] = found
        return found

    def _handler_for(self, integration: Integration) -> LambdaHandler:
        """Return (importing once) the Python callable of an AWS_PROXY integration."""
        return self._resolve(integration.uri, integration.handler)

    def _run_handler(
        self, handler: LambdaHandler, event: dict[str, Any], context: LambdaContext, inv: Invocation
    ) -> Any:
        """Run a handler in a worker thread, the way the Lambda runtime would."""
        lambda_environment(self.api, context.function_name, self.ca_bundle)
        _configure_chalice(handler, inv.connection.domain_name, self.api.stage)
        return handler(event, context)

    async def _call(
        self,
        uri: str,
        handler: LambdaHandler,
        event: dict[str, Any],
        timeout_ms: int,
        inv: Invocation,
    ) -> Any:
        """Call ``handler`` in the thread pool; raises ``TimeoutError`` or what it raised."""
        loop = asyncio.get_running_loop()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.options.lambda_workers, thread_name_prefix="apigw-ws-lambda"
            )
        context = LambdaContext(timeout_ms, time.monotonic(), function_name(uri), self.api.region)
        future = loop.run_in_executor(
            self._executor, self._run_handler, handler, event, context, inv
        )
        return await asyncio.wait_for(future, timeout_ms / 1000)

    async def _invoke_lambda(self, integration: Integration, inv: Invocation) -> IntegrationResult:
        """Run the Lambda handler in the thread pool with the integration timeout."""
        try:
            handler = self._handler_for(integration)
        except ConfigError as exc:
            logger.error("AWS_PROXY %s: %s", inv.route_key, exc)
            return IntegrationResult(0, error="error")
        event = build_lambda_event(inv, self.api)
        try:
            value = await self._call(integration.uri, handler, event, integration.timeout_ms, inv)
        except TimeoutError:
            logger.warning("AWS_PROXY %s timed out", inv.route_key)
            return IntegrationResult(0, error="timeout")
        except Exception:
            logger.exception("AWS_PROXY handler for %s raised", inv.route_key)
            return IntegrationResult(0, error="error")
        try:
            return _lambda_result(value)
        except (TypeError, ValueError) as exc:
            logger.error("AWS_PROXY %s returned an unusable value: %r", inv.route_key, exc)
            return IntegrationResult(0, error="error")

    async def authorize(self, authorizer: Authorizer, inv: Invocation) -> AuthorizerDecision:
        """Run a Lambda REQUEST authorizer for a ``$connect``; never raises."""
        missing = missing_identity(authorizer, inv, self.api)
        if missing is not None:
            return AuthorizerDecision(401, reason=f"identity source {missing} is missing")
        try:
            handler = self._resolve(authorizer.uri, authorizer.handler)
        except ConfigError as exc:
            return AuthorizerDecision(500, reason=str(exc))
        event = build_authorizer_event(inv, self.api)
        try:
            value = await self._call(authorizer.uri, handler, event, authorizer.timeout_ms, inv)
        except TimeoutError:
            return AuthorizerDecision(500, reason="the authorizer timed out")
        except Exception as exc:
            if str(exc) == "Unauthorized":
                # The documented way for a Lambda authorizer to answer 401.
                return AuthorizerDecision(401, reason="the authorizer raised Unauthorized")
            logger.exception("authorizer %s raised", authorizer.uri)
            return AuthorizerDecision(500, reason=f"the authorizer raised {exc!r}")
        return evaluate_authorizer_result(value, event["methodArn"])


def _configure_chalice(handler: Any, domain_name: str, stage: str) -> None:
    """Point a Chalice WebSocket handler's Management API client at this gateway.

    Chalice builds its endpoint from the API id and ``AWS_REGION``
    (``https://{apiId}.execute-api.{region}.amazonaws.com/{stage}``), which cannot reach a
    local gateway; but the first ``websocket_api.configure(domain_name, stage)`` call wins,
    so calling it with the domain the client connected to makes Chalice use
    ``https://{domainName}/{stage}``, like every other sample. Anything that is not a
    Chalice WebSocket handler is left alone.
    """
    api = getattr(handler, "websocket_api", None)
    configure = getattr(api, "configure", None)
    if callable(configure) and callable(getattr(api, "configure_from_api_id", None)):
        configure(domain_name, stage)
