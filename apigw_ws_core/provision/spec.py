"""What a WebSocket API should look like: :class:`GatewaySpec` and its parts.

A spec is pure data (frozen attrs classes), validated when it is built. It says *what* should
exist; :mod:`apigw_ws_core.provision.plan` compares it with what does exist and
:mod:`apigw_ws_core.provision.apply` makes AWS match it.

The wire contract (see ``DESIGN.md``) is fixed here: every route gets its own ``HTTP_PROXY``
integration ``POST {target_base_url}{slug}`` carrying the ``X-Apigw-Ws-*`` request parameter
mappings and the static secret header.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

import attrs

from apigw_ws_core.events import authorizer_request_parameters
from apigw_ws_core.provision.errors import SpecError

__all__ = [
    "DEFAULT_TIMEOUT_MS",
    "GATEWAY_TAG",
    "PREDEFINED_ROUTES",
    "SECRET_HEADER",
    "AuthorizerSpec",
    "DomainSpec",
    "GatewaySpec",
    "ResolvedRoute",
    "RouteSpec",
    "Throttling",
    "request_parameters",
    "secret_fingerprint",
]

#: Tag put on every taggable resource we create; its value is :attr:`GatewaySpec.name`.
#: Reading what exists finds our API by this tag when the gateway record is lost.
GATEWAY_TAG = "apigw-ws:gateway"

#: API Gateway's maximum (and our default) integration timeout for WebSocket APIs.
DEFAULT_TIMEOUT_MS = 29000

#: The predefined routes and the URL slug each one posts to.
PREDEFINED_ROUTES: dict[str, str] = {
    "$connect": "connect",
    "$disconnect": "disconnect",
    "$default": "default",
}

SECRET_HEADER = "X-Apigw-Ws-Secret"

#: Header name -> API Gateway context expression, as in the wire contract.
_CONTEXT_HEADERS: dict[str, str] = {
    "X-Apigw-Ws-Connection-Id": "context.connectionId",
    "X-Apigw-Ws-Route-Key": "context.routeKey",
    "X-Apigw-Ws-Event-Type": "context.eventType",
    "X-Apigw-Ws-Request-Id": "context.requestId",
    "X-Apigw-Ws-Stage": "context.stage",
    "X-Apigw-Ws-Source-Ip": "context.identity.sourceIp",
    # What django-aws-api-gateway-websockets deployments already send.
    "connectionId": "context.connectionId",
}

_NAME_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
_STAGE_RE = re.compile(r"\A[A-Za-z0-9_-]{1,128}\Z")
_SLUG_RE = re.compile(r"\A[A-Za-z0-9._~-]{1,128}\Z")
_ROUTE_KEY_RE = re.compile(r"\A[^\s$][^\s]{0,127}\Z")
# Characters that survive being put between single quotes in a static mapping value.
_SECRET_RE = re.compile(r"\A[A-Za-z0-9_.~+/=-]{16,256}\Z")
_STAGE_VAR_NAME_RE = re.compile(r"\A[A-Za-z0-9_]{1,64}\Z")
_STAGE_VAR_VALUE_RE = re.compile(r"\A[A-Za-z0-9\-._~:/?#&=,]{0,512}\Z")
_DOMAIN_RE = re.compile(r"\A(?=.{1,253}\Z)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}\Z")
_BASE_PATH_RE = re.compile(r"\A([A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*)?\Z")


def _check_url(value: str, what: str) -> None:
    if not value.startswith(("https://", "http://")) or len(value) < 10:
        raise SpecError(f"{what} must be an absolute http(s) URL, got {value!r}")
    if any(ch.isspace() for ch in value) or "'" in value or '"' in value:
        raise SpecError(f"{what} must not contain spaces or quotes: {value!r}")


def secret_fingerprint(secret: str) -> str:
    """A short, non-reversible fingerprint of the secret, safe to print and to store."""
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


def request_parameters(secret: str, authorizer: AuthorizerSpec | None = None) -> dict[str, str]:
    """The integration request parameter mappings of the wire contract, secret included.

    With an ``authorizer``, its principal and declared context keys are mapped too
    (:func:`apigw_ws_core.events.authorizer_request_parameters`).
    """
    params = {f"integration.request.header.{h}": src for h, src in _CONTEXT_HEADERS.items()}
    params[f"integration.request.header.{SECRET_HEADER}"] = f"'{secret}'"
    if authorizer is not None:
        params.update(authorizer_request_parameters(authorizer.context_keys))
    return params


_LAMBDA_ARN_RE = re.compile(
    r"\Aarn:aws[a-z-]*:lambda:([a-z0-9-]+):\d{12}:function:[A-Za-z0-9_-]{1,64}"
    r"(:[A-Za-z0-9_$-]{1,128})?\Z"
)
_IAM_ROLE_RE = re.compile(r"\Aarn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}\Z")
_IDENTITY_SOURCE_RE = re.compile(
    r"\A(route\.request\.(header|querystring)\.[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}"
    r"|stageVariables\.[A-Za-z0-9_]{1,64}|context\.[A-Za-z0-9_.]{1,128})\Z"
)
_CONTEXT_KEY_RE = re.compile(r"\A[A-Za-z0-9_]{1,64}\Z")


def _str_tuple(value: Any) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(str(v) for v in value)


@attrs.frozen(kw_only=True)
class AuthorizerSpec:
    """A Lambda ``REQUEST`` authorizer on ``$connect`` (the only route AWS runs one on).

    ``function_arn`` is the authorizer Lambda function. ``identity_sources`` are checked by
    API Gateway before it calls the function: when one is missing the client gets 401
    (``route.request.header.<name>``, ``route.request.querystring.<name>``,
    ``stageVariables.<name>``, ``context.<var>``). ``context_keys`` are the keys of the
    authorizer's ``context`` that HTTP backends receive as ``X-Apigw-Ws-Authorizer-<key>``
    headers (the principal always arrives as ``X-Apigw-Ws-Authorizer-Principal-Id``).
    ``credentials_arn`` is a role API Gateway assumes to invoke the function; without it,
    grant ``apigateway.amazonaws.com`` ``lambda:InvokeFunction`` on the function yourself.
    """

    function_arn: str
    identity_sources: tuple[str, ...] = attrs.field(
        default=("route.request.header.Authorization",), converter=_str_tuple
    )
    name: str = "apigw-ws-authorizer"
    context_keys: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    credentials_arn: str | None = None

    def __attrs_post_init__(self) -> None:
        if not _LAMBDA_ARN_RE.match(self.function_arn):
            raise SpecError(
                f"authorizer function_arn {self.function_arn!r} is not a Lambda function ARN"
            )
        if not _NAME_RE.match(self.name):
            raise SpecError(f"authorizer name {self.name!r}: use 1-128 letters, digits, _ . -")
        if not self.identity_sources:
            raise SpecError("an authorizer needs at least one identity source")
        for source in self.identity_sources:
            if not _IDENTITY_SOURCE_RE.match(source):
                raise SpecError(
                    f"identity source {source!r}: use route.request.header.<name>, "
                    "route.request.querystring.<name>, stageVariables.<name> or context.<var>"
                )
        for key in self.context_keys:
            if not _CONTEXT_KEY_RE.match(key) or key.lower() == "principal-id":
                raise SpecError(f"authorizer context key {key!r}: use 1-64 of A-Z a-z 0-9 _")
        if self.credentials_arn is not None and not _IAM_ROLE_RE.match(self.credentials_arn):
            raise SpecError(f"authorizer credentials_arn {self.credentials_arn!r} is not a role")

    @property
    def uri(self) -> str:
        """The ``AuthorizerUri`` API Gateway calls: the function's invocation path."""
        match = _LAMBDA_ARN_RE.match(self.function_arn)
        region = match.group(1) if match else ""
        return (
            f"arn:aws:apigateway:{region}:lambda:path/2015-03-31/functions/"
            f"{self.function_arn}/invocations"
        )


