import pytest

from apigw_ws_core.memory import MemoryStorage
from apigw_ws_core.testing import StorageContract


class TestMemoryStorage(StorageContract):
    @pytest.fixture
    def storage(self):
        return MemoryStorage()
