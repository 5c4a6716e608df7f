"""``apigw-ws provision`` and ``apigw-ws iam-policy`` end to end under moto."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from apigw_ws_core.cli import main
from apigw_ws_core.provision import AwsClients, FileGatewayStore, load_config
from apigw_ws_core.provision_cli import ProgressPrinter, run_action
from tests.provision.conftest import REGION, SECRET, AwsEnv

CONFIG = f"""
name = "cli-chat"
region = "{REGION}"
target_base_url = "https://app.example.com/ws/"
state_file = "state/gw.json"

[stage_variables]
env = "cli"

[[routes]]
key = "chat_message"
"""


@pytest.fixture
def cli(aws: AwsEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config file in tmp_path; the CLI's AWS clients are the moto ones."""
    monkeypatch.setenv("APIGW_WS_SECRET", SECRET)
    monkeypatch.setattr(AwsClients, "create", classmethod(lambda cls, **kw: aws.clients))
    path = tmp_path / "apigw-ws.toml"
    path.write_text(CONFIG)
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_apply_plan_destroy(
    cli: Path, capsys: pytest.CaptureFixture[str], aws: AwsEnv
) -> None:
    code, out, _ = _run(capsys, "provision", "plan", "--config", str(cli))
    assert code == 0
    assert "+ api cli-chat" in out and "+ route chat_message" in out
    assert "Plan: 13 to create, 0 to update, 0 to delete, 0 unchanged." in out
    assert SECRET not in out
    assert _run(capsys, "provision", "plan", "-c", str(cli), "--detailed-exitcode")[0] == 2

    code, out, err = _run(capsys, "provision", "apply", "--config", str(cli))
    assert code == 1 and "cancelled" in err  # stdin is not a terminal: never applies unasked
    assert aws.client("apigatewayv2").get_apis()["Items"] == []

    code, out, err = _run(capsys, "provision", "apply", "--config", str(cli), "--yes")
    assert code == 0, err
    assert "[ 1/13] + api cli-chat ... created " in out
    assert "[13/13] + deployment prod ... deployed " in out
    assert "Gateway 'cli-chat' is ready." in out
    record = FileGatewayStore(cli.parent / "state" / "gw.json").get_gateway("cli-chat")
    assert record is not None and record.status == "ready"
    assert f"WebSocket URL:       {record.api_endpoint}" in out
    assert SECRET not in (cli.parent / "state" / "gw.json").read_text()

    code, out, _ = _run(capsys, "provision", "plan", "-c", str(cli), "--detailed-exitcode")
    assert code == 0 and "No changes: 13 resources up to date." in out
    code, out, _ = _run(capsys, "provision", "apply", "-c", str(cli))
    assert code == 0 and "No changes" in out  # nothing to confirm, nothing done
    code, out, _ = _run(capsys, "provision", "plan", "-c", str(cli), "--show-unchanged")
    assert "  route $default" in out

    code, out, _ = _run(capsys, "provision", "destroy", "-c", str(cli), "-y")
    assert code == 0 and "- api cli-chat" in out and "destroyed" in out
    assert aws.client("apigatewayv2").get_apis()["Items"] == []
    code, out, _ = _run(capsys, "provision", "destroy", "-c", str(cli), "-y")
    assert code == 0 and "Nothing to destroy." in out


