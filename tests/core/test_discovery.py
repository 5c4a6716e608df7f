"""Finding the running local gateway (apigw_ws_core.discovery), loopback credentials, and the
``apigw-ws send`` console command's one-line errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from apigw_ws_core import Config, MemoryStorage, WebSocketApp
from apigw_ws_core.discovery import (
    find_local_gateway,
    is_loopback,
    register_local_gateway,
    running_local_gateways,
    secret_digest,
    unregister_local_gateway,
)
from apigw_ws_core.errors import ConfigurationError, InvalidToken
from apigw_ws_core.http1 import ManagementApiTransport
from apigw_ws_core.testing import redeem_token

SECRET = "a-long-enough-secret-value"


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    directory = tmp_path / "runtime"
    monkeypatch.setenv("APIGW_WS_RUNTIME_DIR", str(directory))
    return directory


@pytest.fixture
def listen():
    """``listen()`` -> a listening loopback port standing in for a gateway."""
    socks = []

    def new() -> int:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        socks.append(sock)
        return sock.getsockname()[1]

    yield new
    for sock in socks:
        sock.close()


@pytest.fixture
def listener(listen):
    return listen()


@pytest.fixture
def no_aws_credentials(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("AWS_") and name != "AWS_CA_BUNDLE":
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def test_register_find_unregister(runtime, listener):
    path = register_local_gateway(host="127.0.0.1", port=listener, stage="local", secret=SECRET)
    assert path is not None and path.parent == runtime
    record = json.loads(path.read_text())
    assert SECRET not in path.read_text() and record["secret_sha256"] == secret_digest(SECRET)
    (found,) = running_local_gateways()
    assert found.management_endpoint == f"http://127.0.0.1:{listener}/local"
    assert found.ws_url == f"ws://127.0.0.1:{listener}/local"
    assert find_local_gateway(SECRET) == found
    assert find_local_gateway("another-app-secret-value") is None
    unregister_local_gateway(path)
    assert not path.exists() and running_local_gateways() == []


def test_wildcard_host_is_recorded_as_loopback_and_public_hosts_are_not(runtime, listener):
    path = register_local_gateway(host="0.0.0.0", port=listener, stage="dev")
    assert path is not None
    assert running_local_gateways()[0].management_endpoint == f"http://127.0.0.1:{listener}/dev"
    assert register_local_gateway(host="192.0.2.7", port=listener, stage="dev") is None


def test_files_of_dead_processes_are_removed(runtime, listener):
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    runtime.mkdir(parents=True)
    stale = runtime / "gateway-1-1.json"
    stale.write_text(
        json.dumps(
            {
                "pid": int(proc.stdout),
                "host": "127.0.0.1",
                "port": listener,
                "stage": "local",
                "management_endpoint": "x",
                "ws_url": "y",
                "started": 0,
            }
        )
    )
    (runtime / "gateway-2-2.json").write_text("{not json")
    assert running_local_gateways() == []
    assert list(runtime.iterdir()) == []


def test_choosing_among_several(runtime, listen):
    register_local_gateway(host="127.0.0.1", port=listen(), stage="a", secret=SECRET)
    register_local_gateway(host="127.0.0.1", port=listen(), stage="b", secret="other-secret-xyz")
    # The secret decides; a secretless app cannot tell which is meant.
    assert find_local_gateway(SECRET).stage == "a"
    with pytest.raises(ConfigurationError, match="several local gateways are running"):
        find_local_gateway(None)
    # One gateway without a secret (--lambda) serves an app whose secret matches none.
    register_local_gateway(host="127.0.0.1", port=listen(), stage="lambda", backend="lambda:x:y")
    assert find_local_gateway("unmatched-secret-value").stage == "lambda"


def test_app_without_endpoint_uses_the_discovered_gateway(runtime, listener):
    app = WebSocketApp(storage=MemoryStorage(), config=Config(secret=SECRET))
    with pytest.raises(ConfigurationError, match=r"start the local gateway \(apigw-ws local\)"):
        app.transport
    register_local_gateway(host="127.0.0.1", port=listener, stage="local", secret=SECRET)
    transport = app.transport
    assert isinstance(transport, ManagementApiTransport)
    assert transport.endpoint == f"http://127.0.0.1:{listener}/local"


def test_loopback_needs_no_credentials_aws_does(no_aws_credentials):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("abc.execute-api.eu-west-1.amazonaws.com")
    local = ManagementApiTransport("http://127.0.0.1:8001/local")
    local.refresh()
    assert local._frozen.access_key == "local"
    remote = ManagementApiTransport("https://abc.execute-api.eu-west-1.amazonaws.com/prod")
    with pytest.raises(ConfigurationError, match="no AWS credentials found") as info:
        remote.refresh()
    assert "\n" not in str(info.value)


def _apigw_ws(*args, cwd, env=None):
    return subprocess.run(
        [sys.executable, "-m", "apigw_ws_core", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("module", "args", "expected"),
    [
        (None, ["{}", "--everyone"], "name your app: --app MODULE[:NAME]"),
        (None, ["--app", "nowhere", "{}", "--everyone"], "cannot import 'nowhere': run this from"),
        ("ws = 1\n", ["--app", "mod:ws", "{}", "--everyone"], "is a int, not a WebSocketApp"),
        ("x = 1\n", ["--app", "mod", "{}", "--everyone"], "no WebSocketApp in 'mod'"),
        (
            "raise RuntimeError('boom')\n",
            ["--app", "mod", "{}", "--everyone"],
            "importing 'mod' failed: RuntimeError: boom",
        ),
        (
            "from apigw_ws_core import *\nws = WebSocketApp(storage=MemoryStorage())\n",
            ["--app", "mod", "{broken", "--everyone"],
            "the message is not JSON",
        ),
        (
            "from apigw_ws_core import *\nws = WebSocketApp(storage=MemoryStorage())\n",
            ["--app", "mod:ws", "{}", "--connection-id", "abc="],
            "no Management API endpoint",
        ),
    ],
)
def test_send_cli_errors_are_one_line(tmp_path, runtime, module, args, expected):
    if module is not None:
        (tmp_path / "mod.py").write_text(module)
    result = _apigw_ws("send", *args, cwd=tmp_path, env={"APIGW_WS_APP": ""})
    assert result.returncode in (1, 2), result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr


def test_send_cli_reaches_a_discovered_gateway(tmp_path, runtime, no_aws_credentials):
    """A fake Management API on loopback, registered as a gateway: `apigw-ws send --app`
    finds it with no configuration and no AWS credentials, and signs with dummy keys."""
    (tmp_path / "mod.py").write_text(
        textwrap.dedent(f"""
        from apigw_ws_core import Config, MemoryStorage, WebSocketApp
        ws = WebSocketApp(storage=MemoryStorage(), config=Config(secret={SECRET!r}))
    """)
    )
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import http.server, sys
            from apigw_ws_core.discovery import register_local_gateway
            class H(http.server.BaseHTTPRequestHandler):
                def do_POST(self):
                    body = self.rfile.read(int(self.headers["Content-Length"]))
                    auth = self.headers.get("Authorization", "")
                    print(self.path, body.decode(), auth.split("/")[0], flush=True)
                    self.send_response(200); self.send_header("Content-Length", "0")
                    self.end_headers()
                def log_message(self, *a): pass
            srv = http.server.HTTPServer(("127.0.0.1", 0), H)
            register_local_gateway(host="127.0.0.1", port=srv.server_port, stage="local",
                                   secret={SECRET!r})
            print("ready", flush=True)
            srv.serve_forever()
        """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout.readline().strip() == "ready"
        result = _apigw_ws(
            "send", "--app", "mod", '{"type": "hi"}', "--connection-id", "Abc=", cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr
        assert "Delivered 1;" in result.stdout
        line = server.stdout.readline().split()
        assert line == [
            "/local/@connections/Abc%3D",
            '{"type":"hi"}',
            "AWS4-HMAC-SHA256",
            "Credential=local",
        ]
    finally:
        server.kill()
        server.wait()


def test_flask_send_errors_are_one_line(runtime):
    flask = pytest.importorskip("flask")
    from apigw_ws_flask import ApigwWebSocket

    app = flask.Flask("one_line")
    app.config["APIGW_WS_SECRET"] = SECRET
    ApigwWebSocket(app, storage=MemoryStorage())
    result = app.test_cli_runner().invoke(args=["apigw-ws", "send", "{}", "--everyone"])
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: no Management API endpoint: start the local gateway")


@pytest.mark.django_db
def test_django_send_errors_are_one_line(runtime, settings):
    pytest.importorskip("django")
    from django.core.management import CommandError, call_command

    settings.APIGW_WS = {**settings.APIGW_WS, "TRANSPORT": None}
    with pytest.raises(CommandError) as info:
        call_command("apigw_ws_send", "{}", "--connection", "abc=", "--no-progress")
    assert str(info.value).startswith("no Management API endpoint: start the local gateway")


def test_token_commands(tmp_path, runtime):
    (tmp_path / "mod.py").write_text(
        textwrap.dedent("""
        from apigw_ws_core import Config, MemoryStorage, WebSocketApp
        # tokens are signed: the process that handles $connect needs the same key
        ws = WebSocketApp(config=Config(token_key="k" * 32), storage=MemoryStorage())
    """)
    )
    result = _apigw_ws("token", "--app", "mod", "alice", cwd=tmp_path)
    assert result.returncode == 0 and len(result.stdout.strip()) >= 32, result.stderr
    verifier = WebSocketApp(config=Config(token_key="k" * 32), storage=MemoryStorage())
    assert redeem_token(verifier, result.stdout.strip()) == "alice"
    result = _apigw_ws("token", "--app", "nowhere", "alice", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1

    flask = pytest.importorskip("flask")
    from apigw_ws_flask import ApigwWebSocket

    app = flask.Flask("tokens")
    app.config["APIGW_WS_SECRET"] = SECRET
    ws = ApigwWebSocket(app, storage=MemoryStorage())
    result = app.test_cli_runner().invoke(args=["apigw-ws", "token", "bob"])
    assert result.exit_code == 0
    token = result.output.strip()
    with app.app_context():
        assert redeem_token(ws.core, token) == "bob"
        with pytest.raises(InvalidToken):  # single use
            redeem_token(ws.core, token)


@pytest.mark.django_db
def test_django_token_command(runtime):
    pytest.importorskip("django")
    from io import StringIO

    from django.contrib.auth import get_user_model
    from django.core.management import CommandError, call_command

    from apigw_ws_core.testing import redeem_token
    from apigw_ws_django import get_app

    alice = get_user_model().objects.create_user("alice-token", password="x")
    out = StringIO()
    call_command("apigw_ws_token", "alice-token", stdout=out)
    app = get_app()
    token = out.getvalue().strip()
    assert redeem_token(app, token) == str(alice.pk)
    with pytest.raises(InvalidToken):  # single use
        redeem_token(app, token)
    with pytest.raises(CommandError, match="no user with id or username 'nobody'"):
        call_command("apigw_ws_token", "nobody")
