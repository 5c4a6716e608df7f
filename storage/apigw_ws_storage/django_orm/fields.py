"""Model fields the storage needs on every database."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper

__all__ = ["BINARY_COLLATION_MYSQL", "CaseSensitiveCharField"]

#: Collation used for case-sensitive columns on MySQL/MariaDB.
BINARY_COLLATION_MYSQL = "utf8mb4_bin"


class CaseSensitiveCharField(models.CharField):  # type: ignore[type-arg]
    """A ``CharField`` that compares byte for byte on every backend.

    API Gateway connection ids are base64 and may differ only by case
    (``ab+/...=`` and ``AB+/...=`` are two connections). SQLite and PostgreSQL compare
    ``varchar`` case-sensitively already; MySQL/MariaDB's default collations do not, so on
    those this field declares the column with ``utf8mb4_bin``. The collation is chosen per
    connection, so migrations stay the same for every database.
    """

    def db_parameters(self, connection: BaseDatabaseWrapper) -> dict[str, Any]:
        """The column parameters, with a binary collation on MySQL/MariaDB."""
        params: dict[str, Any] = super().db_parameters(connection)
        if connection.vendor == "mysql" and not getattr(self, "db_collation", None):
            params["collation"] = BINARY_COLLATION_MYSQL
        return params
