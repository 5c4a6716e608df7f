"""``flask apigw-ws provision``: the Flask CLI front end of provisioning."""

from __future__ import annotations

from pathlib import Path

import pytest

flask = pytest.importorskip("flask")
pytest.importorskip("apigw_ws_flask")

from apigw_ws_core import MemoryStorage  # noqa: E402
from apigw_ws_core.provision import AwsClients  # noqa: E402
from apigw_ws_flask import ApigwWebSocket  # noqa: E402
from tests.provision.conftest import REGION, SECRET, AwsEnv  # noqa: E402

CONFIG = f"""
name = "flask-chat"
region = "{REGION}"
target_base_url = "https://app.example.com/ws/"
"""


def test_flask_provision_plan_and_apply(
    aws: AwsEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APIGW_WS_SECRET", SECRET)
    monkeypatch.setattr(AwsClients, "create", classmethod(lambda cls, **kw: aws.clients))
    path = tmp_path / "apigw-ws.toml"
    path.write_text(CONFIG)
    app = flask.Flask(__name__)
    app.config.update(APIGW_WS_SECRET=SECRET, APIGW_WS_GATEWAY_NAME="flask-chat")
    storage = MemoryStorage()
    ApigwWebSocket(app, storage=storage)
    runner = app.test_cli_runner()

    result = runner.invoke(args=["apigw-ws", "provision", "plan", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert "+ api flask-chat" in result.output

    result = runner.invoke(args=["apigw-ws", "provision", "apply", "-c", str(path), "--yes"])
    assert result.exit_code == 0, result.output
    assert "Gateway 'flask-chat' is ready." in result.output
    (api,) = aws.client("apigatewayv2").get_apis()["Items"]
    assert api["Name"] == "flask-chat"
    record = storage.get_gateway("flask-chat")
    assert record is not None
    assert record.status == "ready"
    assert record.api_id == api["ApiId"]

    result = runner.invoke(args=["apigw-ws", "provision", "plan", "-c", str(path)])
    assert "No changes" in result.output
