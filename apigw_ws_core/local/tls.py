"""TLS for the local gateway: ``wss://`` and ``https://`` with a locally generated CA.

Real samples build their Management API endpoint as ``https://{domainName}/{stage}``; with
``--tls`` the gateway serves TLS on its one port, so that URL reaches it unchanged. The
certificates come from `trustme <https://trustme.readthedocs.io>`_: a CA kept in a
directory (created once, reused on later runs so a browser or OS trust store needs to
learn it only once) and a fresh server certificate for ``localhost``, ``127.0.0.1``,
``::1`` and the listen host, signed by it. Two files matter to clients:

* ``ca.pem``: the CA alone, for ``NODE_EXTRA_CA_CERTS`` and browser/OS trust stores;
* ``bundle.pem``: botocore's usual CA bundle plus the local CA, for ``AWS_CA_BUNDLE`` and
  ``REQUESTS_CA_BUNDLE`` (both *replace* the default bundle, so real AWS endpoints must
  stay trusted).
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from collections.abc import Iterable
from pathlib import Path

import attrs

__all__ = ["TlsSetup", "default_tls_dir", "make_tls"]

_CA_CERT = "ca.pem"
_CA_KEY = "ca-key.pem"
_BUNDLE = "bundle.pem"


def default_tls_dir() -> Path:
    """``$XDG_CACHE_HOME/apigw-ws/local-tls`` (``~/.cache/...`` without the variable)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "apigw-ws" / "local-tls"


@attrs.frozen
class TlsSetup:
    """The server's TLS context and the files clients use to trust it."""

    context: ssl.SSLContext
    ca_file: Path
    bundle_file: Path
    hosts: tuple[str, ...]


def _default_bundle() -> str:
    """The CA bundle botocore uses when ``AWS_CA_BUNDLE`` is unset."""
    from botocore.httpsession import get_cert_path

    return str(get_cert_path(True))


def _write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def make_tls(directory: str | Path | None = None, hosts: Iterable[str] = ()) -> TlsSetup:
    """Create (or reuse) the local CA in ``directory`` and a server certificate for ``hosts``.

    ``localhost``, ``127.0.0.1`` and ``::1`` are always included; ``0.0.0.0``/``::`` are
    skipped (nobody connects to them by name).
    """
    import trustme  # the [local] extra

    folder = Path(directory) if directory is not None else default_tls_dir()
    folder.mkdir(parents=True, exist_ok=True)
    ca_path, key_path = folder / _CA_CERT, folder / _CA_KEY
    if ca_path.is_file() and key_path.is_file():
        ca = trustme.CA.from_pem(ca_path.read_bytes(), key_path.read_bytes())
    else:
        ca = trustme.CA(organization_name="apigw-ws local gateway")
        _write_private(key_path, ca.private_key_pem.bytes())
        ca_path.write_bytes(ca.cert_pem.bytes())
    names = ["localhost", "127.0.0.1", "::1"]
    for host in hosts:
        if host and host not in names and host not in ("0.0.0.0", "::"):  # noqa: S104
            try:
                ipaddress.ip_address(host)
            except ValueError:
                if not host.replace("-", "").replace(".", "").isalnum():
                    continue
            names.append(host)
    leaf = ca.issue_cert(*names)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    bundle_path = folder / _BUNDLE
    bundle_path.write_bytes(Path(_default_bundle()).read_bytes() + b"\n" + ca.cert_pem.bytes())
    return TlsSetup(context, ca_path, bundle_path, tuple(names))
