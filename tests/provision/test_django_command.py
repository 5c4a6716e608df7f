"""``manage.py apigw_ws_provision``: the gateway record lives in the Django database."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

pytest.importorskip("django")
pytest.importorskip("apigw_ws_django.runtime")

from django.conf import settings
from django.core.management import call_command
from django.test import override_settings

from apigw_ws_core.provision import AwsClients
from apigw_ws_django.runtime import get_runtime
from tests.provision.conftest import REGION, AwsEnv

CONFIG = f"""
name = "dj-chat"
region = "{REGION}"
target_base_url = "https://app.example.com/ws/"

[[routes]]
key = "chat_message"
"""


@pytest.fixture
def config_file(aws: AwsEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("APIGW_WS_SECRET", raising=False)
    monkeypatch.setattr(AwsClients, "create", classmethod(lambda cls, **kw: aws.clients))
    path = tmp_path / "apigw-ws.toml"
    path.write_text(CONFIG)
    return path


def _call(*argv: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("apigw_ws_provision", *argv, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db
def test_apply_keeps_the_record_in_the_database(config_file: Path, aws: AwsEnv) -> None:
    apigw_ws = {**settings.APIGW_WS, "GATEWAY_NAME": "dj-chat"}
    with override_settings(APIGW_WS=apigw_ws):
        out, err = _call("plan", "--config", str(config_file))
        assert "+ route chat_message" in out and err == ""
        with pytest.raises(SystemExit) as info:
            _call("plan", "--config", str(config_file), "--detailed-exitcode")
        assert info.value.code == 2

        out, err = _call("apply", "--config", str(config_file), "--yes")
        assert "[ 1/13] + api dj-chat ... created " in out, out + err
        assert "Gateway 'dj-chat' is ready." in out

        record = get_runtime().storage.get_gateway("dj-chat")
        assert record is not None and record.status == "ready"
        assert record.management_endpoint.endswith("/prod")
        # The app's SECRET is what was provisioned.
        integrations = aws.client("apigatewayv2").get_integrations(ApiId=record.api_id)
        header = "integration.request.header.X-Apigw-Ws-Secret"
        assert {i["RequestParameters"][header] for i in integrations["Items"]} == {
            f"'{settings.APIGW_WS['SECRET']}'"
        }
        assert not (config_file.parent / ".apigw-ws-state.json").exists()

        out, _ = _call("plan", "--config", str(config_file), "--detailed-exitcode")
        assert "No changes" in out

        out, _ = _call("destroy", "--config", str(config_file), "--yes")
        assert "destroyed" in out
        assert get_runtime().storage.get_gateway("dj-chat").status == "destroyed"


@pytest.mark.django_db
def test_gateway_name_mismatch_warns_and_errors_exit_nonzero(config_file: Path) -> None:
    _, err = _call("plan", "--config", str(config_file))
    assert "gateway_name to 'dj-chat'" in err
    with pytest.raises(SystemExit) as info:
        _call("plan", "--config", str(config_file.parent / "missing.toml"))
    assert info.value.code == 1
