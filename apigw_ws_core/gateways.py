"""Provisioning records: :class:`GatewayRecord` and the :class:`GatewayStore` protocol.

Provisioning (:mod:`apigw_ws_core.provision`) remembers what it created in a
``GatewayStore``: a JSON state file, a dict, or a database. The built-in storages (memory,
Django ORM, SQLAlchemy) implement it too, so a provisioned app finds its Management API
endpoint in its own database; a custom :class:`~apigw_ws_core.storage.Storage` need not.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

import attrs

__all__ = ["GatewayRecord", "GatewayStore"]


@attrs.frozen(kw_only=True)
class GatewayRecord:
    """What provisioning created for one named WebSocket API, and where to reach it.

    ``resources`` maps logical names (``"api"``, ``"integration:connect"``,
    ``"route:$default"``, ``"stage"``, ``"domain"`` ...) to AWS ids; ``spec_hash`` is the hash
    of the spec last applied successfully; ``status`` is ``"ready"``, ``"partial"`` or
    ``"destroyed"``.
    """

    name: str
    api_id: str = ""
    region: str = ""
    stage: str = ""
    api_endpoint: str = ""
    management_endpoint: str = ""
    custom_domain: str = ""
    resources: dict[str, str] = attrs.field(factory=dict)
    spec_hash: str = ""
    status: str = "partial"
    updated_at: datetime | None = None


@runtime_checkable
class GatewayStore(Protocol):
    """Anything that can load and save gateway records."""

    def get_gateway(self, name: str) -> GatewayRecord | None:
        """The record with this name, or ``None``."""

    def save_gateway(self, record: GatewayRecord) -> None:
        """Insert or replace the record named ``record.name``."""