def test_state_option_overrides_the_config(cli: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = cli.parent / "elsewhere.json"
    assert _run(capsys, "provision", "apply", "-c", str(cli), "--state", str(state), "-y")[0] == 0
    assert FileGatewayStore(state).get_gateway("cli-chat") is not None
    assert not (cli.parent / "state").exists()


def test_errors_are_one_line_with_exit_1(
    cli: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, aws: AwsEnv
) -> None:
    code, _, err = _run(capsys, "provision", "plan", "-c", str(cli.parent / "nope.toml"))
    assert code == 1 and err.startswith("error: config file") and "not found" in err
    monkeypatch.delenv("APIGW_WS_SECRET")
    code, _, err = _run(capsys, "provision", "plan", "-c", str(cli))
    assert code == 1 and "APIGW_WS_SECRET" in err
    monkeypatch.setenv("APIGW_WS_SECRET", SECRET)
    code, _, err = _run(capsys, "provision", "plan", "-c", str(cli), "--region", "eu-west-1")
    assert code == 1 and "contradicts" in err
    aws.gaps.fail_on("CreateRoute", nth=2)
    code, out, err = _run(capsys, "provision", "apply", "-c", str(cli), "-y")
    assert code == 1
    assert "+ route $disconnect ... FAILED: TooManyRequestsException: injected" in out
    assert "error: create route $disconnect failed" in err and "run apply again" in err
    code, out, _ = _run(capsys, "provision", "apply", "-c", str(cli), "-y")
    assert code == 0 and "Plan: 7 to create" in out  # resumed: only what was missing


def test_run_action_with_confirm_callback(cli: Path, aws: AwsEnv) -> None:
    spec = load_config(cli).spec
    out, err = io.StringIO(), io.StringIO()
    asked: list[str] = []

    def confirm(prompt: str) -> bool:
        asked.append(prompt)
        return True

    code = run_action("apply", spec, store=None, aws=aws.clients, out=out, err=err, confirm=confirm)
    assert code == 0 and asked == ["Apply these changes? [y/N] "]
    assert run_action("bogus", spec, store=None, out=out, err=err) == 1


def test_progress_printer_shows_waits_on_their_own_line() -> None:
    from apigw_ws_core.provision import Change, ProgressEvent

    change = Change(action="create", resource="domain", name="ws.example.com")
    out = io.StringIO()
    printer = ProgressPrinter(out)
    for phase, message in [("start", ""), ("info", "waiting up to 900s"), ("done", "created")]:
        printer(ProgressEvent(index=3, total=12, change=change, phase=phase, message=message))
    assert out.getvalue().splitlines() == [
        "[ 3/12] + domain ws.example.com ...",
        "      waiting up to 900s",
        "[ 3/12] + domain ws.example.com ... created",
    ]


def _policy(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    code, out, err = _run(capsys, "iam-policy", *argv)
    assert code == 0, err
    return json.loads(out)


def test_iam_policy_commands(cli: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = _policy(capsys, "--runtime", "--config", str(cli))
    resources = policy["Statement"][0]["Resource"]
    assert resources[0] == f"arn:aws:execute-api:{REGION}:123456789012:*/prod/POST/@connections/*"

    assert _run(capsys, "provision", "apply", "-c", str(cli), "-y")[0] == 0
    record = FileGatewayStore(cli.parent / "state" / "gw.json").get_gateway("cli-chat")
    policy = _policy(capsys, "--runtime", "--config", str(cli))
    assert policy["Statement"][0]["Resource"][2] == (
        f"arn:aws:execute-api:{REGION}:123456789012:{record.api_id}/prod/DELETE/@connections/*"
    )
    policy = _policy(
        capsys,
        "--runtime",
        "--region",
        "eu-west-1",
        "--account-id",
        "1",
        "--api-id",
        "x",
        "--stage",
        "s",
        "--config",
        str(cli),
    )
    assert policy["Statement"][0]["Resource"][0] == (
        "arn:aws:execute-api:eu-west-1:1:x/s/POST/@connections/*"
    )
    deploy = _policy(capsys, "--deploy", "--config", str(cli))
    resources = {r for s in deploy["Statement"] for r in s["Resource"]}
    assert f"arn:aws:apigateway:{REGION}::/apis/{record.api_id}/*" in resources


def test_iam_policy_needs_a_kind_and_deploy_needs_a_config(
    cli: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SystemExit):
        main(["iam-policy"])
    monkeypatch.chdir(cli.parent.parent)
    code, _, err = _run(capsys, "iam-policy", "--deploy", "--region", REGION)
    assert code == 1 and "--deploy needs --config" in err
    # The secret is not needed to print a policy.
    monkeypatch.delenv("APIGW_WS_SECRET")
    assert _policy(capsys, "--deploy", "--config", str(cli))["Version"] == "2012-10-17"


def _provision_args(*argv: str) -> Any:
    import argparse

    from apigw_ws_core.provision_cli import add_provision_arguments

    parser = argparse.ArgumentParser()
    add_provision_arguments(parser)
    return parser.parse_args(list(argv))


def test_framework_front_ends_use_the_app_store_and_secret(
    cli: Path,
    aws: AwsEnv,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from apigw_ws_core.provision import MemoryGatewayStore
    from apigw_ws_core.provision_cli import run_provision

    monkeypatch.delenv("APIGW_WS_SECRET")
    store = MemoryGatewayStore()
    args = _provision_args("apply", "--config", str(cli), "--yes")
    assert run_provision(args, store=store, app_secret=SECRET, gateway_name="cli-chat") == 0
    record = store.get_gateway("cli-chat")
    assert record is not None and record.status == "ready"
    assert not (cli.parent / "state").exists()  # no state file: the app's store has it
    client = aws.client("apigatewayv2")
    integration = client.get_integrations(ApiId=record.api_id)["Items"][0]
    assert integration["RequestParameters"]["integration.request.header.X-Apigw-Ws-Secret"] == (
        f"'{SECRET}'"
    )
    capsys.readouterr()

    args = _provision_args("plan", "--config", str(cli))
    assert run_provision(args, store=store, app_secret=SECRET, gateway_name="default") == 0
    assert "gateway_name to 'cli-chat'" in capsys.readouterr().err

    monkeypatch.setenv("APIGW_WS_SECRET", "a-different-secret-0123456789")
    assert run_provision(args, store=store, app_secret=SECRET) == 1
    assert "differs from the secret the app is configured with" in capsys.readouterr().err


def test_plan_names_drift_made_outside_apigw_ws(
    cli: Path, aws: AwsEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(capsys, "provision", "apply", "-c", str(cli), "-y")[0] == 0
    record = FileGatewayStore(cli.parent / "state" / "gw.json").get_gateway("cli-chat")
    client = aws.client("apigatewayv2")
    client.update_integration(
        ApiId=record.api_id,
        IntegrationId=record.resources["integration:chat_message"],
        IntegrationUri="https://evil.example.com/",
    )
    code, out, err = _run(capsys, "provision", "plan", "-c", str(cli))
    assert code == 0 and "drift" in err
    assert '~ IntegrationUri: "https://evil.example.com/" -> ' in out
    assert _run(capsys, "provision", "apply", "-c", str(cli), "-y")[0] == 0
    code, out, err = _run(capsys, "provision", "plan", "-c", str(cli))
    assert "No changes" in out and "drift" not in err
