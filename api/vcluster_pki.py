"""A vCluster's keys and certificates (`cryptography`), sealed for the log, and the files made from them: the
kubeconfig and each guest's cloud-init user-data.

The PKI (`make`): a cluster CA (`CN=kubernetes`, as kubeadm names it), the API server's certificate (SANs: the
endpoint address, the control plane's node name `NAME-cp`, `kubernetes`, `kubernetes.default`,
`kubernetes.default.svc`, `kubernetes.default.svc.cluster.local` and the first service address 10.96.0.1), the admin
client certificate (`CN=admin, O=system:masters`), the service-account key pair and a kubeadm bootstrap token for
workers. As a dict of PEM texts keyed by file name (`ca.crt`, `ca.key`,
`apiserver.crt`, `apiserver.key`, `admin.crt`, `admin.key`, `sa.key`, `sa.pub`) plus `token`.
It enters the log sealed (`seal`, Fernet under a key derived from the cluster's Raft key, which only members hold),
as webhook secrets do; only the kubeconfig and the guest's snippet ever hold keys in clear.

The user-data (`user_data`) is the contract with the template image: a `#cloud-config` with `hostname`, then
`write_files` whose every entry is written as `- path: P`, `  encoding: b64`, `  permissions: 'MODE'`,
`  content: BASE64` (one line each, in this order), then `runcmd` with kubeadm init (control plane) or join (workers).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
import secrets
import string

from cryptography import x509
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from engine.errors import Rejection

SERVICE_IP = "10.96.0.1"  # the `kubernetes` service's address in kubeadm's default service network
SERVICE_SUBNET = "10.96.0.0/12"
SERVICE_NAMES = ("kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")
PORT = 6443
KUBEADM_CONFIG = "/etc/kubernetes/gpve-kubeadm.yaml"
PKI_DIR = "/etc/kubernetes/pki"
CA_DAYS, CERT_DAYS = 3650, 365
# file name -> permissions, for the control plane; workers get none (`kubeadm join` refuses an existing ca.crt in its
# preflight and fetches the CA itself, checked against `caCertHashes`)
CP_FILES = {"ca.crt": "0644", "ca.key": "0600", "apiserver.crt": "0644", "apiserver.key": "0600", "sa.key": "0600",
            "sa.pub": "0644"}
WORKER_FILES: dict[str, str] = {}


def _pem_key(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _pem_cert(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _name(cn: str, org: str | None = None) -> x509.Name:
    parts = ([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)] if org else []) + \
        [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    return x509.Name(parts)


def _cert(subject: x509.Name, key, issuer: x509.Name, issuer_key, days: int, now: datetime.datetime, *,
          ca: bool = False, usage: list | None = None, sans: list | None = None) -> x509.Certificate:
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=not ca, key_cert_sign=ca,
                                            crl_sign=ca, content_commitment=False, data_encipherment=False,
                                            key_agreement=False, encipher_only=False, decipher_only=False),
                              critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make(address: str, node_name: str, now: datetime.datetime | None = None) -> dict[str, str]:
    """A new PKI for a vCluster whose API server listens on `address` on the control plane named `node_name`
    (`NAME-cp`: kubeadm's nodeRegistration.name, which its apiserver certificate carries too; see the module's
    docstring)."""
    now = now or datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("kubernetes")
    ca = _cert(ca_name, ca_key, ca_name, ca_key, CA_DAYS, now, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.IPAddress(ipaddress.IPv4Address(address)), *map(x509.DNSName, (node_name, *SERVICE_NAMES)),
            x509.IPAddress(ipaddress.IPv4Address(SERVICE_IP))]
    server = _cert(_name("kube-apiserver"), server_key, ca_name, ca_key, CERT_DAYS, now,
                   usage=[ExtendedKeyUsageOID.SERVER_AUTH], sans=sans)
    admin_key = ec.generate_private_key(ec.SECP256R1())
    admin = _cert(_name("admin", "system:masters"), admin_key, ca_name, ca_key, CERT_DAYS, now,
                  usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    alphabet = string.ascii_lowercase + string.digits
    token = "".join(secrets.choice(alphabet) for _ in range(6)) + "." + \
        "".join(secrets.choice(alphabet) for _ in range(16))  # kubeadm's `[a-z0-9]{6}.[a-z0-9]{16}`
    return {"ca.crt": _pem_cert(ca), "ca.key": _pem_key(ca_key), "apiserver.crt": _pem_cert(server),
            "apiserver.key": _pem_key(server_key), "admin.crt": _pem_cert(admin), "admin.key": _pem_key(admin_key),
            "sa.key": _pem_key(sa_key),
            "sa.pub": sa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo).decode(),
            "token": token}


# ---- sealing ---------------------------------------------------------------------------------------------
def _fernet(raft_key: str | None) -> Fernet:
    if not raft_key:
        raise Rejection(500, "vCluster keys need the cluster's Raft key")
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"gpve vcluster keys").derive(raft_key.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def seal(raft_key: str | None, pki: dict[str, str]) -> str:
    return _fernet(raft_key).encrypt(json.dumps(pki, sort_keys=True).encode()).decode()


def unseal(raft_key: str | None, sealed: str) -> dict[str, str]:
    """The clear PKI; 500 when this node's key cannot open it (or it was not made yet: 409)."""
    if not sealed:
        raise Rejection(409, "the vCluster's keys are not made yet")
    try:
        return json.loads(_fernet(raft_key).decrypt(sealed.encode()))
    except InvalidToken:
        raise Rejection(500, "vCluster keys cannot be opened with this node's cluster key") from None


