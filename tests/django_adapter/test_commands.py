"""Management commands: apigw_ws_cleanup and apigw_ws_send."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from apigw_ws_core.testing import redeem_token
from apigw_ws_core.tokens import token_keys, verify_token
from apigw_ws_django import get_app
from apigw_ws_django.testing import WebSocketTestClient
from apigw_ws_storage.django_orm import models as m

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args: Any) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def ws() -> Any:
    with WebSocketTestClient() as client:
        yield client


@pytest.fixture
def alice(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("alice")


def test_cleanup(ws: WebSocketTestClient, alice: Any):
    now = datetime.now(UTC)
    stale = ws.connect(user=alice)
    fresh = ws.connect(user=alice)
    m.WebSocketSession.objects.filter(connection_id=stale.connection_id).update(
        connected_at=now - timedelta(hours=3)
    )
    old = ws.connect(user=alice)
    old.disconnect()
    m.WebSocketSession.objects.filter(connection_id=old.connection_id).update(
        disconnected_at=now - timedelta(days=2)
    )
    # the spent-token ledger: the three connects above spent theirs (kept until they
    # expire); one more spent token is past its expiry (and grace): cleanup removes it
    token = ws.token_for(alice)
    app = get_app()
    digest = verify_token(token_keys(app.config), token, now=app.clock()).digest
    assert redeem_token(app, token) == str(alice.pk)
    m.WebSocketToken.objects.filter(token_hash=digest).update(expires_at=now - timedelta(seconds=1))
    assert m.WebSocketToken.objects.count() == 4

    out, _ = run("apigw_ws_cleanup", "--dry-run")
    # healing asks about the sessions older than a minute (stale, alive here); age alone
    # marks it, being past API Gateway's 2-hour maximum
    assert out.startswith(
        "Dry run: asked API Gateway about 1 session(s): 1 alive, 0 gone (would be marked "
        "disconnected), 0 unknown; would mark 1 session(s) past the 2 h maximum "
        "disconnected; would remove 1 old disconnected session(s), 1 expired token(s), "
    ), out
    assert m.WebSocketSession.objects.count() == 3
    out, _ = run("apigw_ws_cleanup")
    assert "marked 1 session(s) past the 2 h maximum disconnected; removed 1 old " in out
    assert "1 expired token(s)" in out
    assert m.WebSocketToken.objects.count() == 3
    assert not m.WebSocketToken.objects.filter(token_hash=digest).exists()
    assert set(m.WebSocketSession.objects.values_list("connection_id", "connected")) == {
        (stale.connection_id, False),
        (fresh.connection_id, True),
    }


def test_cleanup_heals_lost_disconnects_and_leaves_live_sessions(
    ws: WebSocketTestClient, alice: Any
):
    now = datetime.now(UTC)
    live, lost, young_lost = (ws.connect(user=alice) for _ in range(3))
    m.WebSocketSession.objects.exclude(connection_id=young_lost.connection_id).update(
        connected_at=now - timedelta(minutes=5)
    )
    # API Gateway no longer knows these two: their $disconnect never reached the app
    ws.transport.gone.update({lost.connection_id, young_lost.connection_id})
    out, _ = run("apigw_ws_cleanup", "--dry-run")
    assert "about 2 session(s): 1 alive, 1 gone (would be marked" in out
    assert m.WebSocketSession.objects.filter(connected=True).count() == 3
    out, _ = run("apigw_ws_cleanup")
    assert "about 2 session(s): 1 alive, 1 gone (now marked disconnected)" in out
    connected = dict(m.WebSocketSession.objects.values_list("connection_id", "connected"))
    # the young one (its $connect may still be running) waits for the next run
    assert connected == {
        live.connection_id: True,
        lost.connection_id: False,
        young_lost.connection_id: True,
    }
    out, _ = run("apigw_ws_cleanup", "--no-heal")
    assert "asked API Gateway" not in out


def test_send_to_channel_with_progress(ws: WebSocketTestClient, alice: Any):
    a = ws.connect(user=alice, channel="lobby")
    b = ws.connect(user=alice, channel="lobby")
    ws.connect(user=alice, channel="elsewhere")
    ws.transport.gone.add(b.connection_id)
    out, err = run("apigw_ws_send", '{"type": "notice"}', "--channel", "lobby")
    assert "Delivered 1, gone 1, failed 0" in out
    assert "sent 2/2 [" in err
    assert ws.received(a.connection_id) == [{"type": "notice"}]
    assert not m.WebSocketSession.objects.get(connection_id=b.connection_id).connected


def test_send_targets(ws: WebSocketTestClient, alice: Any, django_user_model: Any):
    bob = django_user_model.objects.create_user("bob")
    a = ws.connect(user=alice, channel="x")
    b = ws.connect(user=bob, channel="y")
    out, _ = run("apigw_ws_send", "hi", "--text", "--user", "alice", "--no-progress")
    assert "Delivered 1" in out and [msg.data for msg in ws.transport.sent] == [b"hi"]
    ws.transport.clear()
    run("apigw_ws_send", "[1]", "--user", str(bob.pk))
    assert ws.received(b.connection_id) == [[1]]
    run("apigw_ws_send", '["all"]', "--all")
    assert ws.received(a.connection_id)[-1] == ["all"] == ws.received(b.connection_id)[-1]
    run("apigw_ws_send", "{}", "--connection", a.connection_id)
    assert ws.received(a.connection_id)[-1] == {}


def test_send_errors(ws: WebSocketTestClient, alice: Any, settings: Any):
    with pytest.raises(CommandError, match="not valid JSON"):
        run("apigw_ws_send", "{nope", "--all")
    with pytest.raises(CommandError, match="no user"):
        run("apigw_ws_send", "{}", "--user", "nobody")
    with pytest.raises(CommandError, match="131072"):
        run("apigw_ws_send", "x" * 140000, "--text", "--all")
    with pytest.raises(CommandError):
        run("apigw_ws_send", "{}")  # no target
    settings.APIGW_WS = {**settings.APIGW_WS, "SEND_MAX_ATTEMPTS": 1}
    conn = ws.connect(user=alice)  # installs the recording transport in the rebuilt apps
    ws.transport.throttle[conn.connection_id] = 100
    with pytest.raises(CommandError, match="1 delivery"):
        run("apigw_ws_send", "{}", "--all", "--no-progress")


def test_send_reads_stdin(ws: WebSocketTestClient, alice: Any, monkeypatch: pytest.MonkeyPatch):
    conn = ws.connect(user=alice)
    monkeypatch.setattr("sys.stdin", io.StringIO('{"from": "stdin"}'))
    run("apigw_ws_send", "-", "--all")
    assert ws.received(conn.connection_id) == [{"from": "stdin"}]


def test_every_django_send_goes_through_the_apps_one_fanout_call(
    ws: WebSocketTestClient, alice: Any, monkeypatch: pytest.MonkeyPatch
):
    """The send command and ``QuerySet.send_message`` end in ``WebSocketApp.deliver`` (one
    fan-out call built from configuration), with the command's deadline passed on."""
    from apigw_ws_core.app import WebSocketApp

    calls: list[dict[str, Any]] = []
    real = WebSocketApp.deliver

    def spy(self: WebSocketApp, payload: bytes, batches: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real(self, payload, batches, **kwargs)

    monkeypatch.setattr(WebSocketApp, "deliver", spy)
    a = ws.connect(user=alice, channel="lobby")
    run("apigw_ws_send", '{"n": 1}', "--channel", "lobby", "--deadline", "3", "--no-progress")
    m.WebSocketSession.objects.filter(channel_name="lobby").send_message({"n": 2})
    assert ws.received(a.connection_id) == [{"n": 1}, {"n": 2}]
    assert len(calls) == 2 and calls[0]["deadline"] == 3.0
