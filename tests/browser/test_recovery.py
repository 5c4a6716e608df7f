"""Issue 14 in a real browser: the chat example's page, cut off by the gateway while 20 lines
are posted to its room, shows all 20 exactly once and in order after it reconnects; a post
the gateway delivers twice is shown once (``recovery.spec.mjs``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.conftest import ChatSite, run_scenario
from tests.browser.test_chat import flask_site  # noqa: F401 - the Flask chat fixture

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCRIPT = Path(__file__).with_name("recovery.spec.mjs")


def test_recovery_after_reconnect_and_duplicates_in_chromium(
    browser_tools: str,
    flask_site: ChatSite,  # noqa: F811
) -> None:
    checks = run_scenario(browser_tools, flask_site, script=SCRIPT)["checks"]
    assert checks["member_disconnected"] is True and checks["member_still_away"] is True
    assert checks["recovered_count"] == 20
    assert checks["recovered_all_once_in_order"] is True
    assert checks["recovery_notice"] == 1
    assert checks["first_line_once"] == 1
    assert checks["duplicate_shown_once"] is True
    assert checks["duplicates_dropped"] >= 1
    assert checks["sender_not_echoed"] is True
    assert checks["console_errors"] == []
