"""Strict SigV4 (``--sigv4-key``): signatures recomputed with botocore's signer."""

from __future__ import annotations

import http.client
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock
from urllib.parse import quote, urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from apigw_ws_core.local import ConfigError, GatewayOptions, sigv4_keys_from_file
from apigw_ws_core.local.cli import add_arguments, build_options
from apigw_ws_core.local.sigv4 import parse_sigv4_keys, verify_sigv4
from apigw_ws_core.local.testing import GatewayProcess, management_client

pytestmark = pytest.mark.timeout(60)

KEY_ID = "AKIDLOCALTEST"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
OTHER_ID = "ASIATEMPORARY"
OTHER_SECRET = "temporary/secret+key="


@pytest.fixture
def strict(gateway_factory: Any, api: Any) -> Any:
    """A gateway with strict SigV4 for two keys."""
    return gateway_factory(api, sigv4_keys={KEY_ID: SECRET_KEY, OTHER_ID: OTHER_SECRET})


def client_for(gw: Any, key_id: str = KEY_ID, secret: str = SECRET_KEY, **kwargs: Any) -> Any:
    return management_client(
        gw.management_endpoint, aws_access_key_id=key_id, aws_secret_access_key=secret, **kwargs
    )


def assert_forbidden(exc_info: Any, message: str) -> None:
    error = exc_info.value.response
    assert error["Error"]["Code"] == "ForbiddenException"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert message in error["Error"]["Message"]


def signed_request(
    gw: Any,
    method: str,
    cid: str,
    body: bytes,
    *,
    key_id: str = KEY_ID,
    secret: str = SECRET_KEY,
    service: str = "execute-api",
) -> AWSRequest:
    """Sign a request as boto3 does (ids percent-encoded with no safe chars)."""
    url = f"{gw.management_endpoint}/@connections/{quote(cid, safe='')}"
    request = AWSRequest(method=method, url=url, data=body)
    SigV4Auth(Credentials(key_id, secret), service, "us-east-1").add_auth(request)
    return request


