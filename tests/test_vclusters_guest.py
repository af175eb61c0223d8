"""vClusters on real guests, real PKI and a real kubectl (the issue's acceptance).

No Kubernetes server binary can be installed here, so the test guest (scripts/build_test_guest.py) stands in for
the API server: at boot it applies the static IPv4 address of its NoCloud network-config, writes the files of the
user-data's `write_files` (the contract in api/vcluster_pki.py), and, when it was given an API-server certificate,
serves TLS on 6443 with it, requiring a client certificate signed by the CA it was given (`openssl s_server`). A real
template image would run `kubeadm init` instead (the user-data's `runcmd`, which the stand-in ignores).

Three nodes run inside a network namespace of the test's own (tests/netns.py) with a bridge `vmbr0` (10.77.0.1/24)
that the guests' NICs join; kubectl runs inside it too. The host's network is never touched.
"""

from __future__ import annotations

import glob
import os
import ssl
import subprocess

import pytest

from tests import netns
from tests.guest import build_guest, kernel_args, qemu_missing, serial_text
from tests.harness import Cluster, done, kill_guests, ok, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.skipif(qemu_missing() is not None, reason=qemu_missing() or ""),
              pytest.mark.skipif(netns.unavailable() is not None, reason=netns.unavailable() or "")]
NET = {"bridge": "vmbr0", "cidr": "10.77.0.0/24", "gateway": "10.77.0.1"}
READY = 240  # s: the guests boot without KVM
MIB = 1 << 20


@pytest.fixture(scope="module")
def ns():
    with netns.Netns() as space:
        space.bridge("vmbr0", "10.77.0.1/24")
        with space.joined():
            yield space


@pytest.fixture(scope="module")
def cluster(ns, tmp_path_factory):
    made = Cluster(str(tmp_path_factory.mktemp("vcguest")), 3)
    for node in made.nodes:
        node.prefix = ns.prefix
        node.extra_args = ["--vcluster-ready-timeout", str(READY)]
    made.start()
    yield made
    made.stop()
    for node in made.nodes:
        kill_guests(node.data_dir)


@pytest.fixture(scope="module")
def templates(cluster) -> dict[str, int]:
    """A vCluster template of the test guest on n1 and one on n3 (local storage: clones stay on their node)."""
    px, s = cluster.node("n1").api(), cluster.node("n1").session()
    out = {}
    for name in ("n1", "n3"):
        vmid = int(px.cluster.nextid.get())
        ok(px, px.nodes(name).qemu.create(vmid=vmid, name=f"k8s-{name}", memory=256, kvm=0, serial0="socket",
                                          args=kernel_args(build_guest()), virtio0="local:1", ide2="local:cloudinit",
                                          net0="virtio,bridge=vmbr0"))
        r = s.post(f"{v1(cluster)}/templates", json={"source_vmid": vmid, "kind": "vcluster",
                                                     "k8s_versions": ["1.28.0"]}, timeout=120)
        assert r.status_code == 200, r.text
        out[name] = vmid
    return out


def v1(cluster) -> str:
    return f"https://127.0.0.1:{cluster.node('n1').api_port}/v1"


def create(cluster, name: str, **spec) -> dict:
    body = {"name": name, "k8s_version": "1.28.0", "resources": {"cpu": 1, "memory": "256Mi"}, "network": NET} | spec
    r = cluster.node("n1").session().post(f"{v1(cluster)}/vclusters", json=body, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def running(cluster, made: dict) -> dict:
    """Wait for the vCluster's task to end OK; its record."""
    px = cluster.node("n1").api()
    status = done(px, made["upid"], timeout=READY + 120)
    log = "\n".join(line["t"] for line in px.nodes(made["upid"].split(":")[1]).tasks(made["upid"]).log.get())
    assert status["exitstatus"] == "OK", log
    row = cluster.node("n1").session().get(f"{v1(cluster)}/vclusters/{made['id']}", timeout=10).json()
    assert row["status"] == "running", row
    return row


def kubeconfig(cluster, vc_id: str, tmp_path) -> str:
    r = cluster.node("n1").session().get(f"{v1(cluster)}/vclusters/{vc_id}/kubeconfig", timeout=10)
    assert r.status_code == 200, r.text
    path = tmp_path / f"{vc_id}.kubeconfig"
    path.write_text(r.text)
    return str(path)


def kubectl(ns, config: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*ns.prefix, "kubectl", "--kubeconfig", config, "--request-timeout", "10s", *args],
                          capture_output=True, text=True, timeout=60)


