"""The storage contract suite on the Django ORM: SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from apigw_ws_core.testing import StorageContract
from apigw_ws_storage.django_orm.storage import DjangoStorage
from tests.django_orm.helpers import ThreadStorage, alias_params


@pytest.fixture(params=alias_params())
def alias(request: pytest.FixtureRequest) -> str:
    return request.param


class TestDjangoStorage(StorageContract):
    """Every contract test, once per database."""

    @pytest.fixture
    def storage(self, alias: str) -> DjangoStorage:
        # The contract uses user ids "1".."50"; sessions and tokens have a foreign key to
        # the user model, so the users must exist.
        User = get_user_model()
        User.objects.using(alias).bulk_create(
            [User(pk=i, username=f"user{i}") for i in range(1, 51)]
        )
        return DjangoStorage(alias)

    @pytest.fixture
    def storage_factory(self, alias: str):
        return lambda: ThreadStorage(alias)