@attrs.frozen(kw_only=True)
class RouteSpec:
    """One route of the API.

    ``key`` is the route key (``"chat_message"``; the predefined ``"$connect"``,
    ``"$disconnect"`` and ``"$default"`` may be listed to change their target or two-way flag).
    ``target_url`` sends this route somewhere other than ``{target_base_url}{slug}``;
    ``slug`` overrides the path segment (default: the route key itself, or ``connect``,
    ``disconnect``, ``default``). ``two_way`` routes get a route response, so the backend's
    reply body reaches the client; ``None`` means the gateway's ``default_two_way``.
    """

    key: str
    target_url: str | None = None
    two_way: bool | None = None
    slug: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.key not in PREDEFINED_ROUTES and not _ROUTE_KEY_RE.match(self.key):
            raise SpecError(
                f"route key {self.key!r}: custom route keys must not start with '$' "
                "and must not contain whitespace"
            )
        if self.target_url is not None:
            _check_url(self.target_url, f"route {self.key!r} target_url")
        if self.slug is not None and not _SLUG_RE.match(self.slug):
            raise SpecError(f"route {self.key!r}: slug {self.slug!r} is not URL-safe")
        if self.slug is None and self.key not in PREDEFINED_ROUTES and not _SLUG_RE.match(self.key):
            raise SpecError(
                f"route key {self.key!r} cannot be used as a URL path segment; give it a slug"
            )
        if self.key in ("$connect", "$disconnect") and self.two_way:
            raise SpecError(f"{self.key} cannot be two-way")