def send_raw(request: AWSRequest, body: bytes, path: str | None = None) -> tuple[int, Any]:
    """Send a signed request's headers with ``body`` (and ``path``) through http.client."""
    parts = urlsplit(request.url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        headers = {k: str(v) for k, v in request.headers.items()}
        headers["Content-Length"] = str(len(body))
        conn.request(request.method or "POST", path or parts.path, body=body, headers=headers)
        response = conn.getresponse()
        status, error_type, payload = (
            response.status,
            response.getheader("x-amzn-ErrorType"),
            response.read(),
        )
    finally:
        conn.close()
    return status, (error_type, json.loads(payload) if payload else None)


def test_right_key_post_get_delete(strict: Any, open_connection: Any) -> None:
    ws, cid = open_connection(strict)
    assert "+" in cid and "/" in cid and cid.endswith("=")
    client = client_for(strict)
    client.post_to_connection(ConnectionId=cid, Data=b'{"strict": true}')
    assert ws.recv(timeout=5) == '{"strict": true}'
    info = client.get_connection(ConnectionId=cid)
    assert info["Identity"]["SourceIp"] == "127.0.0.1"
    response = client.delete_connection(ConnectionId=cid)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(client.exceptions.GoneException):
        client.get_connection(ConnectionId=cid)


def test_wrong_secret_forbidden(strict: Any, open_connection: Any) -> None:
    _ws, cid = open_connection(strict)
    client = client_for(strict, secret="not-the-secret")
    with pytest.raises(client.exceptions.ForbiddenException) as exc_info:
        client.post_to_connection(ConnectionId=cid, Data=b"x")
    assert_forbidden(exc_info, "signature we calculated does not match")
    with pytest.raises(client.exceptions.ForbiddenException):
        client.get_connection(ConnectionId=cid)
    with pytest.raises(client.exceptions.ForbiddenException):
        client.delete_connection(ConnectionId=cid)
    assert strict.connection(cid)["state"] == "OPEN"
    assert strict.messages(cid) == []


def test_unknown_key_id_forbidden(strict: Any, open_connection: Any) -> None:
    _ws, cid = open_connection(strict)
    client = client_for(strict, key_id="AKIDUNKNOWN")
    with pytest.raises(ClientError) as exc_info:
        client.post_to_connection(ConnectionId=cid, Data=b"x")
    assert_forbidden(exc_info, "security token included in the request is invalid")
    # The default dummy credentials of management_client are not accepted either.
    with pytest.raises(ClientError) as exc_info:
        management_client(strict.management_endpoint).get_connection(ConnectionId=cid)
    assert_forbidden(exc_info, "security token")


def test_tampered_body_and_path_forbidden(strict: Any, open_connection: Any) -> None:
    ws, cid = open_connection(strict)
    _other_ws, other_cid = open_connection(strict)
    request = signed_request(strict, "POST", cid, b"signed body")
    # Untampered, the raw request goes through.
    assert send_raw(request, b"signed body")[0] == 200
    assert ws.recv(timeout=5) == "signed body"
    status, (error_type, payload) = send_raw(request, b"evil body!!")
    assert status == 403 and error_type == "ForbiddenException"
    assert "signature" in payload["message"]
    other_path = urlsplit(request.url).path.replace(quote(cid, safe=""), quote(other_cid, safe=""))
    status, (error_type, _) = send_raw(request, b"signed body", path=other_path)
    assert (status, error_type) == (403, "ForbiddenException")
    # The same id with '+' '/' '=' left raw ('/' then is a path separator) is another path.
    status, _ = send_raw(request, b"signed body", path=urlsplit(request.url).path + "?x=1")
    assert status == 403
    assert [m["data"] for m in strict.messages(cid)] == ["signed body"]
    assert strict.messages(other_cid) == []


def test_tampered_payload_hash_header_forbidden(strict: Any, open_connection: Any) -> None:
    _ws, cid = open_connection(strict)
    request = AWSRequest(
        method="POST",
        url=f"{strict.management_endpoint}/@connections/{quote(cid, safe='')}",
        data=b"signed body",
        headers={"X-Amz-Content-SHA256": "a" * 64},
    )
    SigV4Auth(Credentials(KEY_ID, SECRET_KEY), "execute-api", "us-east-1").add_auth(request)
    status, (error_type, _) = send_raw(request, b"signed body")
    assert (status, error_type) == (403, "ForbiddenException")


def test_wrong_service_forbidden(strict: Any, open_connection: Any) -> None:
    _ws, cid = open_connection(strict)
    request = signed_request(strict, "GET", cid, b"", service="execute-apix")
    status, (error_type, _) = send_raw(request, b"")
    assert (status, error_type) == (403, "ForbiddenException")


@pytest.mark.parametrize("offset", [timedelta(minutes=-6), timedelta(minutes=6)])
def test_stale_x_amz_date_forbidden(strict: Any, open_connection: Any, offset: Any) -> None:
    ws, cid = open_connection(strict)
    client = client_for(strict)
    skewed = datetime.now(UTC).replace(tzinfo=None) + offset
    with mock.patch("botocore.auth.get_current_datetime", return_value=skewed):
        with pytest.raises(client.exceptions.ForbiddenException) as exc_info:
            client.post_to_connection(ConnectionId=cid, Data=b"late")
    assert_forbidden(exc_info, "Signature expired")
    # Within the 5-minute window it is accepted.
    within = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=4)
    with mock.patch("botocore.auth.get_current_datetime", return_value=within):
        client.post_to_connection(ConnectionId=cid, Data=b"in time")
    assert ws.recv(timeout=5) == "in time"


def test_session_token_signed_works(strict: Any, open_connection: Any) -> None:
    ws, cid = open_connection(strict)
    client = client_for(
        strict, key_id=OTHER_ID, secret=OTHER_SECRET, aws_session_token="FwoGZXIvYXdzE//token+="
    )
    client.post_to_connection(ConnectionId=cid, Data="with a session token")
    assert ws.recv(timeout=5) == "with a session token"
    assert client.get_connection(ConnectionId=cid)["Identity"]["SourceIp"] == "127.0.0.1"
    # A token added after signing is not covered by the signature.
    request = signed_request(strict, "POST", cid, b"x", key_id=OTHER_ID, secret=OTHER_SECRET)
    request.headers["X-Amz-Security-Token"] = "unsigned"
    status, (_, payload) = send_raw(request, b"x")
    assert status == 403 and "Security-Token" in payload["message"]


def test_default_mode_still_accepts_any_well_formed_header(gw: Any, open_connection: Any) -> None:
    ws, cid = open_connection(gw)
    client_for(gw, key_id="anything", secret="whatever").post_to_connection(
        ConnectionId=cid, Data=b"lenient"
    )
    assert ws.recv(timeout=5) == "lenient"


def test_local_config_hides_secrets(strict: Any) -> None:
    options = strict._local("GET", "config")["options"]
    assert options["sigv4_keys"] == sorted([KEY_ID, OTHER_ID])
    assert SECRET_KEY not in json.dumps(options)
    assert SECRET_KEY not in repr(strict.gateway.options)


