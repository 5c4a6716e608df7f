"""The Django chat example in a real browser (headless Chromium via the shared scenario in
``tests/browser/chat.spec.mjs``), started the way ``scripts/demo django`` starts it: two users
chat, a member is refused from the staff room, a dropped connection comes back with a new
token, and an announcement sent with ``manage.py apigw_ws_send`` reaches every browser."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.conftest import ROOT, ChatSite, browser_tools, run_scenario  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.slow]

EXAMPLE = ROOT / "examples" / "django_chat"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def django_demo(browser_tools: str, tmp_path: Path) -> Iterator[ChatSite]:  # noqa: F811
    """``scripts/demo.py django`` on free ports, with its own state directory."""
    port, gateway_port = _free_port(), _free_port()
    env = {**os.environ, "APIGW_WS_DEMO_STATE": str(tmp_path)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    command = [sys.executable, str(ROOT / "scripts" / "demo.py"), "django"]
    command += ["--port", str(port), "--gateway-port", str(gateway_port)]
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output: list[str] = []
    deadline = time.monotonic() + 90
    assert proc.stdout is not None
    for line in proc.stdout:
        output.append(line)
        if "is running" in line or time.monotonic() > deadline:
            break
    threading.Thread(target=lambda: output.extend(proc.stdout or ()), daemon=True).start()
    # The announcement goes out as README's demo does it: scripts/demo announce, which runs
    # manage.py apigw_ws_send ... --all with the environment the demo gave the example.
    announce_cmd = [sys.executable, str(ROOT / "scripts" / "demo.py"), "announce"]
    try:
        assert proc.poll() is None, "".join(output)
        yield ChatSite(
            name="django",
            base_url=f"http://127.0.0.1:{port}",
            gateway_url=f"http://127.0.0.1:{gateway_port}",
            users={"staff": ("alice", "demo"), "member": ("bob", "demo")},
            public_room="room-general",
            private_room="room-staff",
            login_path="/login/",
            extra_env={
                "E2E_ANNOUNCE_CMD": json.dumps(announce_cmd),
                "APIGW_WS_DEMO_STATE": str(tmp_path),
            },
        )
    finally:
        proc.send_signal(2)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "".join(output)


def test_django_chat_in_a_real_browser(browser_tools: str, django_demo: ChatSite):  # noqa: F811
    checks = run_scenario(browser_tools, django_demo)["checks"]
    assert checks["both_connected"] is True
    assert {"alice", "bob"} <= set(checks["presence"])
    assert checks["member_received"] is True and checks["staff_received"] is True
    assert "not allowed" in checks["refusal_notice"].lower()
    assert checks["member_private_connections"] == 0
    assert checks["member_composer_disabled"] is True
    assert checks["staff_private_message"] is True
    assert checks["member_never_saw_private"] is True
    assert checks["reconnected_new_connection"] is True
    assert checks["reconnected_new_token"] is True
    assert checks["received_after_reconnect"] is True
    assert checks["sent_after_reconnect"] is True
    assert checks["console_errors"] == []
    assert checks["announcement_everywhere"] is True
