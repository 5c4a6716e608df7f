"""Finding the running local gateway, so that sending from another terminal needs no setup.

Every ``apigw-ws local`` (also when started by ``flask apigw-ws local``, ``manage.py
apigw_ws_local`` or ``scripts/demo``) writes one small JSON file into a per-user directory
while it serves, and removes it when it stops::

    $APIGW_WS_RUNTIME_DIR                       if set (tests use it to stay isolated)
    $XDG_RUNTIME_DIR/apigw-ws                   on Linux desktops
    %LOCALAPPDATA%\\apigw-ws                     on Windows
    ~/.cache/apigw-ws                           otherwise

A :class:`~apigw_ws_core.app.WebSocketApp` with no ``management_endpoint`` and no provisioned
gateway record looks here (:func:`find_local_gateway`) before giving up, so ``flask apigw-ws
send``, ``manage.py apigw_ws_send`` and ``apigw-ws send --app`` reach the gateway that fronts
the app. The file holds the SHA-256 of the gateway's ``--secret`` (never the secret), which
tells which gateway belongs to which app when several run. Files of processes that have died
are ignored and removed.

Only loopback gateways are recorded: this is a development convenience, never a way to find
AWS endpoints (those come from configuration or the provisioned gateway record).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs

from apigw_ws_core.errors import ConfigurationError

__all__ = [
    "LocalGateway",
    "find_local_gateway",
    "is_loopback",
    "register_local_gateway",
    "running_local_gateways",
    "runtime_dir",
    "secret_digest",
    "unregister_local_gateway",
]

#: Environment variable naming the directory of the discovery files.
RUNTIME_DIR_ENV = "APIGW_WS_RUNTIME_DIR"


@attrs.frozen
class LocalGateway:
    """One running local gateway, as its discovery file describes it."""

    pid: int
    host: str
    port: int
    stage: str
    #: ``http://HOST:PORT/STAGE``: what ``management_endpoint`` would be set to.
    management_endpoint: str
    #: ``ws://HOST:PORT/STAGE``: where browsers connect.
    ws_url: str
    #: SHA-256 (hex) of the ``X-Apigw-Ws-Secret`` value the gateway sends, if any.
    secret_sha256: str | None
    #: Backend the gateway calls (``--backend`` URL, ``lambda:module:function``, or ``None``).
    backend: str | None
    started: float
    path: Path = attrs.field(eq=False)
    #: With ``--tls``: the CA bundle (the usual roots plus the gateway's local CA) that
    #: senders verify the gateway's certificate with.
    ca_bundle: str | None = None


def runtime_dir() -> Path:
    """The per-user directory holding the discovery files (not created here)."""
    override = os.environ.get(RUNTIME_DIR_ENV)
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and Path(xdg).is_dir():
        return Path(xdg) / "apigw-ws"
    if sys.platform == "win32":  # pragma: no cover - platform specific
        base = os.environ.get("LOCALAPPDATA") or tempfile.gettempdir()
        return Path(base) / "apigw-ws"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "apigw-ws"


def secret_digest(secret: str | None) -> str | None:
    """The SHA-256 hex digest recorded for a gateway secret (``None`` for no secret)."""
    if not secret:
        return None
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (a name or an address) is this machine: ``localhost``,
    127.0.0.0/8 or ``::1``."""
    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - formatting a URL, not binding
        host = "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def register_local_gateway(
    *,
    host: str,
    port: int,
    stage: str,
    secret: str | None = None,
    backend: str | None = None,
    tls: bool = False,
    ca_bundle: str | None = None,
) -> Path | None:
    """Write this process's discovery file; return its path (``None``: not recorded,
    because the gateway does not listen on loopback or the directory is not writable).
    Remove it with :func:`unregister_local_gateway` when the gateway stops."""
    url_host = _url_host(host)
    if not is_loopback(url_host):
        return None
    scheme = "https" if tls else "http"
    record = {
        "pid": os.getpid(),
        "host": url_host.strip("[]"),
        "port": port,
        "stage": stage,
        "management_endpoint": f"{scheme}://{url_host}:{port}/{stage}",
        "ws_url": f"{'wss' if tls else 'ws'}://{url_host}:{port}/{stage}",
        "secret_sha256": secret_digest(secret),
        "backend": backend,
        "started": time.time(),
        "ca_bundle": ca_bundle if tls else None,
    }
    directory = runtime_dir()
    path = directory / f"gateway-{os.getpid()}-{port}.json"
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".gateway-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(record, handle)
        os.replace(tmp, path)
    except OSError:
        return None
    return path


def unregister_local_gateway(path: Path | None) -> None:
    """Remove a discovery file written by :func:`register_local_gateway` (if still there)."""
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink()


def _pid_alive(pid: int) -> bool:
    if sys.platform == "win32":  # pragma: no cover - os.kill(pid, 0) would terminate it
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's process
        return True
    return True


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _load(path: Path) -> LocalGateway | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return LocalGateway(
            pid=int(data["pid"]),
            host=str(data["host"]),
            port=int(data["port"]),
            stage=str(data["stage"]),
            management_endpoint=str(data["management_endpoint"]),
            ws_url=str(data["ws_url"]),
            secret_sha256=data.get("secret_sha256") or None,
            backend=data.get("backend") or None,
            started=float(data.get("started", 0.0)),
            path=path,
            ca_bundle=data.get("ca_bundle") or None,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def running_local_gateways() -> list[LocalGateway]:
    """The local gateways running now, newest first. Files of dead processes are removed."""
    directory = runtime_dir()
    try:
        paths = sorted(directory.glob("gateway-*.json"))
    except OSError:
        return []
    found = []
    for path in paths:
        gateway = _load(path)
        if gateway is None or not _pid_alive(gateway.pid):
            unregister_local_gateway(path)
            continue
        if gateway.pid != os.getpid() and not _port_open(gateway.host, gateway.port):
            continue  # starting or stopping: not usable, but not ours to delete
        found.append(gateway)
    found.sort(key=lambda g: g.started, reverse=True)
    return found


def find_local_gateway(secret: str | None) -> LocalGateway | None:
    """The running local gateway that fronts an app with this ``secret``, or ``None``.

    A gateway whose recorded secret digest matches wins (the newest, if several). Otherwise a
    gateway without a secret (``--lambda``, ``--config``) is taken when it is the only one;
    a lone gateway is taken too when the app has no secret.

    :raises ConfigurationError: when several gateways could be meant; the message lists them.
    """
    gateways = running_local_gateways()
    digest = secret_digest(secret)
    if digest is not None:
        matching = [g for g in gateways if g.secret_sha256 == digest]
        if matching:
            return matching[0]
    unsecured = [g for g in gateways if g.secret_sha256 is None]
    if len(unsecured) == 1:
        return unsecured[0]
    if digest is None and len(gateways) == 1:
        return gateways[0]
    if len(unsecured) > 1 or (digest is None and len(gateways) > 1):
        listed = ", ".join(g.management_endpoint for g in (unsecured or gateways))
        raise ConfigurationError(
            f"several local gateways are running ({listed}); set management_endpoint "
            "(APIGW_WS_MANAGEMENT_ENDPOINT) to the one this app should use"
        )
    return None
