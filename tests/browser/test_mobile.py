"""The chat examples on a 390 px wide phone screen, in headless Chromium (tests/browser/
mobile.spec.mjs): rooms and people reachable, the top bar on one line, no 404 (favicon), and
Log out in both examples. Each runs as ``scripts/demo`` runs it. Screenshots:
``test-artifacts/{flask,django}-390.png``."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.browser.conftest import ARTIFACTS, CHROMIUM, ROOT, running_demo

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCENARIO = Path(__file__).with_name("mobile.spec.mjs")


@pytest.mark.parametrize(("example", "login_path"), [("flask", "/login"), ("django", "/login/")])
def test_chat_on_a_phone(browser_tools: str, tmp_path: Path, example: str, login_path: str):
    with running_demo(example, tmp_path, login_path=login_path) as site:
        env = {
            **os.environ,
            "E2E_BASE_URL": site.base_url,
            "E2E_LOGIN_PATH": login_path,
            "E2E_USER": "alice",
            "E2E_PASSWORD": "demo",
            "E2E_ARTIFACTS": str(ARTIFACTS),
            "E2E_NAME": example,
            "APIGW_WS_CHROMIUM": CHROMIUM,
        }
        proc = subprocess.run(
            [browser_tools, str(SCENARIO)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no result (exit {proc.returncode})\n{proc.stdout}\n{proc.stderr}"
    result = json.loads(lines[-1])
    assert result["ok"], json.dumps(result, indent=2)
    assert (ARTIFACTS / f"{example}-390.png").stat().st_size > 10_000
