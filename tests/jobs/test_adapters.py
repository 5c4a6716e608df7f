"""``BACKGROUND_RUNNER = "celery"`` in Django settings and Flask config: background sends
become durable jobs on Celery (run eagerly here; tests/jobs/test_celery_worker.py runs a
real worker), whose status the Python API, the CLIs and the admin show."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest

celery = pytest.importorskip("celery")

from apigw_ws_core import MemoryStorage  # noqa: E402
from apigw_ws_core.errors import ConfigurationError  # noqa: E402
from apigw_ws_core.jobs import JobHandle, build_runner  # noqa: E402
from apigw_ws_core.testing import RecordingTransport  # noqa: E402


@pytest.fixture
def eager() -> Iterator[Any]:
    """A current Celery app that runs tasks in the caller (no broker)."""
    app = celery.Celery("apigw_ws_eager", set_as_current=True)
    app.conf.update(task_always_eager=True, task_eager_propagates=True)
    app.set_current()
    yield app
    app.close()


def test_flask_background_runner_celery(eager: Any) -> None:
    from flask import Flask

    from apigw_ws_flask import ApigwWebSocket

    flask_app = Flask("jobs")
    flask_app.config.update(
        APIGW_WS_SECRET="s",
        APIGW_WS_BACKGROUND_RUNNER="celery",
        APIGW_WS_REQUIRE_TOKEN=False,
        APIGW_WS_JOB_RATE_LIMIT=None,
    )
    transport = RecordingTransport()
    storage = MemoryStorage()
    ws = ApigwWebSocket(flask_app, storage=storage, transport=transport)
    client = flask_app.test_client()
    for i in range(3):
        resp = client.post(
            "/ws/connect",
            headers={
                "X-Apigw-Ws-Secret": "s",
                "X-Apigw-Ws-Connection-Id": f"conn-{i:06d}=",
                "X-Apigw-Ws-Event-Type": "CONNECT",
                "X-Apigw-Ws-Route-Key": "$connect",
            },
            query_string={"channel": "room"},
        )
        assert resp.status_code == 200, resp.get_data(as_text=True)
    with flask_app.app_context():
        handle = ws.send_in_background({"hello": 1}, channel="room")
    assert isinstance(handle, JobHandle)
    status = ws.job_status(handle.job_id)
    assert status is not None and status.status == "done"
    assert status.counts.delivered == len(transport.sent) == 3
    cli = flask_app.test_cli_runner()
    result = cli.invoke(args=["apigw-ws", "job", handle.job_id])
    assert result.exit_code == 0, result.output
    assert f"job {handle.job_id}: done" in result.output
    result = cli.invoke(args=["apigw-ws", "job", handle.job_id, "--json", "--wait"])
    assert '"status": "done"' in result.output
    result = cli.invoke(args=["apigw-ws", "job", "nope"])
    assert result.exit_code != 0 and "no send job" in result.output


def test_build_runner_settings() -> None:
    from apigw_ws_core import Config, WebSocketApp

    app = WebSocketApp(storage=MemoryStorage(), config=Config(secret="s"))
    assert build_runner(None, app) is None
    marker = object()
    assert build_runner(lambda a: (lambda job: marker), app) is not None
    with pytest.raises(ConfigurationError):
        build_runner("no.such.module.Runner", app)
    with pytest.raises(ConfigurationError):
        build_runner(42, app)


@pytest.mark.django_db(transaction=True)
def test_django_background_runner_celery(eager: Any, settings: Any, django_user_model: Any) -> None:
    from django.core.management import call_command

    from apigw_ws_django.runtime import get_app
    from apigw_ws_django.testing import WebSocketTestClient

    settings.APIGW_WS = {
        **settings.APIGW_WS,
        "BACKGROUND_RUNNER": "celery",
        "JOB_RATE_LIMIT": None,
    }
    with WebSocketTestClient() as ws:
        alice = django_user_model.objects.create_user("alice")
        conns = [ws.connect(user=alice, channel="room") for _ in range(3)]
        handle = get_app().send_in_background({"hello": 1}, channel="room")
        assert isinstance(handle, JobHandle)
        status = get_app().job_status(handle.job_id)
        assert status is not None and status.status == "done" and status.counts.delivered == 3
        assert all(c.received == [{"hello": 1}] for c in conns)
    out = io.StringIO()
    call_command("apigw_ws_job", handle.job_id, "--wait", stdout=out, stderr=io.StringIO())
    assert f"job {handle.job_id}: done; 3 delivered" in out.getvalue()


@pytest.mark.django_db(transaction=True)
@pytest.mark.urls("tests.django_adapter.urls")
def test_django_admin_shows_job_parts_and_the_whole_job(
    eager: Any, settings: Any, django_user_model: Any, client: Any
) -> None:
    from apigw_ws_django.runtime import get_app
    from apigw_ws_django.testing import WebSocketTestClient
    from apigw_ws_storage.django_orm import models as m

    settings.APIGW_WS = {
        **settings.APIGW_WS,
        "BACKGROUND_RUNNER": "celery",
        "JOB_RATE_LIMIT": None,
        "JOB_SHARD_SIZE": 2,
    }
    alice = django_user_model.objects.create_user("alice")
    with WebSocketTestClient() as ws:
        for _ in range(5):
            ws.connect(user=alice, channel="room")
        handle = get_app().send_in_background({"hello": 1}, channel="room")
    admin = django_user_model.objects.create_superuser("root", password="pw")
    client.force_login(admin)
    page = client.get("/admin/apigw_ws_storage/sendjobpart/")
    assert page.status_code == 200
    assert page.context["cl"].result_count == 4  # the plan and three shards
    part = m.SendJobPart.objects.get(job_id=handle.job_id, part=1)
    detail = client.get(f"/admin/apigw_ws_storage/sendjobpart/{part.pk}/change/")
    assert detail.status_code == 200
    assert f"job {handle.job_id}: done; 5 delivered" in detail.content.decode()
    assert client.get("/admin/apigw_ws_storage/sendjobpart/add/").status_code == 403