@attrs.frozen(kw_only=True)
class Throttling:
    """Stage-wide default throttling (``DefaultRouteSettings``). ``None`` leaves a value alone."""

    burst_limit: int | None = None
    rate_limit: float | None = None

    def __attrs_post_init__(self) -> None:
        if self.burst_limit is not None and self.burst_limit < 0:
            raise SpecError("throttling burst_limit must be >= 0")
        if self.rate_limit is not None and self.rate_limit < 0:
            raise SpecError("throttling rate_limit must be >= 0")


@attrs.frozen(kw_only=True)
class DomainSpec:
    """A custom domain for the API (regional endpoint, TLS 1.2).

    Either give ``certificate_arn`` (an ACM certificate in the API's region that you manage)
    or leave it ``None`` to have a DNS-validated ACM certificate requested, validated through
    Route 53 and deleted again by ``destroy``. With ``manage_dns`` the validation CNAME and an
    alias ``A`` record pointing the domain at API Gateway are written to the Route 53 hosted
    zone ``hosted_zone_id`` (found by name when not given). ``base_path`` is the API mapping
    key (``""`` maps the domain root). ``certificate_timeout`` bounds the wait for ACM.
    """

    name: str
    certificate_arn: str | None = None
    hosted_zone_id: str | None = None
    manage_dns: bool = True
    base_path: str = ""
    certificate_timeout: int = 900

    def __attrs_post_init__(self) -> None:
        if not _DOMAIN_RE.match(self.name):
            raise SpecError(f"domain name {self.name!r} is not a valid lower-case host name")
        if self.certificate_arn is not None and not self.certificate_arn.startswith("arn:"):
            raise SpecError(f"certificate_arn {self.certificate_arn!r} is not an ARN")
        if not _BASE_PATH_RE.match(self.base_path):
            raise SpecError(f"base_path {self.base_path!r} is not a valid API mapping key")
        if self.certificate_arn is None and not self.manage_dns:
            raise SpecError(
                "a requested certificate is validated through Route 53: "
                "set manage_dns = true or give certificate_arn"
            )
        if self.certificate_timeout < 0:
            raise SpecError("certificate_timeout must be >= 0")

    @property
    def request_certificate(self) -> bool:
        """Whether provisioning requests (and owns) the ACM certificate."""
        return self.certificate_arn is None


@attrs.frozen(kw_only=True)
class ResolvedRoute:
    """A route with everything filled in: what its integration and route must look like."""

    key: str
    uri: str
    two_way: bool


def _routes_converter(value: Any) -> tuple[RouteSpec, ...]:
    return tuple(value)


def _mapping_converter(value: Any) -> Mapping[str, str]:
    return dict(value or {})


