"""The storage contract suite on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from apigw_ws_core.storage import Storage
from apigw_ws_core.testing import StorageContract
from apigw_ws_storage.sqla import SqlaStorage
from tests.sqla.dbs import Database


class TestSqlaStorageContract(StorageContract):
    @pytest.fixture
    def storage(self, db: Database) -> SqlaStorage:
        return db.storage

    @pytest.fixture
    def storage_factory(self, db: Database) -> Callable[[], Storage]:
        return db.new_storage