# ---- files made from it ----------------------------------------------------------------------------------
def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def kubeconfig(name: str, server: str, pki: dict[str, str]) -> str:
    """The kubeconfig of the spec's shape: cluster and context named after the vCluster, user `admin`."""
    return (f"apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: {server}\n"
            f"    certificate-authority-data: {_b64(pki['ca.crt'])}\n  name: {name}\n"
            f"contexts:\n- context:\n    cluster: {name}\n    user: admin\n  name: {name}\n"
            f"current-context: {name}\nusers:\n- name: admin\n  user:\n"
            f"    client-certificate-data: {_b64(pki['admin.crt'])}\n    client-key-data: {_b64(pki['admin.key'])}\n")


def ca_cert_hash(pki: dict[str, str]) -> str:
    """kubeadm's `--discovery-token-ca-cert-hash`: SHA-256 of the CA's SubjectPublicKeyInfo."""
    ca = x509.load_pem_x509_certificate(pki["ca.crt"].encode())
    spki = ca.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def kubeadm_config(vc: dict, role: str, pki: dict[str, str]) -> str:
    """kubeadm's configuration for one guest: Init + Cluster configuration on the control plane (untainted with
    `namespace` isolation: it runs the workloads), a Join configuration on workers."""
    endpoint = f"{vc['addresses']['cp']}:{PORT}"
    version = "v" + vc["k8s_version"].removeprefix("v")
    node_name = f"{vc['name']}-{role}"
    if role != "cp":
        return ("apiVersion: kubeadm.k8s.io/v1beta3\nkind: JoinConfiguration\ndiscovery:\n  bootstrapToken:\n"
                f"    apiServerEndpoint: {endpoint}\n    token: \"{pki['token']}\"\n"
                f"    caCertHashes:\n    - \"{ca_cert_hash(pki)}\"\nnodeRegistration:\n  name: {node_name}\n")
    taints = "  taints: []\n" if vc["isolation"] == "namespace" else ""
    sans = "".join(f"  - \"{s}\"\n" for s in (vc["addresses"]["cp"], node_name, *SERVICE_NAMES, SERVICE_IP))
    return ("apiVersion: kubeadm.k8s.io/v1beta3\nkind: InitConfiguration\nbootstrapTokens:\n"
            f"- token: \"{pki['token']}\"\n  ttl: \"0s\"\nlocalAPIEndpoint:\n"
            f"  advertiseAddress: {vc['addresses']['cp']}\n  bindPort: {PORT}\nnodeRegistration:\n  name: {node_name}\n"
            f"{taints}---\napiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\n"
            f"clusterName: {vc['name']}\nkubernetesVersion: {version}\ncontrolPlaneEndpoint: {endpoint}\n"
            f"apiServer:\n  certSANs:\n{sans}networking:\n  serviceSubnet: {SERVICE_SUBNET}\n")


def user_data(vc: dict, role: str, pki: dict[str, str]) -> str:
    """The guest's cloud-init user-data (the contract in the module's docstring)."""
    files = CP_FILES if role == "cp" else WORKER_FILES
    entries = [(f"{PKI_DIR}/{name}", mode, pki[name]) for name, mode in files.items()]
    entries.append((KUBEADM_CONFIG, "0600", kubeadm_config(vc, role, pki)))
    lines = ["#cloud-config", f"hostname: {vc['name']}-{role}", "write_files:"]
    for path, mode, text in entries:
        lines += [f"- path: {path}", "  encoding: b64", f"  permissions: '{mode}'", f"  content: {_b64(text)}"]
    command = "init" if role == "cp" else "join"
    lines += ["runcmd:", f"- kubeadm {command} --config {KUBEADM_CONFIG}"]
    return "\n".join(lines) + "\n"
