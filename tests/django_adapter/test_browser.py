"""The Django chat example in a real browser (headless Chromium via the shared scenario in
``tests/browser/chat.spec.mjs``), started the way ``scripts/demo django`` starts it: two users
chat, a member is refused from the staff room, a dropped connection comes back with a new
token, and an announcement sent with ``manage.py apigw_ws_send`` reaches every browser."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.conftest import (  # noqa: F401
    ROOT,
    ChatSite,
    browser_tools,
    run_scenario,
    running_demo,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

EXAMPLE = ROOT / "examples" / "django_chat"


@pytest.fixture
def django_demo(browser_tools: str, tmp_path: Path) -> Iterator[ChatSite]:  # noqa: F811
    """``scripts/demo django`` on free ports, with its own state directory."""
    with running_demo("django", tmp_path, login_path="/login/") as site:
        yield site


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