@attrs.frozen(kw_only=True)
class GatewaySpec:
    """Everything provisioning needs to know about one WebSocket API.

    ``name`` is the logical name: the gateway record's name and the value of the
    :data:`GATEWAY_TAG` tag (``api_name``, the name shown in the AWS console, defaults to it).
    ``target_base_url`` ends with ``/``; each route posts to it plus the route's slug.
    ``secret`` is the shared secret sent as the ``X-Apigw-Ws-Secret`` header (16 to 256
    characters from ``A-Z a-z 0-9 _ . ~ + / = -``); it never appears in plans or logs.
    ``region`` defaults to the AWS session's region. ``authorizer`` puts a Lambda ``REQUEST``
    authorizer on ``$connect`` and maps its principal and context to every route's backend.
    """

    name: str
    target_base_url: str
    secret: str = attrs.field(repr=False)
    region: str | None = None
    api_name: str | None = None
    description: str = "apigw-ws WebSocket API"
    route_selection_expression: str = "$request.body.action"
    routes: tuple[RouteSpec, ...] = attrs.field(default=(), converter=_routes_converter)
    default_two_way: bool = True
    stage: str = "prod"
    stage_variables: Mapping[str, str] = attrs.field(factory=dict, converter=_mapping_converter)
    throttling: Throttling | None = None
    domain: DomainSpec | None = None
    tags: Mapping[str, str] = attrs.field(factory=dict, converter=_mapping_converter)
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    authorizer: AuthorizerSpec | None = None

    def __attrs_post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise SpecError(f"gateway name {self.name!r}: use 1-128 letters, digits, '_', '.', '-'")
        _check_url(self.target_base_url, "target_base_url")
        if not self.target_base_url.endswith("/"):
            raise SpecError(f"target_base_url must end with '/': {self.target_base_url!r}")
        if not _SECRET_RE.match(self.secret):
            raise SpecError(
                "secret must be 16-256 characters from A-Z a-z 0-9 _ . ~ + / = - "
                "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        if not self.route_selection_expression.startswith("$request.body."):
            raise SpecError(
                "route_selection_expression must look like '$request.body.<field>', got "
                f"{self.route_selection_expression!r}"
            )
        if not _STAGE_RE.match(self.stage):
            raise SpecError(f"stage {self.stage!r}: use 1-128 letters, digits, '_', '-'")
        for var, val in self.stage_variables.items():
            if not _STAGE_VAR_NAME_RE.match(var) or not _STAGE_VAR_VALUE_RE.match(val):
                raise SpecError(f"stage variable {var!r}={val!r} is not allowed by API Gateway")
        if not 50 <= self.timeout_ms <= DEFAULT_TIMEOUT_MS:
            raise SpecError(f"timeout_ms must be between 50 and {DEFAULT_TIMEOUT_MS}")
        keys = [r.key for r in self.routes]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise SpecError(f"routes listed twice: {', '.join(duplicates)}")
        slugs = [self._slug(r) for r in self.routes if r.target_url is None]
        if len(set(slugs)) != len(slugs):
            raise SpecError("two routes post to the same URL slug; give them distinct slugs")
        for tag in self.tags:
            if tag.startswith("aws:") or tag == GATEWAY_TAG:
                raise SpecError(f"tag {tag!r} is reserved")

    @property
    def effective_api_name(self) -> str:
        """The API's name in AWS."""
        return self.api_name or self.name

    @property
    def all_tags(self) -> dict[str, str]:
        """The user's tags plus our ownership tag."""
        return {**self.tags, GATEWAY_TAG: self.name}

    @staticmethod
    def _slug(route: RouteSpec) -> str:
        if route.slug is not None:
            return route.slug
        return PREDEFINED_ROUTES.get(route.key, route.key)

    def resolved_routes(self) -> list[ResolvedRoute]:
        """The three predefined routes plus the custom ones, in a stable order."""
        given = {r.key: r for r in self.routes}
        ordered = [given.get(k, RouteSpec(key=k)) for k in PREDEFINED_ROUTES]
        ordered += [r for r in self.routes if r.key not in PREDEFINED_ROUTES]
        resolved = []
        for route in ordered:
            if route.key in ("$connect", "$disconnect"):
                two_way = False
            elif route.two_way is None:
                two_way = self.default_two_way
            else:
                two_way = route.two_way
            uri = route.target_url or f"{self.target_base_url}{self._slug(route)}"
            resolved.append(ResolvedRoute(key=route.key, uri=uri, two_way=two_way))
        return resolved

    def canonical(self) -> dict[str, Any]:
        """The spec as plain JSON-able data, with the secret replaced by its fingerprint."""
        data = attrs.asdict(self, recurse=True)
        data["secret"] = secret_fingerprint(self.secret)
        data["stage_variables"] = dict(sorted(self.stage_variables.items()))
        data["tags"] = dict(sorted(self.tags.items()))
        return data

    def spec_hash(self) -> str:
        """SHA-256 of :meth:`canonical`: equal hashes mean equal specs."""
        blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()
