"""The test guest's stand-in for the Kubernetes API server, as a vCluster's control-plane guest gets it: its PKI
through a `cicustom` user-data snippet (`write_files:`), its address through `ipconfig0`, then kubectl over TLS
with a client certificate of the cluster's CA.

No Kubernetes server can be installed on this machine, so the guest (scripts/build_test_guest.py) runs Debian's
`openssl s_server` on 6443 with the API server's certificate and key it was given, requiring a client certificate
signed by the given CA; its answer is the TLS session it saw. A real node, running inside a network namespace of the
test's own (tests/netns.py), starts the guest on a bridge that carries the namespace's address 10.77.0.1/24.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests import netns
from tests.guest import build_guest, kernel_args, qemu_missing, serial_text, wait_serial
from tests.harness import node_in, ok

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(netns.unavailable() is not None, reason=netns.unavailable() or ""),
              pytest.mark.skipif(qemu_missing() is not None, reason=qemu_missing() or ""),
              pytest.mark.skipif(shutil.which("kubectl") is None,
                                 reason="kubectl is not installed (Debian's kubernetes-client)")]

GUEST_IP = "10.77.0.10"
PKI = "/etc/kubernetes/pki"


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)] if org else []
    return x509.Name(attrs + [x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: x509.Name, key, issuer: x509.Name | None = None, issuer_key=None, *, ca: bool = False,
          server_ip: str | None = None) -> x509.Certificate:
    """A certificate for `key`, self-signed unless `issuer`/`issuer_key` are given; a CA, a server one (SAN: the IP)
    or a client one."""
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer or subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server_ip:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address(server_ip)), x509.DNSName("kubernetes.default.svc")]), critical=False)
    if not ca:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server_ip else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def _pem(obj) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def pki() -> dict[str, bytes]:
    """The cluster's CA (RSA, as kubeadm makes it), the API server's certificate for the guest's address, an admin
    client certificate; and an unrelated CA (EC) with a client certificate of its own."""
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = _cert(_name("kubernetes"), ca_key, ca=True)
    server_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    admin_key = ec.generate_private_key(ec.SECP256R1())
    other_ca_key = ec.generate_private_key(ec.SECP256R1())
    other_ca = _cert(_name("other-cluster"), other_ca_key, ca=True)
    other_key = ec.generate_private_key(ec.SECP256R1())
    return {
        "ca.crt": _pem(ca),
        "apiserver.crt": _pem(_cert(_name("kube-apiserver"), server_key, ca.subject, ca_key, server_ip=GUEST_IP)),
        "apiserver.key": _pem(server_key),
        "admin.crt": _pem(_cert(_name("kubernetes-admin", "system:masters"), admin_key, ca.subject, ca_key)),
        "admin.key": _pem(admin_key),
        "other.crt": _pem(_cert(_name("kubernetes-admin", "system:masters"), other_key, other_ca.subject,
                                other_ca_key)),
        "other.key": _pem(other_key),
    }


def user_data(pki: dict[str, bytes]) -> str:
    """The vCluster service's user-data, in the contract's shape (each entry's keys on their own lines, the content
    base64 on one line), with keys and sections the guest passes over."""
    text = "#cloud-config\nhostname: vc-test-cp\nwrite_files:\n"
    for name, mode in (("ca.crt", "0644"), ("apiserver.crt", "0644"), ("apiserver.key", "0600")):
        text += (f"- path: {PKI}/{name}\n  encoding: b64\n  owner: root:root\n  permissions: '{mode}'\n"
                 f"  content: {base64.b64encode(pki[name]).decode()}\n")
    return text + "runcmd:\n- [kubeadm, init, --config, /etc/kubernetes/kubeadm.yaml]\n"


def kubeconfig(pki: dict[str, bytes], cert: str, key: str) -> str:
    """A kubeconfig in Kubernetes' shape: the cluster CA, the endpoint, the client certificate and key as data."""
    b64 = {k: base64.b64encode(v).decode() for k, v in pki.items()}
    return f"""apiVersion: v1
kind: Config
clusters:
- name: vc-test
  cluster:
    certificate-authority-data: {b64['ca.crt']}
    server: https://{GUEST_IP}:6443
users:
- name: vc-test-admin
  user:
    client-certificate-data: {b64[cert]}
    client-key-data: {b64[key]}
contexts:
- name: vc-test
  context:
    cluster: vc-test
    user: vc-test-admin
current-context: vc-test
"""


@pytest.fixture(scope="module")
def guest_dir() -> str:
    return build_guest()  # before the namespace: a first build downloads Debian's packages


