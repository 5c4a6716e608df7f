"""Connection lifecycle: timeouts and every close path fire ``$disconnect`` exactly once."""

from __future__ import annotations

import time
from typing import Any

import attrs
import pytest
from websockets.exceptions import ConnectionClosed

from apigw_ws_core.local import ApiConfig, config_from_backend
from apigw_ws_core.local.testing import LocalGateway, management_client, wait_until

pytestmark = pytest.mark.timeout(30)


def close_frame(ws: Any, timeout: float = 5.0) -> tuple[int, str]:
    """Wait for the server's close; return code and reason."""
    with pytest.raises(ConnectionClosed) as info:
        while True:
            ws.recv(timeout=timeout)
    assert info.value.rcvd is not None
    return info.value.rcvd.code, info.value.rcvd.reason


def last_closed(gw: Any, cid: str) -> dict[str, Any]:
    """The closed-connection record of ``cid``."""
    return wait_until(
        lambda: next((c for c in gw.connections(closed=True) if c["connectionId"] == cid), None)
    )


def with_disconnect_status(api: ApiConfig) -> ApiConfig:
    """Map the disconnect status into headers (generic mappings reach every context variable)."""
    route = api.routes["$disconnect"]
    params = dict(route.integration.request_parameters)
    params["integration.request.header.X-Close-Code"] = "context.disconnectStatusCode"
    params["integration.request.header.X-Close-Reason"] = "context.disconnectReason"
    integration = attrs.evolve(route.integration, request_parameters=params)
    routes = dict(api.routes)
    routes["$disconnect"] = attrs.evolve(route, integration=integration)
    return api.replace(routes=routes.values())


def test_idle_timeout_closes_1001(
    gateway_factory: Any, backend: Any, open_connection: Any, disconnects_for: Any
) -> None:
    gw = gateway_factory(with_disconnect_status(config_from_backend(backend.url)), idle_timeout=0.4)
    ws, cid = open_connection(gw)
    started = time.monotonic()
    assert close_frame(ws) == (1001, "Going away")
    assert 0.35 < time.monotonic() - started < 2.0
    [disconnect] = disconnects_for(cid)
    assert disconnect.header("X-Close-Code") == "1001"
    assert disconnect.header("X-Close-Reason") == "Going away"
    assert last_closed(gw, cid)["closeCode"] == 1001


def test_delete_disconnect_status_via_mappings(
    gateway_factory: Any, backend: Any, open_connection: Any, disconnects_for: Any
) -> None:
    gw = gateway_factory(with_disconnect_status(config_from_backend(backend.url)))
    ws, cid = open_connection(gw)
    with ws:
        management_client(f"http://127.0.0.1:{gw.port}").delete_connection(ConnectionId=cid)
        [disconnect] = disconnects_for(cid)
    assert disconnect.header("X-Close-Code") == "1000"
    assert disconnect.header("X-Close-Reason") == "Connection Closed Normally"


def test_activity_keeps_a_connection_alive(
    gateway_factory: Any, backend: Any, open_connection: Any
) -> None:
    gw = gateway_factory(config_from_backend(backend.url), idle_timeout=0.8)
    client = management_client(gw.management_endpoint)
    ws, cid = open_connection(gw)
    with ws:
        for i in range(6):
            time.sleep(0.2)
            if i % 2:
                ws.send("keepalive")
            else:
                client.post_to_connection(ConnectionId=cid, Data=b"push")
                assert ws.recv(timeout=5) == "push"
        assert gw.connection_ids() == [cid]


def test_max_duration_closes_even_active_connections(
    gateway_factory: Any, backend: Any, open_connection: Any, disconnects_for: Any
) -> None:
    gw = gateway_factory(config_from_backend(backend.url), max_duration=0.6)
    ws, cid = open_connection(gw)
    started = time.monotonic()
    with pytest.raises(ConnectionClosed) as info:
        while True:
            ws.send("busy")
            time.sleep(0.05)
    assert 0.55 < time.monotonic() - started < 2.5
    assert info.value.rcvd is not None and info.value.rcvd.code == 1001
    assert len(disconnects_for(cid)) == 1