def test_verify_sigv4_unit() -> None:
    request = AWSRequest(
        method="POST", url="http://127.0.0.1:9/dev/@connections/abc%2B%2F%3D", data=b"hi"
    )
    SigV4Auth(Credentials(KEY_ID, SECRET_KEY), "execute-api", "eu-west-1").add_auth(request)
    headers = [(k, str(v)) for k, v in request.headers.items()] + [("Host", "127.0.0.1:9")]
    args: dict[str, Any] = {
        "method": "POST",
        "raw_path": "/dev/@connections/abc%2B%2F%3D",
        "headers": headers,
        "body": b"hi",
        "keys": {KEY_ID: SECRET_KEY},
    }
    assert verify_sigv4(**args) is None
    assert verify_sigv4(**{**args, "raw_path": "/dev/@connections/abc+/="}) is not None
    assert verify_sigv4(**{**args, "method": "DELETE"}) is not None
    assert "security token" in str(verify_sigv4(**{**args, "keys": {"OTHER": SECRET_KEY}}))
    no_date = [(k, v) for k, v in headers if k.lower() != "authorization"] + [
        (
            "Authorization",
            str(request.headers["Authorization"]).replace("host;x-amz-date", "host"),
        )
    ]
    assert "X-Amz-Date" in str(verify_sigv4(**{**args, "headers": no_date}))


def test_parse_keys_and_options() -> None:
    assert parse_sigv4_keys(["A:s1,B:s/2+=", " C:s3 "]) == {"A": "s1", "B": "s/2+=", "C": "s3"}
    assert parse_sigv4_keys({"A": "s"}) == {"A": "s"}
    for bad in (["nocolon"], ["A:"], [":secret"]):
        with pytest.raises(ValueError, match="ACCESS_KEY_ID:SECRET_ACCESS_KEY"):
            parse_sigv4_keys(bad)
    assert dict(GatewayOptions(sigv4_keys=["A:s"]).sigv4_keys) == {"A": "s"}
    with pytest.raises(ConfigError):
        GatewayOptions(sigv4_keys=["A"])
    with pytest.raises(ConfigError, match="require_sigv4"):
        GatewayOptions(sigv4_keys={"A": "s"}, require_sigv4=False)


def test_cli_flag_and_config_file(tmp_path: Any) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    options = build_options(parser.parse_args([]))
    assert dict(options.sigv4_keys) == {}
    options = build_options(
        parser.parse_args(["--sigv4-key", "A:s1,B:s2", "--sigv4-key", "C:s3/+="])
    )
    assert dict(options.sigv4_keys) == {"A": "s1", "B": "s2", "C": "s3/+="}
    with pytest.raises(ConfigError, match="--sigv4-key"):
        build_options(parser.parse_args(["--sigv4-key", "nocolon"]))
    with pytest.raises(ConfigError):
        build_options(parser.parse_args(["--sigv4-key", "A:s", "--no-sigv4-check"]))
    toml = tmp_path / "api.toml"
    toml.write_text('stage = "qa"\nsigv4_keys = ["F:file-secret", "C:old"]\n')
    assert sigv4_keys_from_file(toml) == {"F": "file-secret", "C": "old"}
    options = build_options(parser.parse_args(["--config", str(toml), "--sigv4-key", "C:s3"]))
    assert dict(options.sigv4_keys) == {"F": "file-secret", "C": "s3"}
    as_json = tmp_path / "api.json"
    as_json.write_text(json.dumps({"sigv4_keys": {"J": "json-secret"}}))
    assert sigv4_keys_from_file(as_json) == {"J": "json-secret"}
    as_json.write_text(json.dumps({"sigv4_keys": 3}))
    with pytest.raises(ConfigError):
        sigv4_keys_from_file(as_json)


def test_cli_subprocess_strict(backend: Any, ws_connect: Any) -> None:
    args = ["--backend", backend.url, "--special-char-ids", "--log-level", "warning"]
    with GatewayProcess([*args, "--sigv4-key", f"{KEY_ID}:{SECRET_KEY}"]) as gateway:
        ws = ws_connect(gateway.ws_url)
        cid = backend.wait_for("connect")[0].connection_id
        assert "+" in cid and "/" in cid
        good = gateway.management_client(aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET_KEY)
        good.post_to_connection(ConnectionId=cid, Data=b"from the cli gateway")
        assert ws.recv(timeout=5) == "from the cli gateway"
        bad = gateway.management_client()
        with pytest.raises(bad.exceptions.ForbiddenException):
            bad.post_to_connection(ConnectionId=cid, Data=b"nope")