@pytest.fixture(scope="module")
def ns(guest_dir):
    """The namespace with bridge vmbr1 carrying 10.77.0.1/24; this thread inside it meanwhile."""
    with netns.Netns() as space:
        space.bridge("vmbr1", "10.77.0.1/24")
        with space.joined():
            yield space


@pytest.fixture(scope="module")
def node(ns, tmp_path_factory):
    with node_in(ns.prefix, str(tmp_path_factory.mktemp("k8s-standin"))) as proc:
        yield proc


def tls_get(pki: dict[str, bytes], tmp_path, cert: str | None) -> bytes:
    """GET / from the guest's 6443 over TLS, trusting the cluster CA, presenting `cert` (and its key) or none; the
    first bytes of the answer. ssl.SSLError when the guest refuses."""
    ctx = ssl.create_default_context(cadata=pki["ca.crt"].decode())
    if cert:
        for name in (f"{cert}.crt", f"{cert}.key"):
            (tmp_path / name).write_bytes(pki[name])
        ctx.load_cert_chain(tmp_path / f"{cert}.crt", tmp_path / f"{cert}.key")
    with socket.create_connection((GUEST_IP, 6443), timeout=20) as raw, \
            ctx.wrap_socket(raw, server_hostname=GUEST_IP) as conn:
        conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
        return conn.recv(64)  # TLS 1.3: a refused client certificate shows as the server's alert here


def kubectl(ns, path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*ns.prefix, "kubectl", "--kubeconfig", str(path), "--request-timeout=30s", *args],
                          capture_output=True, text=True, timeout=60)


def test_kubectl_reaches_the_guest_with_the_clusters_client_certificate_only(node, ns, guest_dir, pki, tmp_path):
    snippets = os.path.join(node.data_dir, "storage", "local", "snippets")
    os.makedirs(snippets, exist_ok=True)
    with open(os.path.join(snippets, "vc-test-user.yaml"), "w") as f:
        f.write(user_data(pki))
    px = node.api()
    vmid = int(px.cluster.nextid.get())
    ok(px, px.nodes("n1").qemu.create(vmid=vmid, name="vc-test-cp", memory=256, kvm=0, serial0="socket",
                                      args=kernel_args(guest_dir), net0="virtio,bridge=vmbr1",
                                      ide2="local:cloudinit", cicustom="user=local:snippets/vc-test-user.yaml",
                                      ipconfig0=f"ip={GUEST_IP}/24,gw=10.77.0.1"))
    ok(px, px.nodes("n1").qemu(vmid).status.start.post())
    wait_serial(node, vmid, "GPVE-GUEST-READY", timeout=120)
    console = serial_text(node, vmid)
    assert "GPVE-K8S-STANDIN listening" in console, console[-1000:]
    assert f"GPVE-NET-STATIC eth0 {GUEST_IP}/24 gw=10.77.0.1" in console
    for line in (f"{PKI}/ca.crt 0644", f"{PKI}/apiserver.crt 0644", f"{PKI}/apiserver.key 0600"):
        assert f"GPVE-WRITE-FILE {line}" in console
    assert base64.b64encode(pki["apiserver.key"]).decode()[:40] not in console  # the key is not shown

    # another cluster's client certificate, and none, are refused in the handshake; no HTTP answer
    with pytest.raises(ssl.SSLError) as refused:
        tls_get(pki, tmp_path, "other")
    assert refused.value.reason == "TLSV1_ALERT_UNKNOWN_CA"
    with pytest.raises(ssl.SSLError) as refused:
        tls_get(pki, tmp_path, None)
    assert refused.value.reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED"
    other = tmp_path / "other.kubeconfig"
    other.write_text(kubeconfig(pki, "other.crt", "other.key"))
    run = kubectl(ns, other, "get", "--raw", "/")
    assert run.returncode != 0 and "unknown certificate authority" in run.stderr, run

    mine = tmp_path / "admin.kubeconfig"
    mine.write_text(kubeconfig(pki, "admin.crt", "admin.key"))
    assert kubectl(ns, mine, "config", "view", "-o", "jsonpath={.clusters[0].cluster.server}").stdout == \
        f"https://{GUEST_IP}:6443"
    run = kubectl(ns, mine, "get", "--raw", "/")
    assert run.returncode == 0, run
    # the stand-in's answer: the TLS session it accepted, with the admin's certificate verified against the CA
    assert "Verify return code: 0 (ok)" in run.stdout and "Issuer: CN=kubernetes" in run.stdout
    assert "Subject: O=system:masters, CN=kubernetes-admin" in run.stdout, run.stdout
    assert tls_get(pki, tmp_path, "admin").startswith(b"HTTP/1.0 200 ok")
