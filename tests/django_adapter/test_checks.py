"""System checks: stable ids for each misconfiguration."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.checks import run_checks
from django.test import override_settings

from apigw_ws_django.checks import check_settings

GOOD = {
    "SECRET": "x" * 40,
    "ALLOWED_ORIGINS": ["https://www.example.com"],
    "MANAGEMENT_ENDPOINT": "https://abc.execute-api.eu-west-1.amazonaws.com/prod",
}


def ids(config: Any, **extra: Any) -> list[str]:
    with override_settings(APIGW_WS=config, **extra):
        return sorted(m.id for m in check_settings() if m.id)


def test_good_settings_pass():
    assert ids(GOOD) == []
    with override_settings(APIGW_WS=GOOD):
        assert not [m for m in run_checks() if m.id and m.id.startswith("apigw_ws")]


@pytest.mark.parametrize(
    ("config", "extra", "expected"),
    [
        ({**GOOD, "NOT_A_KEY": 1}, {}, ["apigw_ws.E001"]),
        ({**GOOD, "CONNECT_RATE_PER_IP": "lots"}, {}, ["apigw_ws.E001"]),
        ("not a dict", {}, ["apigw_ws.E001"]),
        ({k: v for k, v in GOOD.items() if k != "SECRET"}, {}, ["apigw_ws.E002"]),
        ({**GOOD, "MANAGEMENT_ENDPOINT": "ftp://x"}, {}, ["apigw_ws.E004"]),
        (GOOD, {"USE_TZ": False}, ["apigw_ws.E005"]),
        ({**GOOD, "SECRET": None, "ALLOW_INSECURE_NO_SECRET": True}, {}, ["apigw_ws.E006"]),
        ({**GOOD, "STORAGE": "no.such.Storage"}, {}, ["apigw_ws.E007"]),
        ({**GOOD, "USER_LOADER": "no.such.loader"}, {}, ["apigw_ws.E007"]),
        ({**GOOD, "SECRET": "short"}, {}, ["apigw_ws.W001"]),
        ({**GOOD, "ALLOWED_ORIGINS": []}, {}, ["apigw_ws.W002"]),
        ({**GOOD, "REQUIRE_TOKEN": False}, {}, ["apigw_ws.W003"]),
    ],
)
def test_each_problem_has_its_id(config: Any, extra: dict[str, Any], expected: list[str]):
    assert ids(config, **extra) == expected


def test_debug_relaxes_production_warnings():
    config = {
        **GOOD,
        "ALLOWED_ORIGINS": [],
        "REQUIRE_TOKEN": False,
        "SECRET": None,
        "ALLOW_INSECURE_NO_SECRET": True,
    }
    assert ids(config, DEBUG=True) == []


def test_storage_app_missing(settings: Any):
    apps = [a for a in settings.INSTALLED_APPS if a != "apigw_ws_storage.django_orm"]
    with override_settings(INSTALLED_APPS=apps):
        assert ids(GOOD) == ["apigw_ws.E003"]


def test_every_message_has_a_hint():
    with override_settings(APIGW_WS={"SECRET": "s", "MANAGEMENT_ENDPOINT": "x"}, USE_TZ=False):
        messages = check_settings()
    assert messages and all(m.hint for m in messages)


@pytest.mark.parametrize(
    ("database", "warned"),
    [
        ({"ENGINE": "django.db.backends.sqlite3", "NAME": "x"}, 0),
        ({"ENGINE": "django.db.backends.sqlite3", "NAME": "x", "CONN_MAX_AGE": 60}, 1),
        (
            {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": "x",
                "CONN_MAX_AGE": 60,
                "CONN_HEALTH_CHECKS": True,
            },
            0,
        ),
        ({"ENGINE": "django.db.backends.mysql", "NAME": "x"}, 1),
        (
            {
                "ENGINE": "django.db.backends.mysql",
                "NAME": "x",
                "OPTIONS": {"connect_timeout": 2, "read_timeout": 2},
            },
            0,
        ),
        ({"ENGINE": "django.db.backends.postgresql", "NAME": "x"}, 1),
        ({"ENGINE": "apigw_ws_storage.django_orm.postgresql", "NAME": "x"}, 1),
        (
            {
                "ENGINE": "apigw_ws_storage.django_orm.postgresql",
                "NAME": "x",
                "OPTIONS": {"connect_timeout": 2, "read_timeout": 2},
            },
            0,
        ),
    ],
)
def test_unbounded_database_waits_are_warned_about(database: dict[str, Any], warned: int):
    """apigw_ws.W004 (issue 12): the storage's alias, and only without DEBUG."""
    from apigw_ws_django.checks import _check_database_timeouts

    found = _check_database_timeouts("default", {"default": database})
    assert [m.id for m in found] == ["apigw_ws.W004"] * warned
    assert all(m.hint for m in found)


def test_the_database_check_runs_on_the_storage_alias_without_debug(monkeypatch: Any):
    from apigw_ws_django import checks

    seen: list[str] = []
    monkeypatch.setattr(checks, "_check_database_timeouts", lambda alias: seen.append(alias) or [])
    ids({**GOOD, "STORAGE_OPTIONS": {"using": "other"}})
    ids(GOOD)
    ids(GOOD, DEBUG=True)
    assert seen == ["other", "default"]