def test_a_vcluster_runs_kubectl_reaches_it_scale_and_delete(cluster, templates, ns, tmp_path):
    px, s = cluster.node("n1").api(), cluster.node("n1").session()
    alpha = running(cluster, create(cluster, "alpha", isolation="vm", node_selector={"node": "n1"}))
    assert alpha["endpoints"]["api_server"] == "https://10.77.0.2:6443" and alpha["node"] == "n1"
    cp = alpha["guests"][0]["vmid"]
    assert "GPVE-NET-STATIC" in serial_text(cluster.node("n1"), cp)
    config = kubeconfig(cluster, alpha["id"], tmp_path)
    answer = kubectl(ns, config, "get", "--raw", "/")
    print("the stand-in API server answered kubectl:\n" + answer.stdout[:600])
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip()

    # another vCluster's kubeconfig is refused by alpha's API server: its CA does not know alpha's certificate ...
    beta = running(cluster, create(cluster, "beta", node_selector={"node": "n1"}))
    assert beta["endpoints"]["api_server"] == "https://10.77.0.3:6443"
    other = kubeconfig(cluster, beta["id"], tmp_path)
    with open(other) as f:
        text = f.read().replace("https://10.77.0.3:6443", "https://10.77.0.2:6443")
    with open(other, "w") as f:
        f.write(text)
    refused = kubectl(ns, other, "get", "--raw", "/")
    assert refused.returncode != 0 and "certificate" in refused.stderr, refused.stderr
    # ... and alpha's server refuses beta's admin certificate even to a client that trusts alpha's CA
    assert kubectl(ns, kubeconfig(cluster, beta["id"], tmp_path), "get", "--raw", "/").returncode == 0
    assert client_refused(cluster, alpha["id"], beta["id"], tmp_path)
    # the status follows the guests (tester's finding 4): beta's control plane stopped, it is failed until it runs
    cp_beta = beta["guests"][0]["vmid"]
    ok(px, px.nodes("n1").qemu(cp_beta).status.stop.post())
    row = s.get(f"{v1(cluster)}/vclusters/{beta['id']}", timeout=10).json()
    assert (row["status"], row["reason"]) == ("failed", f"VM {cp_beta} (beta-cp) is stopped")
    ok(px, px.nodes("n1").qemu(cp_beta).status.start.post())
    assert s.get(f"{v1(cluster)}/vclusters/{beta['id']}", timeout=10).json()["status"] == "running"

    # scale: more memory (pending, then a restart) and a worker
    r = s.post(f"{v1(cluster)}/vclusters/{alpha['id']}/scale", json={"resources": {"memory": "320Mi"}, "workers": 1},
               timeout=30)
    assert r.status_code == 200, r.text
    assert s.get(f"{v1(cluster)}/vclusters/{alpha['id']}", timeout=10).json()["status"] == "scaling"
    scaled = running(cluster, {"id": alpha["id"], "upid": r.json()["upid"]})
    assert (scaled["workers"], scaled["resources"]["memory"]) == (1, "320Mi")
    assert [(g["role"], g["address"]) for g in scaled["guests"]] == [("cp", "10.77.0.2"), ("w1", "10.77.0.4")]
    for guest in scaled["guests"]:
        status = px.nodes("n1").qemu(guest["vmid"]).status.current.get()
        assert status["status"] == "running" and status["maxmem"] == 320 * MIB, status
    worker = scaled["guests"][1]["vmid"]
    wait_for(lambda: "GPVE-WRITE-FILE /etc/kubernetes/gpve-kubeadm.yaml" in serial_text(cluster.node("n1"), worker),
             timeout=120)
    assert kubectl(ns, config, "get", "--raw", "/").returncode == 0  # the restarted control plane answers again
    r = s.post(f"{v1(cluster)}/vclusters/{alpha['id']}/scale", json={"workers": 0}, timeout=30)
    assert running(cluster, {"id": alpha["id"], "upid": r.json()["upid"]})["workers"] == 0
    assert worker not in [int(g["vmid"]) for g in px.cluster.resources.get(type="vm")]

    for vc in (alpha, beta):
        ok(px, s.delete(f"{v1(cluster)}/vclusters/{vc['id']}", timeout=10).json()["upid"])
    assert_nothing_left(cluster, templates)


