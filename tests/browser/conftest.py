"""Real-browser tests: the chat examples in Debian's headless Chromium, through the local gateway.

The browser is driven by ``chat.spec.mjs`` (Node + playwright-core, which never downloads a
browser). ``scripts/browser-deps`` installs both. Without them these tests skip with the
reason; under ``APIGW_WS_REQUIRE_SERVICES=1`` (CI) a missing tool is a failure instead.
Screenshots go to ``test-artifacts/`` (override with ``APIGW_WS_ARTIFACTS``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = Path(__file__).with_name("chat.spec.mjs")
CHROMIUM = os.environ.get("APIGW_WS_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("APIGW_WS_ARTIFACTS", ROOT / "test-artifacts"))
REQUIRE = os.environ.get("APIGW_WS_REQUIRE_SERVICES") == "1"


def missing_browser_tools() -> str | None:
    """Why the browser tests cannot run here, or ``None`` when they can."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"chromium not found at {CHROMIUM}: run scripts/browser-deps"
    if shutil.which("node") is None:
        return "node not found: install Node.js 20 or newer"
    if not (ROOT / "node_modules" / "playwright-core").is_dir():
        return "node_modules/playwright-core missing: run scripts/browser-deps"
    return None


@pytest.fixture(scope="session")
def browser_tools() -> str:
    """The path of ``node``; skips (or fails in CI) when a tool is missing."""
    reason = missing_browser_tools()
    if reason is not None:
        if REQUIRE:
            pytest.fail(f"{reason} (APIGW_WS_REQUIRE_SERVICES=1)")
        pytest.skip(reason)
    node = shutil.which("node")
    assert node is not None
    return node


@dataclass
class ChatSite:
    """A running chat example behind a running local gateway, as the scenario needs it."""

    name: str
    base_url: str
    gateway_url: str
    users: Mapping[str, tuple[str, str]]
    public_room: str
    private_room: str
    login_path: str = "/login/"
    extra_env: dict[str, str] = field(default_factory=dict)


def run_scenario(node: str, site: ChatSite, timeout: float = 240, script: Path = SCENARIO) -> dict:
    """Run ``script`` (default ``chat.spec.mjs``) against ``site``; return its JSON result."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "E2E_BASE_URL": site.base_url,
        "E2E_GATEWAY_URL": site.gateway_url,
        "E2E_LOGIN_PATH": site.login_path,
        "E2E_USERS": json.dumps({role: list(pair) for role, pair in site.users.items()}),
        "E2E_PUBLIC_ROOM": site.public_room,
        "E2E_PRIVATE_ROOM": site.private_room,
        "E2E_ARTIFACTS": str(ARTIFACTS),
        "E2E_NAME": site.name,
        "APIGW_WS_CHROMIUM": CHROMIUM,
        **site.extra_env,
    }
    proc = subprocess.run(
        [node, str(script)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise AssertionError(
            f"the scenario printed no result (exit {proc.returncode})\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    result: dict = json.loads(lines[-1])
    if not result.get("ok"):
        raise AssertionError(
            f"browser scenario failed at {result.get('step')!r}: {result.get('error')}\n"
            f"checks so far: {json.dumps(result.get('checks'), indent=2)}\n"
            f"stderr:\n{proc.stderr}\nscreenshots in {ARTIFACTS}"
        )
    return result


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_demo(example: str, state_dir: Path, *, login_path: str) -> Iterator[ChatSite]:
    """``scripts/demo EXAMPLE`` as a newcomer runs it (app + local gateway), on free ports,
    stopped with Ctrl-C at the end; the demo must then exit 0. Announcements go through
    ``scripts/demo announce``, as README's demo does them."""
    port, gateway_port = free_port(), free_port()
    env = {**os.environ, "APIGW_WS_DEMO_STATE": str(state_dir)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    command = [sys.executable, str(ROOT / "scripts" / "demo.py"), example]
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
    announce = [sys.executable, str(ROOT / "scripts" / "demo.py"), "announce"]
    try:
        assert proc.poll() is None, "".join(output)
        yield ChatSite(
            name=example if example != "flask" else "demo",
            base_url=f"http://127.0.0.1:{port}",
            gateway_url=f"http://127.0.0.1:{gateway_port}",
            users={"staff": ("alice", "demo"), "member": ("bob", "demo")},
            public_room="room-general",
            private_room="room-staff",
            login_path=login_path,
            extra_env={
                "E2E_ANNOUNCE_CMD": json.dumps(announce),
                "APIGW_WS_DEMO_STATE": str(state_dir),
            },
        )
    finally:
        proc.send_signal(2)  # Ctrl-C, as a person would stop it
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "".join(output)
    assert f"http://127.0.0.1:{port}/" in "".join(output)