def test_client_close_reports_its_code(gw: Any, open_connection: Any, disconnects_for: Any) -> None:
    ws, cid = open_connection(gw)
    ws.close(code=4000, reason="bye")
    assert len(disconnects_for(cid)) == 1
    record = last_closed(gw, cid)
    assert (record["closeCode"], record["closeReason"]) == (4000, "bye")


def test_abrupt_drop_reports_1006(
    gw: Any, backend: Any, raw_client: Any, disconnects_for: Any
) -> None:
    client = raw_client("127.0.0.1", gw.port, "/local")
    assert client.status == 101
    cid = backend.wait_for("connect")[0].connection_id
    client.drop()
    assert len(disconnects_for(cid)) == 1
    assert last_closed(gw, cid)["closeCode"] == 1006


def test_force_close_hook_with_a_chosen_code(
    gw: Any, open_connection: Any, disconnects_for: Any
) -> None:
    ws, cid = open_connection(gw)
    assert gw.force_close(cid, 4001, "test says so")
    assert close_frame(ws) == (4001, "test says so")
    assert len(disconnects_for(cid)) == 1
    assert last_closed(gw, cid)["closeCode"] == 4001
    assert not gw.force_close(cid, 4001)


def test_force_close_hook_abort(gw: Any, open_connection: Any, disconnects_for: Any) -> None:
    ws, cid = open_connection(gw)
    assert gw.force_close(cid, abort=True)
    with pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=5)
    assert info.value.rcvd is None  # no close frame: the TCP connection was dropped
    assert len(disconnects_for(cid)) == 1
    assert last_closed(gw, cid)["closeCode"] == 1006


def test_force_close_hook_validation(gw: Any, open_connection: Any) -> None:
    import urllib.error

    ws, cid = open_connection(gw)
    with ws:
        for code in (999, 1006, 5000):
            with pytest.raises(urllib.error.HTTPError) as info:
                gw.force_close(cid, code)
            assert info.value.code == 400
        assert not gw.force_close("AAAAAAAAAAAAAAA=", 1000)


def test_server_shutdown_closes_1001_and_fires_disconnects(
    backend: Any, open_connection: Any, ws_connect: Any
) -> None:
    gw = LocalGateway(config_from_backend(backend.url)).start()
    try:
        connections = [open_connection(gw) for _ in range(3)]
    finally:
        gw.stop()
    for ws, _cid in connections:
        assert close_frame(ws)[0] == 1001
    # stop() returns only after the $disconnect calls were made.
    done = {r.connection_id for r in backend.requests_for("disconnect")}
    assert done == {cid for _ws, cid in connections}


def test_disconnect_fires_exactly_once_across_close_paths(
    gateway_factory: Any, backend: Any, open_connection: Any, raw_client: Any
) -> None:
    gw = gateway_factory(config_from_backend(backend.url))
    client = management_client(gw.management_endpoint)
    ids = []
    ws, cid = open_connection(gw)
    ws.close()
    ids.append(cid)
    ws, cid = open_connection(gw)
    client.delete_connection(ConnectionId=cid)
    # Client closes at the same time as the server: still one $disconnect.
    ws.close()
    ids.append(cid)
    ws, cid = open_connection(gw)
    ws.send(b"binary")
    ids.append(cid)
    ws2, cid2 = open_connection(gw)
    gw.force_close(cid2, 4002)
    with pytest.raises(client.exceptions.GoneException):
        client.delete_connection(ConnectionId=cid2)
    ids.append(cid2)
    raw = raw_client("127.0.0.1", gw.port, "/local")
    ids.append(backend.wait_for("connect", count=5)[-1].connection_id)
    raw.drop()
    backend.wait_for("disconnect", count=len(ids), timeout=10)
    time.sleep(0.3)
    counts = [sum(r.connection_id == i for r in backend.requests_for("disconnect")) for i in ids]
    assert counts == [1] * len(ids)
    assert gw.stats()["counters"]["disconnects"] == len(ids)
    ws.close()
    ws2.close()