def client_refused(cluster, server_vc: str, client_vc: str, tmp_path) -> bool:
    """Whether the API server of `server_vc` refuses a TLS client presenting `client_vc`'s admin certificate."""
    import base64

    import yaml

    def parts(vc_id: str) -> dict:
        doc = yaml.safe_load(open(kubeconfig(cluster, vc_id, tmp_path)))
        return {"ca": base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"]).decode(),
                "cert": base64.b64decode(doc["users"][0]["user"]["client-certificate-data"]).decode(),
                "key": base64.b64decode(doc["users"][0]["user"]["client-key-data"]).decode()}

    server, client = parts(server_vc), parts(client_vc)
    pem = tmp_path / "client.pem"
    pem.write_text(client["cert"] + client["key"])
    context = ssl.create_default_context(cadata=server["ca"])
    context.load_cert_chain(str(pem))
    import socket

    try:
        with socket.create_connection(("10.77.0.2", 6443), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname="10.77.0.2") as tls:
            tls.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return not tls.recv(64).startswith(b"HTTP/")
    except (OSError, ssl.SSLError):
        return True


def test_a_node_failure_during_provisioning_fails_it_and_a_retry_works(cluster, templates, ns, tmp_path):
    px, s = cluster.node("n1").api(), cluster.node("n1").session()
    spec = {"node_selector": {"node": "n3"}, "template": templates["n3"]}
    made = create(cluster, "gamma", **spec)

    def cp_running() -> bool:
        row = s.get(f"{v1(cluster)}/vclusters/{made['id']}", timeout=10).json()
        vmid = next((g.get("vmid") for g in row["guests"] if g["role"] == "cp"), None)
        return vmid is not None and any(g["vmid"] == vmid and g["status"] == "running"
                                        for g in px.cluster.resources.get(type="vm"))

    wait_for(cp_running, timeout=120)
    cluster.node("n3").kill()  # the vCluster's node fails while the create waits for its API server
    status = done(px, made["upid"], timeout=120)
    assert status["exitstatus"] == "node 'n3' went offline"
    row = s.get(f"{v1(cluster)}/vclusters/{made['id']}", timeout=10).json()
    assert (row["status"], row["reason"]) == ("failed", "node 'n3' went offline")

    cluster.node("n3").start()
    cluster.node("n3").wait_ready(60)
    again = create(cluster, "gamma", **spec)  # the retry rule: the same name provisions it anew
    assert again["id"] == made["id"]
    row = running(cluster, again)
    assert row["endpoints"]["api_server"].startswith("https://10.77.0.")
    assert kubectl(ns, kubeconfig(cluster, made["id"], tmp_path), "get", "--raw", "/").returncode == 0
    vms = [g["vmid"] for g in px.cluster.resources.get(type="vm") if g["node"] == "n3"]
    assert sorted(vms) == sorted([templates["n3"], row["guests"][0]["vmid"]])  # the failed attempt's guest is gone
    ok(px, s.delete(f"{v1(cluster)}/vclusters/{made['id']}", timeout=10).json()["upid"])
    assert_nothing_left(cluster, templates)


def assert_nothing_left(cluster, templates: dict[str, int]) -> None:
    """No vCluster, no guest but the templates, no volume of another guest, no snippet."""
    px, s = cluster.node("n1").api(), cluster.node("n1").session()
    assert s.get(f"{v1(cluster)}/vclusters", timeout=10).json() == {"items": []}
    assert sorted(g["vmid"] for g in px.cluster.resources.get(type="vm")) == sorted(templates.values())
    for node in cluster.nodes:
        local = os.path.join(node.data_dir, "storage", "local")
        assert glob.glob(os.path.join(local, "snippets", "vc-*")) == []
        owners = {int(os.path.basename(d)) for d in glob.glob(os.path.join(local, "images", "*"))
                  if os.listdir(d)}
        assert owners <= set(templates.values())
