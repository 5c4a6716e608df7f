"""Strict SigV4 checking of management API calls (``--sigv4-key``).

By default the local gateway only checks the *shape* of the ``Authorization``
header. With configured keys (:attr:`GatewayOptions.sigv4_keys
<apigw_ws_core.local.GatewayOptions.sigv4_keys>`) it recomputes each request's
signature with botocore's own SigV4 signer, fed with the request exactly as
received (method, raw path with its percent-encoding, query, the signed
headers, the body) and the received ``X-Amz-Date``, and compares the result
with :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from calendar import timegm
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["MAX_CLOCK_SKEW", "parse_sigv4_keys", "verify_sigv4"]

#: How far (seconds) ``X-Amz-Date`` may be from the gateway's clock, as on AWS.
MAX_CLOCK_SKEW = 300

_AUTH = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+)\s*,"
    r"\s*SignedHeaders=(?P<signed>[^,\s]+)\s*,\s*Signature=(?P<signature>[0-9a-f]{64})\s*"
)
_AMZ_DATE = re.compile(r"\d{8}T\d{6}Z")

_INVALID_KEY = "The security token included in the request is invalid."
_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)


def parse_sigv4_keys(values: Iterable[str] | Mapping[str, str] | None) -> dict[str, str]:
    """Parse ``ACCESS_KEY_ID:SECRET_ACCESS_KEY`` pairs into ``{access_key_id: secret}``.

    Each string may hold several comma-separated pairs; a mapping is copied as is.

    :raises ValueError: on a pair without ``:`` or with an empty side.
    """
    if values is None:
        return {}
    if isinstance(values, Mapping):
        pairs = [(str(k), str(v)) for k, v in values.items()]
    else:
        if isinstance(values, str):
            values = [values]
        pairs = []
        for value in values:
            for item in str(value).split(","):
                item = item.strip()
                if not item:
                    continue
                key_id, sep, secret = item.partition(":")
                pairs.append((key_id.strip(), secret.strip() if sep else ""))
    keys: dict[str, str] = {}
    for key_id, secret in pairs:
        if not key_id or not secret:
            raise ValueError(
                f"SigV4 key {key_id or '?'!r}: expected ACCESS_KEY_ID:SECRET_ACCESS_KEY"
            )
        keys[key_id] = secret
    return keys


def verify_sigv4(
    *,
    method: str,
    raw_path: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    keys: Mapping[str, str],
    now: float | None = None,
) -> str | None:
    """Check a request's SigV4 signature against ``keys``.

    :param raw_path: the path and query exactly as received (percent-encoding kept).
    :param headers: every received header (repeated names allowed).
    :param now: the gateway's clock (epoch seconds; default: now).
    :returns: ``None`` when the signature is valid, else the 403 message.
    """
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    received: list[tuple[str, str]] = [(k.lower(), v) for k, v in headers]

    def values(name: str) -> list[str]:
        return [v for k, v in received if k == name]

    auth_values = values("authorization")
    match = _AUTH.fullmatch(auth_values[0]) if len(auth_values) == 1 else None
    if match is None:
        return "Authorization header is not a well-formed AWS4-HMAC-SHA256 signature"
    scope = match["credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        return "Credential should be ACCESS_KEY_ID/DATE/REGION/SERVICE/aws4_request"
    key_id, scope_date, region, service = scope[:4]
    secret = keys.get(key_id)
    if secret is None:
        return _INVALID_KEY
    if service != "execute-api":
        return f"Credential should be scoped to correct service: 'execute-api', not {service!r}."
    signed = match["signed"].split(";")
    if "host" not in signed or "x-amz-date" not in signed:
        return "'Host' and 'X-Amz-Date' must be SignedHeaders in the AWS Authorization."
    if signed != sorted(set(signed)):
        return "SignedHeaders must be lowercase, sorted and unique."
    dates = values("x-amz-date")
    if len(dates) != 1 or not _AMZ_DATE.fullmatch(dates[0]):
        return "X-Amz-Date must be one timestamp formatted YYYYMMDD'T'HHMMSS'Z'."
    amz_date = dates[0]
    try:
        signed_at = timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
    except ValueError:
        return "X-Amz-Date must be one timestamp formatted YYYYMMDD'T'HHMMSS'Z'."
    clock = time.time() if now is None else now
    if abs(clock - signed_at) > MAX_CLOCK_SKEW:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(clock))
        return (
            f"Signature expired: {amz_date} is more than {MAX_CLOCK_SKEW // 60} minutes "
            f"from the gateway's time {stamp}."
        )
    if scope_date != amz_date[:8]:
        return "Credential date does not match X-Amz-Date."
    if values("x-amz-security-token") and "x-amz-security-token" not in signed:
        return "X-Amz-Security-Token must be a SignedHeader."
    for name in signed:
        if not values(name):
            return f"Signed header {name!r} is missing from the request."
    content_hash = values("x-amz-content-sha256")
    if content_hash and content_hash != [hashlib.sha256(body).hexdigest()]:
        return _MISMATCH

    request: Any = AWSRequest(method=method, url=f"http://{values('host')[0]}{raw_path}", data=body)
    for name in signed:
        for value in values(name):
            request.headers[name] = value
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(key_id, secret), "execute-api", region)
    if signer.signed_headers(signer.headers_to_sign(request)) != ";".join(signed):
        # botocore never signs some headers (User-Agent, Expect, ...): a signature
        # covering them cannot be reproduced.
        return _MISMATCH
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(str(expected), match["signature"]):
        return _MISMATCH
    return None
