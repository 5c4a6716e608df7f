"""``scripts/demo``: SIGTERM frees its ports; a second demo refuses without touching the first."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.ports import free_port, port_open

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "scripts" / "demo.py"

pytestmark = pytest.mark.slow


def demo_env(state: Path) -> dict[str, str]:
    env = {**os.environ, "APIGW_WS_DEMO_STATE": str(state)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


def test_second_demo_refuses_and_sigterm_frees_the_ports(tmp_path):
    state = tmp_path / "state"
    port, gateway_port = free_port(), free_port()
    first = subprocess.Popen(
        [
            sys.executable,
            str(DEMO),
            "flask",
            "--port",
            str(port),
            "--gateway-port",
            str(gateway_port),
        ],
        cwd=ROOT,
        env=demo_env(state),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    try:
        assert first.stdout is not None
        deadline = time.monotonic() + 90
        for line in first.stdout:
            output.append(line)
            if "is running" in line or time.monotonic() > deadline:
                break
        threading.Thread(target=lambda: output.extend(first.stdout or ()), daemon=True).start()
        assert first.poll() is None, "".join(output)
        running_file = state / "running.json"
        before = running_file.read_bytes()
        assert json.loads(before)["pid"] == first.pid

        # Same ports, and other ports: both refuse at once, and leave the first demo alone.
        for ports in ([port, gateway_port], [free_port(), free_port()]):
            second = subprocess.run(
                [
                    sys.executable,
                    str(DEMO),
                    "flask",
                    "--port",
                    str(ports[0]),
                    "--gateway-port",
                    str(ports[1]),
                ],
                cwd=ROOT,
                env=demo_env(state),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert second.returncode == 1, second
            assert "a demo is already running" in second.stderr
            assert f"http://127.0.0.1:{port}/" in second.stderr  # the first's URL, named as such
            assert "is running" not in second.stdout and "Traceback" not in second.stderr
            assert running_file.read_bytes() == before
            assert first.poll() is None

        # A port taken by another program (no demo running there) is named, not fought over.
        other_state = tmp_path / "other"
        third = subprocess.run(
            [
                sys.executable,
                str(DEMO),
                "flask",
                "--port",
                str(free_port()),
                "--gateway-port",
                str(gateway_port),
            ],
            cwd=ROOT,
            env=demo_env(other_state),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert third.returncode == 1 and f"port {gateway_port} is in use" in third.stderr, third
        assert "Traceback" not in third.stderr and "Unclosed" not in third.stderr

        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0, "".join(output)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    deadline = time.monotonic() + 10
    while (port_open(port) or port_open(gateway_port)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not port_open(port) and not port_open(gateway_port), "".join(output)
    assert not (state / "running.json").exists()
