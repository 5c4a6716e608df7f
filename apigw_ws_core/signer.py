"""SigV4 signing of Management API calls (service ``execute-api``), and the signing region
of an endpoint. Used by :class:`~apigw_ws_core.http1.ManagementApiTransport`."""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import quote, urlsplit

from botocore.credentials import ReadOnlyCredentials
from botocore.utils import normalize_url_path

__all__ = ["SigV4Signer", "region_from_endpoint"]

_SERVICE = "execute-api"


def region_from_endpoint(endpoint: str) -> str | None:
    """``https://abc.execute-api.eu-west-1.amazonaws.com/prod`` → ``eu-west-1``."""
    host = urlsplit(endpoint).hostname or ""
    parts = host.split(".")
    if "execute-api" in parts:
        idx = parts.index("execute-api")
        if idx + 1 < len(parts):
            return parts[idx + 1]
    return None


class SigV4Signer:
    """SigV4 for ``execute-api``, producing exactly botocore's ``SigV4Auth`` headers.

    botocore re-derives the signing key (four HMACs) and re-parses the URL on every
    request; here the key is cached per (secret, day) and the payload hash comes
    precomputed with the :class:`~apigw_ws_core.transport.Payload`, so a signature costs
    one SHA-256 and one HMAC. The canonical path uses botocore's own normalisation and quoting.
    """

    def __init__(self, region: str, host: str, service: str = _SERVICE):
        self.region = region
        self.service = service
        self.host = host
        self._keys: dict[tuple[str, str], bytes] = {}
        self._stamp_second = -1
        self._stamp = ""

    def _signing_key(self, secret: str, day: str) -> bytes:
        key = self._keys.get((secret, day))
        if key is None:
            k = hmac.new(f"AWS4{secret}".encode(), day.encode(), hashlib.sha256).digest()
            for part in (self.region, self.service, "aws4_request"):
                k = hmac.new(k, part.encode(), hashlib.sha256).digest()
            if len(self._keys) > 8:
                self._keys.clear()
            self._keys[(secret, day)] = key = k
        return key

    def _timestamp(self, now: float) -> str:
        second = int(now)
        if second != self._stamp_second:
            self._stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))
            self._stamp_second = second
        return self._stamp

    def sign(
        self,
        method: str,
        path: str,
        payload_sha256: str,
        credentials: ReadOnlyCredentials,
        now: float | None = None,
        canonical_path: str | None = None,
    ) -> list[tuple[str, str]]:
        """Headers to add for ``method path`` (``path`` as sent, already %-encoded).

        ``canonical_path`` may be passed precomputed (botocore's: the normalised path
        percent-encoded once more, ``safe="/~"``)."""
        stamp, token, authorization = self._sign(
            method, path, payload_sha256, credentials, now, canonical_path
        )
        headers = [("X-Amz-Date", stamp)]
        if token:
            headers.append(("X-Amz-Security-Token", token))
        headers.append(("Authorization", authorization))
        return headers

    def header_lines(
        self,
        method: str,
        path: str,
        payload_sha256: str,
        credentials: ReadOnlyCredentials,
        now: float | None = None,
        canonical_path: str | None = None,
    ) -> str:
        """:meth:`sign` as HTTP/1.1 header lines, each ending in CRLF."""
        stamp, token, authorization = self._sign(
            method, path, payload_sha256, credentials, now, canonical_path
        )
        if token:
            return (
                f"X-Amz-Date: {stamp}\r\nX-Amz-Security-Token: {token}\r\n"
                f"Authorization: {authorization}\r\n"
            )
        return f"X-Amz-Date: {stamp}\r\nAuthorization: {authorization}\r\n"

    def _sign(
        self,
        method: str,
        path: str,
        payload_sha256: str,
        credentials: ReadOnlyCredentials,
        now: float | None,
        canonical_path: str | None,
    ) -> tuple[str, str | None, str]:
        stamp = self._timestamp(time.time() if now is None else now)
        day = stamp[:8]
        token = credentials.token
        if token:
            canonical_headers = (
                f"host:{self.host}\nx-amz-date:{stamp}\nx-amz-security-token:{token}\n"
            )
            signed = "host;x-amz-date;x-amz-security-token"
        else:
            canonical_headers = f"host:{self.host}\nx-amz-date:{stamp}\n"
            signed = "host;x-amz-date"
        if canonical_path is None:
            canonical_path = quote(normalize_url_path(path), safe="/~")
        canonical = f"{method}\n{canonical_path}\n\n{canonical_headers}\n{signed}\n{payload_sha256}"
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        to_sign = (
            f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n"
            f"{hashlib.sha256(canonical.encode('utf-8')).hexdigest()}"
        )
        key = self._signing_key(credentials.secret_key or "", day)
        signature = hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
        authorization = (
            f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}"
        )
        return stamp, token, authorization
