"""ManagementApiTransport: the wire, keep-alive, errors, timeouts, TLS, threads, credentials."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import threading
import time

import pytest
from botocore.credentials import RefreshableCredentials

from apigw_ws_core.errors import (
    ConfigurationError,
    GoneError,
    PayloadTooLarge,
    ThrottledError,
    TransportError,
)
from apigw_ws_core.http1 import ManagementApiTransport
from apigw_ws_core.transport import Payload

from .conftest import CREDS
from .server import gone, make_handler, status


def test_post_wire_format(server, transport):
    transport.post("L0SM9cOFvHcCIhw=", b'{"a":1}')
    (req,) = server.requests
    assert req.method == "POST"
    assert req.path == "/dev/@connections/L0SM9cOFvHcCIhw%3D"
    assert req.body == b'{"a":1}'
    assert req.headers["host"] == f"127.0.0.1:{server.port}"
    assert req.headers["content-length"] == "7"
    assert req.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDTEST/")
    assert "/us-east-1/execute-api/aws4_request" in req.headers["authorization"]
    assert "x-amz-date" in req.headers and "content-type" not in req.headers


def test_delete_and_get(server, transport):
    server.handler = lambda req: (
        status(204)
        if req.method == "DELETE"
        else status(
            200, {}, b'{"connectedAt":"2026-01-01T00:00:00.000Z","identity":{"sourceIp":"1.2.3.4"}}'
        )
    )
    transport.delete("abc=")
    info = transport.get("abc=")
    assert info["identity"]["sourceIp"] == "1.2.3.4"
    assert [r.method for r in server.requests] == ["DELETE", "GET"]
    assert "content-length" not in server.requests[0].headers


def test_keep_alive_reuses_one_connection(server, transport):
    for i in range(20):
        transport.post(f"id{i}", b"x")
    assert server.connections == 1
    assert transport.connections_opened == 1


@pytest.mark.parametrize(
    ("reply", "exc", "attr"),
    [
        (gone, GoneError, None),
        (lambda r: status(429, {"Retry-After": "2"}), ThrottledError, ("retry_after", 2.0)),
        (lambda r: status(429), ThrottledError, ("retry_after", None)),
        (lambda r: status(413, {}, b'{"message":"too big"}'), PayloadTooLarge, None),
        (
            lambda r: status(403, {"x-amzn-ErrorType": "ForbiddenException"}),
            TransportError,
            ("status", 403),
        ),
        (lambda r: status(503, {}, b"oops"), TransportError, ("status", 503)),
    ],
)
def test_status_mapping(server, transport, reply, exc, attr):
    server.handler = reply
    with pytest.raises(exc) as info:
        transport.post("abc=", b"x")
    if attr:
        assert getattr(info.value, attr[0]) == attr[1]
    # the connection stays usable after an error status
    server.handler = lambda r: status(200)
    transport.post("abc=", b"x")
    assert server.connections == 1


def test_chunked_http10_and_close_delimited_bodies(server, transport):
    replies = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\n{}\r\n3;x=y\r\nabc\r\n0\r\nTrailer: t\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",  # HTTP/1.0 without keep-alive: closed
        b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"close":1}',  # delimited by close
        b"HTTP/1.1 204 No Content\r\n\r\n",
    ]
    server.handler = make_handler({}, lambda r: replies.pop(0))
    for _ in range(5):
        transport.post("abc=", b"x")
    assert server.connections == 3  # after HTTP/1.0 and after Connection: close


def test_get_reads_chunked_json(server, transport):
    server.handler = lambda r: (
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"a":\r\n2\r\n1}\r\n0\r\n\r\n'
    )
    assert transport.get("x") == {"a": 1}


def test_stale_keep_alive_connection_is_replaced_once(server, transport):
    transport.post("a", b"1")
    server.close_idle_connections()
    transport.post("b", b"2")  # the idle connection is dead: re-sent on a new one
    assert [r.connection_id for r in server.requests] == ["a", "b"]
    assert server.connections == 2


def test_server_closing_without_answer_is_a_network_error(server, transport):
    server.handler = lambda r: "close"
    with pytest.raises(TransportError) as info:
        transport.post("a", b"1")
    assert info.value.status is None
    assert info.value.sent and info.value.ambiguous  # it went out: outcome unknown
    assert len(server.requests) == 1  # a fresh connection is never silently re-sent


def test_partial_status_line_is_a_network_error(server, transport):
    transport.post("warm", b"1")
    server.handler = lambda r: "half"
    with pytest.raises(TransportError) as info:
        transport.post("a", b"1")
    assert info.value.status is None
    assert server.per_id()["a"] == 1


def test_timeout(server):
    server.handler = lambda r: "hang"
    t = ManagementApiTransport(server.url, credentials=CREDS, timeout=0.3)
    try:
        start = time.monotonic()
        with pytest.raises(TransportError, match="timed out") as info:
            t.post("a", b"1")
        assert info.value.status is None
        assert info.value.sent and info.value.ambiguous  # it went out: outcome unknown
        assert time.monotonic() - start < 2
        server.handler = lambda r: status(200)
        t.post("b", b"1")  # the timed-out connection was dropped, a new one works
    finally:
        t.close()


def test_connection_refused_is_a_network_error():
    t = ManagementApiTransport("http://127.0.0.1:9/dev", credentials=CREDS, timeout=1)
    try:
        with pytest.raises(TransportError) as info:
            t.post("a", b"1")
        assert info.value.status is None
        assert not info.value.sent and not info.value.ambiguous  # nothing went out
    finally:
        t.close()


def test_thread_safe_from_many_threads(server, transport):
    errors = []

    def worker(n: int) -> None:
        try:
            for i in range(25):
                transport.post(f"t{n}-{i}", f"{n}-{i}".encode())
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    per = server.per_id()
    assert len(per) == 200 and set(per.values()) == {1}
    assert server.connections <= transport.max_connections


def test_blocking_call_from_the_loop_thread_is_refused(transport):
    async def inner():
        transport.post("a", b"x")

    with pytest.raises(RuntimeError, match="own event loop"):
        transport.run(inner())


def test_apost_from_another_event_loop(server, transport):
    transport.refresh()
    asyncio.run(transport.apost("a", Payload.of(b"x")))
    asyncio.run(transport.apost("b", Payload.of(b"y")))  # a new loop gets its own pool
    assert len(server.requests) == 2


def test_close_stops_the_loop_thread_and_restarts_on_use(server, transport):
    transport.post("a", b"1")
    thread = transport._thread
    assert thread is not None and thread.is_alive()
    transport.close()
    assert not thread.is_alive()
    transport.post("b", b"2")
    assert transport._thread is not None and transport._thread is not thread


def test_refreshable_credentials_are_re_read(server):
    generation = {"n": 0}

    def refresh():
        generation["n"] += 1
        return {
            "access_key": f"AKIDGEN{generation['n']}",
            "secret_key": f"secret{generation['n']}",
            "token": f"token{generation['n']}",
            # already inside the mandatory refresh window: every read refreshes
            "expiry_time": (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)).isoformat(),
        }

    creds = RefreshableCredentials.create_from_metadata(refresh(), refresh, "test")
    t = ManagementApiTransport(server.url, credentials=creds)
    try:
        t.post("a", b"1")
        t.post("b", b"2")
    finally:
        t.close()
    keys = [r.access_key for r in server.requests]
    tokens = [r.headers["x-amz-security-token"] for r in server.requests]
    assert keys[0] != keys[1] and all(k.startswith("AKIDGEN") for k in keys)
    assert tokens[0] != tokens[1]
    assert all("x-amz-security-token" in r.headers["authorization"] for r in server.requests)


def test_credentials_from_the_default_chain(server, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    t = ManagementApiTransport(server.url)
    try:
        t.post("a", b"1")
    finally:
        t.close()
    assert server.requests[0].access_key == "AKIDFROMENV"


def test_no_credentials_is_a_configuration_error(server, monkeypatch, tmp_path):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    import botocore.session

    remote = "https://abc123.execute-api.eu-west-1.amazonaws.com/prod"
    t = ManagementApiTransport(remote, session=botocore.session.Session())
    with pytest.raises(ConfigurationError, match="no AWS credentials"):
        t.post("a", b"1")
    # A loopback endpoint (the local gateway) needs none: dummy keys sign the call.
    t = ManagementApiTransport(server.url, session=botocore.session.Session())
    t.post("a", b"1")
    assert "Credential=local/" in server.requests[0].headers["authorization"]


def test_bad_endpoints_are_rejected():
    for bad in ("ftp://x/y", "not a url", "https://x/y?q=1", ""):
        with pytest.raises(ConfigurationError):
            ManagementApiTransport(bad)


def test_invalid_connection_id(transport):
    with pytest.raises(TransportError) as info:
        transport.post("", b"x")
    assert info.value.status == 400


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_gets_a_fresh_loop(server, transport):
    transport.post("parent", b"1")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0
        try:
            transport.post("child", b"2")
        except BaseException:
            code = 1
        os._exit(code)
    _, rc = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(rc) == 0
    assert server.per_id()["child"] == 1
