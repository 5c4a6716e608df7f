"""The command line: flags, the ready line, the subprocess runner and graceful shutdown."""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
from typing import Any

import pytest

from apigw_ws_core.local import ConfigError
from apigw_ws_core.local.cli import add_arguments, build_api, build_options, ready_line
from apigw_ws_core.local.testing import READY_LINE, GatewayProcess

pytestmark = pytest.mark.timeout(60)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_subprocess_gateway_end_to_end(backend: Any, ws_connect: Any) -> None:
    args = [
        "--backend",
        backend.url,
        "--route",
        "chat",
        "--secret",
        "cli-secret",
        "--stage",
        "dev",
        "--special-char-ids",
        "--log-level",
        "warning",
    ]
    with GatewayProcess(args) as gateway:
        assert gateway.ws_url.endswith("/dev")
        assert gateway.management_endpoint.endswith("/dev")
        ready = [line for line in gateway.output if READY_LINE.search(line)]
        assert len(ready) == 1 and ready[0].startswith("apigw-ws local ready ws=ws://127.0.0.1:")
        ws = ws_connect(gateway.ws_url + "?channel=x")
        connect = backend.wait_for("connect")[0]
        cid = connect.connection_id
        assert connect.header("X-Apigw-Ws-Secret") == "cli-secret"
        assert connect.header("X-Apigw-Ws-Stage") == "dev"
        assert "+" in cid and "/" in cid
        ws.send(json.dumps({"action": "chat"}))
        backend.wait_for("chat")
        client = gateway.management_client()
        client.post_to_connection(ConnectionId=cid, Data=b"from boto3")
        assert ws.recv(timeout=5) == "from boto3"
        stats = gateway.stats()
        assert stats["pid"] == gateway.pid
        assert stats["rss_bytes"] > 1_000_000
        assert stats["connections"]["open"] == 1
        assert gateway.connection_ids() == [cid]
        assert [m["data"] for m in gateway.messages(cid)] == ["from boto3"]
        assert gateway.stop() == 0
    with pytest.raises(Exception) as closed:
        ws.recv(timeout=5)
    assert getattr(closed.value, "rcvd", None) is not None and closed.value.rcvd.code == 1001
    # SIGTERM is graceful: the $disconnect call was made before the process exited.
    assert [r.connection_id for r in backend.requests_for("disconnect")] == [cid]


def test_subprocess_with_config_file(backend: Any, ws_connect: Any, tmp_path: Any) -> None:
    config = tmp_path / "api.toml"
    config.write_text(
        f'stage = "qa"\n[routes."$default"]\nuri = "{backend.url}default"\ntwo_way = true\n'
    )
    backend.reply("default", body="pong")
    with GatewayProcess(["--config", str(config)]) as gateway:
        assert gateway.ws_url.endswith("/qa")
        with ws_connect(gateway.ws_url) as ws:
            ws.send("ping")
            assert ws.recv(timeout=5) == "pong"


def test_invalid_flags_exit_2() -> None:
    for argv in (
        ["--backend", "not-a-url"],
        ["--backend", "http://x/", "--config", "f.toml"],
        ["--config", "/nonexistent/api.toml"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "apigw_ws_core.local", "--port", "0", *argv],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("apigw-ws local: ")
        assert result.stdout == ""


def test_port_in_use_exits_1() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "apigw_ws_core.local", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert "cannot listen" in result.stderr


def test_build_api_variants(tmp_path: Any) -> None:
    api = build_api(parse("--backend", "http://127.0.0.1:1/ws", "--route", "a", "--one-way"))
    assert set(api.routes) == {"$connect", "$disconnect", "$default", "a"}
    assert not api.routes["a"].two_way and api.stage == "local"
    assert api.routes["$default"].integration.uri == "http://127.0.0.1:1/ws/default"

    api = build_api(parse("--lambda", "json:dumps", "--route", "x", "--api-id", "abc1234567"))
    assert api.routes["x"].integration.type == "AWS_PROXY" and api.api_id == "abc1234567"

    config = tmp_path / "c.json"
    config.write_text(
        json.dumps(
            {
                "stage": "s1",
                "routes": {"$default": {"type": "AWS_PROXY", "uri": "not_imported_yet:handler"}},
            }
        )
    )
    api = build_api(parse("--config", str(config), "--stage", "s2", "--lambda", "json:loads"))
    assert api.stage == "s2"
    assert api.routes["$default"].integration.handler is json.loads

    empty = build_api(parse())
    assert dict(empty.routes) == {} and empty.stage == "local"

    for argv in (
        ("--route", "x"),
        ("--secret", "s"),
        ("--config", str(config), "--route", "x"),
        ("--lambda", "no_such_module_here:x", "--from-apigw", "abc"),
    ):
        with pytest.raises(ConfigError):
            build_api(parse(*argv))


def test_build_options_and_ready_line() -> None:
    options = build_options(
        parse(
            "--idle-timeout",
            "5",
            "--max-duration",
            "60",
            "--management-latency-ms",
            "20",
            "--throttle-rps",
            "100",
            "--throttle-burst",
            "10",
            "--write-buffer-limit",
            "1000",
            "--special-char-ids",
            "--message-log-size",
            "3",
            "--no-sigv4-check",
            "--no-local-endpoints",
            "--inject-5xx-every",
            "7",
            "--inject-hang-every",
            "11",
            "--drop-disconnect-every",
            "1",
        )
    )
    assert (options.inject_5xx_every, options.inject_hang_every) == (7, 11)
    assert options.drop_disconnect_every == 1
    assert (options.idle_timeout, options.max_duration) == (5, 60)
    assert options.management_latency_ms == 20
    assert (options.throttle_rps, options.throttle_burst) == (100, 10)
    assert options.write_buffer_high_water == 1000
    assert options.special_char_ids and options.message_log_size == 3
    assert not options.require_sigv4 and not options.local_endpoints
    assert ready_line("0.0.0.0", 80, "dev") == (
        "apigw-ws local ready ws=ws://127.0.0.1:80/dev management=http://127.0.0.1:80/dev"
    )
    assert "ws=ws://[::1]:9/s " in ready_line("::1", 9, "s")
