"""Migrating an existing database: rows written under ``0001_initial`` survive the later
migrations (connection attributes, channel history), on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import connections
from django.db.migrations.executor import MigrationExecutor

from apigw_ws_storage.django_orm.storage import DjangoStorage
from tests.django_orm.helpers import alias_params

APP = "apigw_ws_storage"
BEFORE = (APP, "0001_initial")


def _leaf(executor: MigrationExecutor) -> tuple[str, str]:
    leaves = executor.loader.graph.leaf_nodes(APP)
    assert len(leaves) == 1, f"{APP} must have exactly one leaf migration: {leaves}"
    return leaves[0]


@pytest.mark.parametrize("alias", alias_params())
def test_migrate_existing_rows_forward(alias: str):
    connection = connections[alias]
    executor = MigrationExecutor(connection)
    leaf = _leaf(executor)
    executor.migrate([BEFORE])
    try:
        old_apps = MigrationExecutor(connection).loader.project_state([BEFORE]).apps
        Session = old_apps.get_model(APP, "WebSocketSession")
        Subscription = old_apps.get_model(APP, "WebSocketSubscription")
        at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        row = Session.objects.using(alias).create(
            connection_id="OldRow+/Conn01=", channel_name="lobby", connected=True, connected_at=at
        )
        Subscription.objects.using(alias).create(session=row, channel_name="lobby", created_at=at)
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate([leaf])
    finally:
        final = MigrationExecutor(connection)
        final.migrate([_leaf(final)])
    storage = DjangoStorage(alias)
    got = storage.get_session("OldRow+/Conn01=")
    assert got is not None and got.attributes == {} and got.connected_at == at
    assert storage.channels_of("OldRow+/Conn01=") == ["lobby"]
    # the new tables work on the migrated database
    offset, epoch = storage.append_history("lobby", b"{}", at)
    assert (offset, epoch) == (1, storage.read_history("lobby", at).epoch)
    assert list(storage.iter_connection_ids(channel="lobby", attributes={})) == [
        ["OldRow+/Conn01="]
    ]
