"""HTTPS: certificates are verified (botocore's CA bundle by default, or a given bundle)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl

import pytest

from apigw_ws_core.errors import ConfigurationError
from apigw_ws_core.http1 import ManagementApiTransport

from .conftest import CREDS
from .server import ScriptedServer


@pytest.fixture(scope="module")
def cert_files(tmp_path_factory):
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it."""
    crypto = pytest.importorskip("cryptography")
    del crypto
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "apigw-ws test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    d = tmp_path_factory.mktemp("tls")
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return d


@pytest.fixture
def tls_server(cert_files):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_files / "cert.pem", cert_files / "key.pem")
    srv = ScriptedServer(ssl_context=ctx)
    yield srv
    srv.stop()


def test_https_with_a_given_ca_bundle(tls_server, cert_files):
    t = ManagementApiTransport(tls_server.url, credentials=CREDS, verify=str(cert_files / "ca.pem"))
    try:
        for i in range(3):
            t.post(f"a{i}", b"x")
    finally:
        t.close()
    assert len(tls_server.requests) == 3 and tls_server.connections == 1


def test_https_verifies_against_the_default_bundle(tls_server):
    t = ManagementApiTransport(tls_server.url, credentials=CREDS)
    try:
        with pytest.raises(ConfigurationError, match="certificate verification failed"):
            t.post("a", b"x")
    finally:
        t.close()
    assert tls_server.requests == []


def test_https_verify_false(tls_server):
    t = ManagementApiTransport(tls_server.url, credentials=CREDS, verify=False)
    try:
        t.post("a", b"x")
    finally:
        t.close()
    assert len(tls_server.requests) == 1
