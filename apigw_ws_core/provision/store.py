"""Where gateway records are kept between runs.

Provisioning needs two methods, ``get_gateway`` and ``save_gateway``:
:class:`~apigw_ws_core.gateways.GatewayStore` names that pair. The built-in storages
implement it, and so does :class:`FileGatewayStore` (a JSON state file for the CLI when
there is no database) or :class:`MemoryGatewayStore` (a dict, for one-off runs and tests).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs

from apigw_ws_core.gateways import GatewayRecord, GatewayStore
from apigw_ws_core.provision.errors import ProvisionError

__all__ = [
    "FileGatewayStore",
    "GatewayStore",
    "MemoryGatewayStore",
    "record_from_dict",
    "record_to_dict",
]


def record_to_dict(record: GatewayRecord) -> dict[str, Any]:
    """A JSON-able dict of a record (``updated_at`` as ISO 8601)."""
    data = attrs.asdict(record)
    data["updated_at"] = record.updated_at.isoformat() if record.updated_at else None
    return data


def record_from_dict(data: dict[str, Any]) -> GatewayRecord:
    """The inverse of :func:`record_to_dict`; unknown keys are ignored."""
    fields = {f.name for f in attrs.fields(GatewayRecord)}
    values = {k: v for k, v in data.items() if k in fields}
    if values.get("updated_at"):
        values["updated_at"] = datetime.fromisoformat(values["updated_at"])
    values["resources"] = dict(values.get("resources") or {})
    return GatewayRecord(**values)


class MemoryGatewayStore:
    """Gateway records in a dict: nothing survives the process."""

    def __init__(self) -> None:
        self._records: dict[str, GatewayRecord] = {}
        self._lock = threading.Lock()

    def get_gateway(self, name: str) -> GatewayRecord | None:
        """The record with this name, or ``None``."""
        with self._lock:
            return self._records.get(name)

    def save_gateway(self, record: GatewayRecord) -> None:
        """Insert or replace the record named ``record.name``."""
        with self._lock:
            self._records[record.name] = record


class FileGatewayStore:
    """Gateway records in a JSON file (``{"gateways": {name: record}}``).

    Every save rewrites the file atomically (write to a temporary file, then rename), so a
    crash mid-apply never leaves a half-written state file. The file holds resource ids and
    endpoints only, never the secret.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def _load(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {"gateways": {}}
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ProvisionError(f"state file {self.path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("gateways"), dict):
            raise ProvisionError(f"state file {self.path} is not an apigw-ws state file")
        return data

    def get_gateway(self, name: str) -> GatewayRecord | None:
        """The record with this name, or ``None`` (also when the file does not exist)."""
        with self._lock:
            raw = self._load()["gateways"].get(name)
        return record_from_dict(raw) if raw else None

    def save_gateway(self, record: GatewayRecord) -> None:
        """Insert or replace the record named ``record.name`` and rewrite the file."""
        with self._lock:
            data = self._load()
            data["gateways"][record.name] = record_to_dict(record)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(data, fh, indent=2, sort_keys=True)
                    fh.write("\n")
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
