"""The cached SigV4 signer produces exactly botocore's SigV4Auth headers."""

from __future__ import annotations

import datetime as dt

import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from apigw_ws_core.http1 import ManagementApiTransport
from apigw_ws_core.signer import SigV4Signer
from apigw_ws_core.transport import Payload

NOW = dt.datetime(2026, 3, 14, 15, 9, 26)


def botocore_headers(url, method, body, creds, region, monkeypatch):
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: NOW)
    request = AWSRequest(method=method, url=url, data=body)
    botocore.auth.SigV4Auth(creds, "execute-api", region).add_auth(request)
    return {k: v for k, v in request.headers.items() if k != "Content-Length"}


@pytest.mark.parametrize(
    ("endpoint", "cid"),
    [
        ("https://abc123.execute-api.eu-west-1.amazonaws.com/prod", "L0SM9cOFvHcCIhw="),
        ("https://abc123.execute-api.eu-west-1.amazonaws.com/prod/", "a+b/c=d"),
        ("http://127.0.0.1:8001/local", "R1kmxc2VNjMCFIA="),
        ("https://ws.example.com", "id with space~é"),
        ("https://ws.example.com:8443/base/path", "x.y_z-1"),
    ],
)
@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzEXAMPLETOKEN//+=="])
@pytest.mark.parametrize("method", ["POST", "GET", "DELETE"])
def test_same_headers_as_botocore(endpoint, cid, token, method, monkeypatch):
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    transport = ManagementApiTransport(endpoint, region="eu-west-1", credentials=creds)
    path, canonical = transport.path_for(cid)
    body = b'{"hello":"world"}' if method == "POST" else b""
    url = f"{transport.scheme}://{transport.host_header}{path}"
    expected = botocore_headers(
        url, method, body, creds.get_frozen_credentials(), "eu-west-1", monkeypatch
    )
    payload = Payload.of(body)
    ours = dict(
        transport._signer.sign(
            method,
            path,
            payload.sha256,
            creds.get_frozen_credentials(),
            now=NOW.replace(tzinfo=dt.UTC).timestamp(),
            canonical_path=canonical,
        )
    )
    assert ours == expected
    # without the precomputed canonical path, the signer derives the same one
    assert (
        dict(
            transport._signer.sign(
                method,
                path,
                payload.sha256,
                creds.get_frozen_credentials(),
                now=NOW.replace(tzinfo=dt.UTC).timestamp(),
            )
        )
        == expected
    )


def test_path_matches_botocore_url_encoding():
    t = ManagementApiTransport("http://127.0.0.1:8001/dev", region="us-east-1")
    assert t.path_for("abc+/=")[0] == "/dev/@connections/abc%2B%2F%3D"
    assert t.path_for("L0SM9cOFvHcCIhw=")[0] == "/dev/@connections/L0SM9cOFvHcCIhw%3D"
    bare = ManagementApiTransport("http://127.0.0.1:8001", region="us-east-1")
    assert bare.path_for("x")[0] == "/@connections/x"


def test_signing_key_cached_per_secret_and_day():
    signer = SigV4Signer("us-east-1", "h")
    creds = Credentials("A", "s1").get_frozen_credentials()
    signer.sign("POST", "/p", Payload.of(b"").sha256, creds, now=0)
    signer.sign("POST", "/q", Payload.of(b"").sha256, creds, now=10)
    assert len(signer._keys) == 1
    signer.sign("POST", "/q", Payload.of(b"").sha256, creds, now=86400 * 2)
    signer.sign(
        "POST", "/q", Payload.of(b"").sha256, Credentials("A", "s2").get_frozen_credentials(), now=0
    )
    assert len(signer._keys) == 3


def test_region_from_endpoint_record_or_explicit():
    assert (
        ManagementApiTransport("https://a.execute-api.ap-south-1.amazonaws.com/x").region
        == "ap-south-1"
    )
    assert (
        ManagementApiTransport("https://ws.example.com/x", region="eu-north-1").region
        == "eu-north-1"
    )
