"""TLS material of a node: a cluster CA and a node certificate signed by it, made on first start.

`ssl/` is 0700 and the private keys in it 0600 (`engine.private`).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from engine.private import private_dir, write_private


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def ensure_node_certificate(directory: str, node: str, ips: list[str]) -> tuple[str, str, str]:
    """Create (once) `pve-root-ca.pem`, `pve-ssl.pem` and `pve-ssl.key`; return their paths."""
    private_dir(directory, files=True)
    ca_cert_path = os.path.join(directory, "pve-root-ca.pem")
    ca_key_path = os.path.join(directory, "pve-root-ca.key")
    cert_path = os.path.join(directory, "pve-ssl.pem")
    key_path = os.path.join(directory, "pve-ssl.key")
    now = datetime.datetime.now(datetime.UTC)
    if not os.path.exists(ca_cert_path):
        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"gpve Cluster CA ({node})"),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gpve")])
        ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(ca_key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
              .not_valid_after(now + datetime.timedelta(days=3650))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .sign(ca_key, hashes.SHA256()))
        write_private(ca_key_path, _key_pem(ca_key))
        with open(ca_cert_path, "wb") as f:
            f.write(ca.public_bytes(serialization.Encoding.PEM))
    if not os.path.exists(cert_path):
        with open(ca_key_path, "rb") as f:
            ca_key = serialization.load_pem_private_key(f.read(), None)
        with open(ca_cert_path, "rb") as f:
            ca = x509.load_pem_x509_certificate(f.read())
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys([node, "localhost",
                                                                                 socket.gethostname()])]
        for ip in dict.fromkeys(ips + ["127.0.0.1"]):
            names.append(x509.IPAddress(ipaddress.ip_address(ip)))
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node)]))
                .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=730))
                .add_extension(x509.SubjectAlternativeName(names), critical=False)
                .sign(ca_key, hashes.SHA256()))
        write_private(key_path, _key_pem(key))
        with open(cert_path, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
    return ca_cert_path, cert_path, key_path


def certificate_fingerprint(cert_path: str) -> str:
    """SHA-256 fingerprint as 32 colon-separated upper-case hex pairs, as Proxmox shows it."""
    with open(cert_path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def adopt_cluster_ca(directory: str, ca_cert_pem: str, ca_key_pem: str, node: str, ips: list[str]) -> None:
    """Make the cluster's CA this node's (on join) and reissue the node certificate from it."""
    write_private(os.path.join(directory, "pve-root-ca.key"), ca_key_pem.encode())
    with open(os.path.join(directory, "pve-root-ca.pem"), "w") as f:
        f.write(ca_cert_pem)
    for name in ("pve-ssl.pem", "pve-ssl.key"):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            os.unlink(path)
    ensure_node_certificate(directory, node, ips)
