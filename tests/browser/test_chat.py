"""The chat examples work in a real browser: two users chat, a member is refused from the
private room, and a connection the gateway drops comes back with a new token and keeps
receiving. Each example runs on SQLite behind the local gateway, as ``scripts/demo`` runs it.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.conftest import ARTIFACTS, ROOT, ChatSite, run_scenario, running_demo

pytestmark = [pytest.mark.browser, pytest.mark.slow]

#: Which Flask chat to test (an override helps when trying a change to the example elsewhere).
FLASK_EXAMPLE = Path(
    os.environ.get("APIGW_WS_E2E_FLASK_EXAMPLE", ROOT / "examples" / "flask_chat" / "chat.py")
)


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def flask_site(browser_tools: str, tmp_path: Path) -> Iterator[ChatSite]:
    """examples/flask_chat on a free port (werkzeug, threaded) behind an in-process gateway."""
    if not FLASK_EXAMPLE.exists():
        pytest.skip("examples/flask_chat is not in this tree yet")
    if "chat_ui" not in (FLASK_EXAMPLE.parent / "templates" / "chat.html").read_text():
        pytest.skip("examples/flask_chat does not use the shared chat UI (examples/chat_ui) yet")
    pytest.importorskip("aiohttp")
    from botocore.credentials import Credentials
    from werkzeug.serving import make_server

    from apigw_ws_core.http1 import ManagementApiTransport
    from apigw_ws_core.local.config import config_from_backend
    from apigw_ws_core.local.testing import LocalGateway

    chat = _load(FLASK_EXAMPLE, "flask_chat_example")
    holder: dict = {}
    server = make_server("127.0.0.1", 0, lambda env, sr: holder["app"](env, sr), threaded=True)
    secret = secrets.token_urlsafe(24)
    api = config_from_backend(f"http://127.0.0.1:{server.port}/ws/", secret=secret)
    with LocalGateway(api) as gateway:
        transport = ManagementApiTransport(
            gateway.management_endpoint, credentials=Credentials("e2e", "e2e")
        )
        holder["app"] = chat.create_app(
            {
                "SECRET_KEY": secrets.token_hex(16),
                "DATABASE_URL": f"sqlite:///{tmp_path / 'chat.sqlite3'}",
                "APIGW_WS_SECRET": secret,
                "CHAT_WS_URL": gateway.ws_url,
                "TRANSPORT": transport,
            }
        )
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield ChatSite(
                name="flask",
                base_url=f"http://127.0.0.1:{server.port}",
                gateway_url=gateway.base_url,
                users={"staff": ("alice", "demo"), "member": ("bob", "demo")},
                public_room="room-general",
                private_room="room-staff",
                login_path="/login",
            )
        finally:
            transport.close()
            server.shutdown()
            thread.join(5)
            server.server_close()
            sys.modules.pop("flask_chat_example", None)


def _assert_scenario(result: dict) -> None:
    checks = result["checks"]
    assert checks["both_connected"] is True
    assert {"alice", "bob"} <= set(checks["presence"])
    assert checks["member_received"] is True
    assert checks["staff_received"] is True
    # refused from the private room: told so, never connected, cannot post
    assert "not allowed" in checks["refusal_notice"].lower()
    assert checks["member_private_connections"] == 0
    assert checks["member_composer_disabled"] is True
    assert checks["staff_private_message"] is True
    assert checks["member_never_saw_private"] is True
    # dropped by the gateway: a new connection, opened with a newly fetched token
    assert checks["reconnected_new_connection"] is True
    assert checks["token_not_in_url"] is True  # in Sec-WebSocket-Protocol (issue 17 item 5)
    assert checks["subprotocol_selected"] == "apigw-ws"
    assert checks["reconnected_new_token"] is True
    assert checks["reconnect_fetched_token"] >= 1
    assert checks["received_after_reconnect"] is True
    assert checks["sent_after_reconnect"] is True
    assert checks["console_errors"] == []


def test_flask_chat_in_a_real_browser(browser_tools: str, flask_site: ChatSite) -> None:
    result = run_scenario(browser_tools, flask_site)
    _assert_scenario(result)
    assert (ARTIFACTS / "flask-staff.png").stat().st_size > 10_000


@pytest.fixture
def demo_site(browser_tools: str, tmp_path: Path) -> Iterator[ChatSite]:
    """``scripts/demo flask`` as a newcomer runs it (two processes), on free ports."""
    if not (FLASK_EXAMPLE.parent / "templates" / "chat.html").exists():
        pytest.skip("examples/flask_chat is not in this tree yet")
    with running_demo("flask", tmp_path, login_path="/login") as site:
        yield site


def test_the_readme_demo_command_in_a_real_browser(browser_tools: str, demo_site: ChatSite):
    result = run_scenario(browser_tools, demo_site)
    _assert_scenario(result)
    assert result["checks"]["announcement_everywhere"] is True
