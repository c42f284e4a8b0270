"""Throw-away TLS material for a local secured Kafka cluster, made with ``cryptography``.

A CA, and one node certificate (``CN=kafka-node``, SANs ``IP:127.0.0.1`` and ``DNS:localhost``)
that every broker and controller presents, as a server and as a client (mutual TLS between
nodes). Files are PEM; keys are unencrypted PKCS#8, which Java 17's PEM keystore reads
(an encrypted PBES2 key fails there: /work/shared/kafka-security-notes.md).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

__all__ = ["NODE_PRINCIPAL", "TlsFiles", "make_tls"]

#: The principal Kafka's default SSL mapping gives a node presenting the node certificate.
NODE_PRINCIPAL = "User:CN=kafka-node"


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # the CA certificate: clients' and nodes' truststore
    node_keystore: Path  # node key + certificate + CA, one PEM file (ssl.keystore.type=PEM)
    client_cert: Path  # a client certificate (mutual TLS clients), signed by the CA
    client_key: Path


def make_tls(folder: Path, days: int = 7) -> TlsFiles:
    """Write a fresh CA, node and client certificate into ``folder`` (created if needed)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("wxsub-local-ca"))
        .issuer_name(name("wxsub-local-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        sans = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        return pem_key(key), cert.public_bytes(serialization.Encoding.PEM)

    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    node_key, node_cert = leaf("kafka-node")
    client_key, client_cert = leaf("wxsub-client")
    files = TlsFiles(
        ca=folder / "ca.pem",
        node_keystore=folder / "node.pem",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
    )
    files.ca.write_bytes(ca_pem)
    files.node_keystore.write_bytes(node_key + node_cert + ca_pem)
    files.client_cert.write_bytes(client_cert)
    files.client_key.write_bytes(client_key)
    for secret in (files.node_keystore, files.client_key):
        secret.chmod(0o600)
    return files
