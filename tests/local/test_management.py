"""The @connections management API, driven by the real boto3 client (and raw HTTP)."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any
from urllib.parse import quote

import pytest
from botocore import UNSIGNED
from botocore.exceptions import ClientError
from websockets.exceptions import ConnectionClosed

from apigw_ws_core.local import config_from_backend
from apigw_ws_core.local.testing import management_client, wait_until

pytestmark = pytest.mark.timeout(30)

FAKE_AUTH = (
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/execute-api/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64
)


def raw(
    method: str, url: str, body: bytes | None = None, auth: str | None = FAKE_AUTH
) -> tuple[int, dict[str, str], bytes]:
    """Make an HTTP request; return status, headers and body (errors included)."""
    request = urllib.request.Request(url, data=body, method=method)
    if auth is not None:
        request.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_post_get_delete_round_trip(
    gw: Any, client: Any, open_connection: Any, disconnects_for: Any
) -> None:
    ws, cid = open_connection(gw, user_agent_header="Agent/1")
    assert "+" in cid and "/" in cid
    before = datetime.now().astimezone()
    response = client.post_to_connection(ConnectionId=cid, Data=b'{"hello": "world"}')
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert ws.recv(timeout=5) == '{"hello": "world"}'
    client.post_to_connection(ConnectionId=cid, Data="ünïcode ✓")
    assert ws.recv(timeout=5) == "ünïcode ✓"
    info = client.get_connection(ConnectionId=cid)
    assert info["Identity"] == {"SourceIp": "127.0.0.1", "UserAgent": "Agent/1"}
    assert info["ConnectedAt"] <= info["LastActiveAt"]
    assert abs((info["LastActiveAt"] - before).total_seconds()) < 5
    response = client.delete_connection(ConnectionId=cid)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=5)
    assert closed.value.rcvd.code == 1000
    assert closed.value.rcvd.reason == "Connection Closed Normally"
    [disconnect] = disconnects_for(cid)
    assert disconnect.header("X-Apigw-Ws-Event-Type") == "DISCONNECT"
    with pytest.raises(client.exceptions.GoneException):
        client.get_connection(ConnectionId=cid)
    with pytest.raises(client.exceptions.GoneException):
        client.delete_connection(ConnectionId=cid)
    record = gw.connection(cid)
    assert record["state"] == "CLOSED"
    assert record["closeCode"] == 1000 and record["closeReason"] == "Connection Closed Normally"
    assert [m["data"] for m in record["messages"]] == ['{"hello": "world"}', "ünïcode ✓"]
    assert all(m["source"] == "management" for m in record["messages"])


def test_bare_connections_path(gw: Any, open_connection: Any) -> None:
    bare = management_client(f"http://127.0.0.1:{gw.port}")
    ws, cid = open_connection(gw)
    with ws:
        bare.post_to_connection(ConnectionId=cid, Data=b"bare")
        assert ws.recv(timeout=5) == "bare"
        assert bare.get_connection(ConnectionId=cid)["Identity"]["SourceIp"] == "127.0.0.1"


def test_get_connection_wire_format(gw: Any, open_connection: Any) -> None:
    ws, cid = open_connection(gw, user_agent_header="UA")
    with ws:
        status, headers, body = raw(
            "GET", f"{gw.management_endpoint}/%40connections/{quote(cid, safe='')}"
        )
    assert status == 200
    data = json.loads(body)
    iso = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert re.fullmatch(iso, data["connectedAt"])
    assert re.fullmatch(iso, data["lastActiveAt"])
    assert data["identity"] == {"sourceIp": "127.0.0.1", "userAgent": "UA"}
    assert headers["x-amzn-RequestId"]


def test_gone_for_unknown_and_closed_ids(
    gw: Any, client: Any, open_connection: Any, disconnects_for: Any
) -> None:
    for name in ("post_to_connection", "get_connection", "delete_connection"):
        kwargs: dict[str, Any] = {"ConnectionId": "AAAAAAAAAAAAAAA="}
        if name == "post_to_connection":
            kwargs["Data"] = b"x"
        with pytest.raises(client.exceptions.GoneException) as info:
            getattr(client, name)(**kwargs)
        assert info.value.response["Error"]["Code"] == "GoneException"
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 410
    ws, cid = open_connection(gw)
    ws.close()
    disconnects_for(cid)
    with pytest.raises(client.exceptions.GoneException):
        client.post_to_connection(ConnectionId=cid, Data=b"late")
    status, headers, body = raw(
        "POST", f"{gw.management_endpoint}/@connections/{quote(cid, safe='')}", b"x"
    )
    assert status == 410
    assert headers["x-amzn-ErrorType"] == "GoneException"
    assert "message" in json.loads(body)


def test_bad_request_for_malformed_ids(gw: Any, client: Any) -> None:
    for bad in ("not-an-id", "short=", "abcdefghijklmnop"):
        with pytest.raises(ClientError) as info:
            client.post_to_connection(ConnectionId=bad, Data=b"x")
        assert info.value.response["Error"]["Code"] == "BadRequestException"
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # An unencoded '/' in the id makes an extra path segment: still 400, not 404.
    status, headers, _ = raw("GET", f"{gw.management_endpoint}/@connections/abc/def=")
    assert status == 400 and headers["x-amzn-ErrorType"] == "BadRequestException"
    status, _, _ = raw("GET", f"{gw.management_endpoint}/@connections/")
    assert status == 400


def test_payload_limit(gw: Any, client: Any, open_connection: Any) -> None:
    ws, cid = open_connection(gw)
    with ws:
        client.post_to_connection(ConnectionId=cid, Data=b"a" * 131072)
        assert len(ws.recv(timeout=5)) == 131072
        with pytest.raises(client.exceptions.PayloadTooLargeException) as info:
            client.post_to_connection(ConnectionId=cid, Data=b"a" * 131073)
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
        # Also for unknown ids: the size is checked first.
        with pytest.raises(client.exceptions.PayloadTooLargeException):
            client.post_to_connection(ConnectionId="AAAAAAAAAAAAAAA=", Data=b"a" * 200_000)


def test_forbidden_wrong_stage_and_missing_or_malformed_auth(gw: Any, open_connection: Any) -> None:
    ws, cid = open_connection(gw)
    with ws:
        wrong_stage = management_client(f"http://127.0.0.1:{gw.port}/prod")
        with pytest.raises(wrong_stage.exceptions.ForbiddenException):
            wrong_stage.post_to_connection(ConnectionId=cid, Data=b"x")
        unsigned = management_client(gw.management_endpoint, signature_version=UNSIGNED)
        with pytest.raises(unsigned.exceptions.ForbiddenException):
            unsigned.post_to_connection(ConnectionId=cid, Data=b"x")
        url = f"{gw.management_endpoint}/@connections/{quote(cid, safe='')}"
        for auth in (
            None,
            "Bearer abc",
            "AWS4-HMAC-SHA256 Credential=a/20260101/us-east-1/s3/"
            "aws4_request, SignedHeaders=host, Signature=" + "0" * 64,
        ):
            status, headers, body = raw("POST", url, b"x", auth=auth)
            assert status == 403
            assert headers["x-amzn-ErrorType"] == "ForbiddenException"
            assert json.loads(body)["message"]
        status, _, _ = raw("PUT", url, b"x")
        assert status == 403
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.2)


def test_sigv4_check_can_be_disabled(
    gateway_factory: Any, backend: Any, open_connection: Any
) -> None:
    gw = gateway_factory(config_from_backend(backend.url), require_sigv4=False)
    ws, cid = open_connection(gw)
    with ws:
        status, _, _ = raw(
            "POST",
            f"{gw.management_endpoint}/@connections/{quote(cid, safe='')}",
            b"anon",
            auth=None,
        )
        assert status == 200
        assert ws.recv(timeout=5) == "anon"


def test_throttling(gateway_factory: Any, backend: Any, open_connection: Any) -> None:
    gw = gateway_factory(config_from_backend(backend.url), throttle_rps=1, throttle_burst=2)
    ws, cid = open_connection(gw)
    client = management_client(gw.management_endpoint)
    with ws:
        client.get_connection(ConnectionId=cid)
        client.get_connection(ConnectionId=cid)
        with pytest.raises(client.exceptions.LimitExceededException) as info:
            client.get_connection(ConnectionId=cid)
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
        # botocore treats LimitExceededException as throttling and retries it.
        patient = management_client(gw.management_endpoint, max_attempts=5)
        patient.post_to_connection(ConnectionId=cid, Data=b"eventually")
        assert ws.recv(timeout=5) == "eventually"
    assert gw.stats()["counters"]["management_throttled"] >= 1


def test_injected_429_every_nth_post(
    gateway_factory: Any, backend: Any, open_connection: Any
) -> None:
    gw = gateway_factory(config_from_backend(backend.url), inject_429_every=3)
    ws, cid = open_connection(gw)
    client = management_client(gw.management_endpoint)  # no retries
    outcomes = []
    with ws:
        for n in range(6):
            try:
                client.post_to_connection(ConnectionId=cid, Data=f"m{n}".encode())
                outcomes.append("ok")
            except client.exceptions.LimitExceededException:
                outcomes.append("429")
        client.get_connection(ConnectionId=cid)  # GETs are never injected
        assert [ws.recv(timeout=5) for _ in range(4)] == ["m0", "m1", "m3", "m4"]
    assert outcomes == ["ok", "ok", "429", "ok", "ok", "429"]
    assert gw.stats()["counters"]["management_injected_429"] == 2


def test_injected_5xx_after_delivery_and_hang(
    gateway_factory: Any, backend: Any, open_connection: Any
) -> None:
    gw = gateway_factory(config_from_backend(backend.url), inject_5xx_every=2)
    ws, cid = open_connection(gw)
    client = management_client(gw.management_endpoint)  # no retries
    outcomes = []
    with ws:
        for n in range(4):
            try:
                client.post_to_connection(ConnectionId=cid, Data=f"m{n}".encode())
                outcomes.append("ok")
            except client.exceptions.ClientError as exc:
                outcomes.append(str(exc.response["ResponseMetadata"]["HTTPStatusCode"]))
        # a 500 answer still delivered the message
        assert [ws.recv(timeout=5) for _ in range(4)] == ["m0", "m1", "m2", "m3"]
        assert outcomes == ["ok", "500", "ok", "500"]
        assert gw.stats()["counters"]["management_injected_5xx"] == 2

        assert gw.faults(inject_5xx_every=0, inject_hang_every=1)["inject_hang_every"] == 1
        impatient = management_client(gw.management_endpoint, read_timeout=0.5)
        started = time.monotonic()
        with pytest.raises(Exception, match=r"(?i)timeout|timed out"):
            impatient.post_to_connection(ConnectionId=cid, Data=b"lost answer")
        assert time.monotonic() - started < 3
        assert ws.recv(timeout=5) == "lost answer"  # delivered, never answered
        assert gw.stats()["counters"]["management_injected_hang"] == 1
        assert gw.faults(inject_hang_every=0)["inject_hang_every"] == 0
        client.post_to_connection(ConnectionId=cid, Data=b"fine")
        assert ws.recv(timeout=5) == "fine"


def test_faults_endpoint_validates(gateway_factory: Any, backend: Any) -> None:
    gw = gateway_factory(config_from_backend(backend.url))
    assert gw.faults() == {
        "inject_429_every": 0,
        "inject_5xx_every": 0,
        "inject_hang_every": 0,
        "drop_disconnect_every": 0,
    }
    for bad in ({"inject_5xx_every": -1}, {"nope": 1}, {"inject_hang_every": "2"}):
        with pytest.raises(urllib.error.HTTPError) as info:
            gw.faults(**bad)
        assert info.value.code == 400


def test_dropped_disconnects(gateway_factory: Any, backend: Any, open_connection: Any) -> None:
    gw = gateway_factory(config_from_backend(backend.url), drop_disconnect_every=2)
    for _ in range(4):
        ws, _cid = open_connection(gw)
        ws.close()
    wait_until(lambda: gw.stats()["counters"]["disconnects"] == 4)
    wait_until(lambda: len(backend.requests_for("disconnect")) == 2)
    time.sleep(0.2)
    assert len(backend.requests_for("disconnect")) == 2
    assert gw.stats()["counters"]["disconnects_dropped"] == 2


def test_full_client_buffer_gives_429(gateway_factory: Any, backend: Any, raw_client: Any) -> None:
    gw = gateway_factory(config_from_backend(backend.url), write_buffer_high_water=256 * 1024)
    client = management_client(gw.management_endpoint)
    stuck = raw_client("127.0.0.1", gw.port, "/local", rcvbuf=4096)
    assert stuck.status == 101
    cid = backend.wait_for("connect")[0].connection_id
    payload = b"z" * 100_000
    started = time.monotonic()
    with pytest.raises(client.exceptions.LimitExceededException) as info:
        for _ in range(2000):
            client.post_to_connection(ConnectionId=cid, Data=payload)
    assert "buffer" in info.value.response["Error"]["Message"]
    assert time.monotonic() - started < 20
    stuck.drop()


def test_management_latency(gateway_factory: Any, backend: Any, open_connection: Any) -> None:
    gw = gateway_factory(config_from_backend(backend.url), management_latency_ms=250)
    ws, cid = open_connection(gw)
    client = management_client(gw.management_endpoint)
    with ws:
        started = time.monotonic()
        client.get_connection(ConnectionId=cid)
        assert time.monotonic() - started >= 0.25
