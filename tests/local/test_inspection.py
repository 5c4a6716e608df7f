"""The local-only ``/_local/`` inspection endpoints and the in-process runner helpers."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from apigw_ws_core.local import config_from_backend
from apigw_ws_core.local.testing import LocalGateway, wait_until

pytestmark = pytest.mark.timeout(30)


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_connections_messages_and_stats(
    gw: Any, backend: Any, client: Any, open_connection: Any
) -> None:
    backend.reply("default", body="reply!")
    ws, cid = open_connection(gw, gw.ws_url + "?room=1", user_agent_header="Inspect/1")
    with ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == "reply!"
        client.post_to_connection(ConnectionId=cid, Data=b"pushed")
        assert ws.recv(timeout=5) == "pushed"
        [listed] = get(f"{gw.base_url}/_local/connections")["connections"]
        assert listed["connectionId"] == cid
        assert listed["state"] == "OPEN"
        assert listed["userAgent"] == "Inspect/1"
        assert listed["query"] == [["room", "1"]]
        assert listed["messagesReceived"] == 1 and listed["messagesDelivered"] == 2
        detail = gw.connection(cid)
        assert [(m["source"], m["data"]) for m in detail["messages"]] == [
            ("reply", "reply!"),
            ("management", "pushed"),
        ]
        assert all(m["at"].endswith("Z") for m in detail["messages"])
        stats = gw.stats()
        assert stats["connections"] == {"open": 1, "connecting": 0, "closing": 0}
        assert stats["rss_bytes"] > 0
        counters = stats["counters"]
        assert counters["connects_accepted"] == 1
        assert counters["messages_received"] == 1
        assert counters["messages_delivered"] == 2
        assert counters["management_posts"] == 1
        assert stats["integration_calls"] == 2
    wait_until(lambda: gw.stats()["counters"]["disconnects"] == 1)
    assert gw.connection_ids() == []
    [closed] = gw.connections(closed=True)
    assert closed["connectionId"] == cid and "messages" not in closed
    assert len(gw.messages(cid)) == 2
    assert gw.connection("AAAAAAAAAAAAAAA=") is None
    assert gw.messages("AAAAAAAAAAAAAAA=") == []


def test_message_log_is_bounded(gateway_factory: Any, backend: Any, open_connection: Any) -> None:
    gw = gateway_factory(config_from_backend(backend.url), message_log_size=3)
    client = gw.management_client()
    ws, cid = open_connection(gw)
    with ws:
        for i in range(5):
            client.post_to_connection(ConnectionId=cid, Data=str(i).encode())
            ws.recv(timeout=5)
        assert [m["data"] for m in gw.messages(cid)] == ["2", "3", "4"]


def test_config_endpoint(gw: Any) -> None:
    config = get(f"{gw.base_url}/_local/config")
    assert set(config["api"]["routes"]) == {"$connect", "$disconnect", "$default", "chat"}
    assert config["options"]["special_char_ids"] is True


def test_local_endpoints_can_be_disabled(gateway_factory: Any, backend: Any) -> None:
    gw = gateway_factory(config_from_backend(backend.url), local_endpoints=False)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{gw.base_url}/_local/stats", timeout=5)
    assert info.value.code in (403, 404, 405)


def test_in_process_helpers(backend: Any, ws_connect: Any) -> None:
    gateway = LocalGateway(config_from_backend(backend.url))
    assert gateway.stop() is None  # stopping a gateway that never started is harmless
    with gateway:
        assert gateway.port > 0
        assert gateway.ws_url == f"ws://127.0.0.1:{gateway.port}/local"
        assert gateway.management_endpoint == f"http://127.0.0.1:{gateway.port}/local"
        with ws_connect(gateway.ws_url):
            assert gateway.call(lambda g: len(g.connections)) == 1
            assert gateway.call(lambda g: g.stats()["connections"]["open"]) == 1
        with pytest.raises(RuntimeError):
            gateway.start()
    with pytest.raises(RuntimeError):
        _ = gateway.gateway


def test_port_conflict_is_reported(gw: Any) -> None:
    other = LocalGateway(gw.api, port=gw.port)
    with pytest.raises(OSError):
        other.start()
