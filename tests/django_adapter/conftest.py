"""Fixtures of the Django adapter tests: each test runs once per database alias."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from apigw_ws_django.testing import WebSocketTestClient
from apigw_ws_storage.django_orm import models as m
from tests.django_orm.helpers import AliasRouter, alias_params


@pytest.fixture(params=alias_params())
def alias(request: pytest.FixtureRequest, settings: Any) -> Iterator[str]:
    """The database alias under test: the adapter's storage and every model use it."""
    settings.APIGW_WS = {**settings.APIGW_WS, "STORAGE_OPTIONS": {"using": request.param}}
    AliasRouter.alias = request.param
    try:
        yield request.param
    finally:
        AliasRouter.alias = None


@pytest.fixture
def users(alias: str) -> dict[str, Any]:
    """alice (no permissions), bob (superuser) on the alias under test."""
    manager = get_user_model()._default_manager.db_manager(alias)
    return {
        "alice": manager.create_user("alice", password="pw"),
        "bob": manager.create_superuser("bob", password="pw"),
    }


@pytest.fixture
def ws(alias: str) -> Iterator[WebSocketTestClient]:
    """A gateway-like client for ChatView (mounted at /ws/)."""
    with WebSocketTestClient() as client:
        yield client


def snapshot(alias: str) -> tuple[list[Any], list[Any], list[Any]]:
    """Sessions, subscriptions and tokens, to prove a rejection wrote nothing."""
    return (
        sorted(m.WebSocketSession.objects.using(alias).values_list()),
        sorted(m.WebSocketSubscription.objects.using(alias).values_list()),
        sorted(m.WebSocketToken.objects.using(alias).values_list()),
    )
