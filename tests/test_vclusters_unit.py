"""vClusters' pure parts and PKI: quantities, address allocation and placement decided in the log, the refusals,
and the keys, kubeconfig (read by a real kubectl) and user-data made from them."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import re
import shutil
import subprocess

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from api import vcluster_pki
from engine import commands as c
from engine import vclusters as vc
from engine.codec import encode_records
from engine.errors import Rejection
from engine.machine import Machine

GIB = 1 << 30
NET = {"bridge": "vmbr0", "cidr": "10.77.0.0/29", "gateway": "10.77.0.1"}


def run(m: Machine, *commands: c.Command) -> list[dict]:
    return m.execute_entry(encode_records(list(commands)))


def cluster(memory_gib: tuple[int, ...] = (4, 8)) -> Machine:
    """Nodes n1, n2, ... with that much memory (4 CPUs each) and template 900 offering 1.28.0 and 1.29.1."""
    m = Machine()
    for i, gib in enumerate(memory_gib, 1):
        run(m, c.RegisterNode(request_id=f"reg{i}", ts=1.0, name=f"n{i}", ip="127.0.0.1", api_port=8006,
                              raft_addr=f"a:{i}", static={"cpus": 4, "memory": gib * GIB}))
    run(m, c.CreateGuest(request_id="t", ts=1.0, node="n1", vmid=900, upid="U-t", starttime=1,
                         config={"template": 1, "tags": "gpve-vcluster;k8s-1.28.0;k8s-1.29.1"}))
    return m


def create(rid: str, name: str, memory: int = 1024, **kw) -> vc.CreateVCluster:
    args = {"k8s_version": "1.28.0", "isolation": "vm", "cpu": 2, "network": NET, "orchestrator": "n1"} | kw
    return vc.CreateVCluster(request_id=rid, ts=2.0, vc_id=f"vc-{rid}000", name=name, memory=memory, upid=f"U-{rid}",
                             starttime=2, **args)


def test_quantities_as_kubernetes_writes_them():
    assert [vc.memory_mib(q) for q in ("8Gi", "512Mi", "1G", "16777216", "20M", 2 * GIB)] == \
        [8192, 512, 954, 16, 20, 2048]  # rounded up: a guest gets at least what was asked


def test_quantities_refused_with_what_they_look_like():
    with pytest.raises(ValueError, match="use bytes or a suffix such as 512Mi"):
        vc.memory_mib("8GB")
    with pytest.raises(ValueError, match="minimum of 16Mi"):
        vc.memory_mib("1Mi")
    with pytest.raises(ValueError, match="more than the maximum of 4Ti"):
        vc.memory_mib("99999999999999999999999999Gi")
    for spaced in (" 1Gi", "1Gi ", "1 Gi", " 4", "4 "):
        with pytest.raises(ValueError, match="invalid"):
            vc.memory_mib(spaced) if "Gi" in spaced else vc.cpu_cores(spaced)
    with pytest.raises(ValueError, match="maximum of 512 cores"):
        vc.cpu_cores("99999999999999999999999999")
    assert [vc.memory_text(m) for m in (128, 1024, 1536, 954, 4 << 20)] == ["128Mi", "1Gi", "1536Mi", "954Mi", "4Ti"]
    assert [vc.cpu_cores(q) for q in (4, "4", "500m", "1001m")] == [4, 4, 1, 2]
    for bad in ("0", "0m", "1.5", "two"):
        with pytest.raises(ValueError):
            vc.cpu_cores(bad)


def test_addresses_are_the_lowest_free_ones_of_every_vcluster_never_the_gateway():
    m = cluster()
    first, second = run(m, create("a", "one", workers=1), create("b", "two", isolation="namespace"))
    assert first["ok"]["id"] == "vc-a000" and second["ok"]["id"] == "vc-b000"
    assert m.state.vclusters["vc-a000"]["addresses"] == {"cp": "10.77.0.2", "w1": "10.77.0.3"}
    assert m.state.vclusters["vc-b000"]["addresses"] == {"cp": "10.77.0.4"}
    # a /29 has six host addresses: the gateway and three taken leave two
    [full] = run(m, create("c", "three", workers=2))
    assert full["error"] == {"status": 409, "message": "no free address left in 10.77.0.0/29 for the vCluster's "
                                                       "guests"}
    assert "vc-c000" not in m.state.vclusters
    assert vc.allocate(m.state, NET, ["cp", "w1"], keep={"w1": "10.77.0.3"}, skip="vc-a000") == \
        {"w1": "10.77.0.3", "cp": "10.77.0.2"}


def test_placement_takes_the_node_with_the_most_free_memory_and_refuses_when_none_fits():
    m = cluster((4, 8))
    [made] = run(m, create("a", "one", memory=3072))
    assert made["ok"]["node"] == "n2"  # 8 GiB free there
    [made] = run(m, create("b", "two", memory=3072))
    assert made["ok"]["node"] == "n2"  # 5 GiB free there, 4 GiB on n1
    assert vc.free_mib(m.state, "n2") == (2048, 8192)
    [made] = run(m, create("c0", "three", memory=3072))
    assert made["ok"]["node"] == "n1"
    [refused] = run(m, create("c", "four", memory=6144))
    assert refused["error"]["status"] == 409
    assert refused["error"]["message"].startswith("no node can take the vCluster: it needs 1 guest(s) of 2 core(s) "
                                                  "and 6144 MiB (6144 MiB in all) - n1: ")
    [refused] = run(m, create("d", "four", cpu=8))  # more cores than the node has CPUs
    assert refused["error"]["status"] == 409 and "4 CPUs" in refused["error"]["message"]
    [refused] = run(m, create("e", "five", selector="n9"))
    assert refused["error"] == {"status": 400, "message": "Parameter verification failed",
                                "errors": {"node_selector.node": "no such cluster node 'n9'"}}


def test_a_template_on_local_storage_is_cloned_on_its_own_node():
    m = cluster((4, 8))
    run(m, c.CreateGuest(request_id="t2", ts=1.0, node="n1", vmid=901, upid="U-t2", starttime=1,
                         config={"template": 1, "tags": "gpve-vcluster;k8s-1.30.0",
                                 "scsi0": "local:901/base-901-disk-0.qcow2,size=1G"}))
    [made] = run(m, create("a", "one", k8s_version="1.30.0"))
    assert made["ok"]["node"] == "n1"  # n2 has more memory free, but cannot reach n1's local storage
    [refused] = run(m, create("b", "two", k8s_version="1.30.0", selector="n2"))
    assert refused["error"]["errors"] == {"node_selector.node": "no vCluster template offering Kubernetes 1.30.0 can "
                                                                "be cloned onto node 'n2' (their disks are on "
                                                                "another node's local storage)"}
    [refused] = run(m, create("c", "three", k8s_version="1.30.0", selector="n2", template=901))
    assert "cannot be cloned onto node 'n2'" in refused["error"]["errors"]["node_selector.node"]


def test_automatic_placement_considers_every_template_offering_the_version():
    m = cluster((4, 8))
    for vmid, node in ((901, "n1"), (902, "n2")):  # each on its node's local storage
        run(m, c.CreateGuest(request_id=f"t{vmid}", ts=1.0, node=node, vmid=vmid, upid=f"U-{vmid}", starttime=1,
                             config={"template": 1, "tags": "gpve-vcluster;k8s-1.30.0",
                                     "scsi0": f"local:{vmid}/base-{vmid}-disk-0.qcow2,size=1G"}))
    [made] = run(m, create("a", "one", k8s_version="1.30.0"))
    assert made["ok"]["node"] == "n2" and m.state.vclusters["vc-a000"]["template"] == 902  # n2 has more free
    [made] = run(m, create("b", "two", k8s_version="1.30.0", selector="n1"))
    assert m.state.vclusters["vc-b000"]["template"] == 901


def test_create_refusals_write_nothing():
    m = cluster()
    cases = [(create("a", "x", k8s_version="1.30.0"), 400, "k8s_version",
              "unsupported Kubernetes version '1.30.0' - available: 1.28.0, 1.29.1"),
             (create("b", "x", isolation="cluster"), 400, "isolation",
              "value 'cluster' does not have a value in the enumeration 'namespace, vm'"),
             (create("c", "x", isolation="namespace", workers=1), 400, "workers", None),
             (create("d", "Bad_Name"), 400, "name", None),
             (create("e", "x", network={**NET, "gateway": "10.1.1.1"}), 400, "network.gateway",
              "gateway 10.1.1.1 is no host address of 10.77.0.0/29"),
             (create("f", "x", template=901), 400, "template", "VM 901 is no vCluster template")]
    for command, status, key, message in cases:
        [result] = run(m, command)
        assert result["error"]["status"] == status, result
        assert key in result["error"]["errors"]
        assert message is None or result["error"]["errors"][key] == message
    assert m.state.vclusters == {} and not [t for t in m.state.tasks.values() if t["type"] == "vccreate"]


def test_a_name_is_taken_until_its_vcluster_failed_then_a_create_provisions_it_anew():
    m = cluster()
    run(m, create("a", "one", workers=1))
    [dup] = run(m, create("b", "one"))
    assert dup["error"] == {"status": 409, "message": "vCluster 'one' already exists (vc-a000)"}
    # its task ends in an error (its node restarted, say): failed, with the reason
    run(m, c.FinishTask(request_id="f", ts=3.0, upid="U-a", exitstatus="task interrupted - node restarted"))
    record = m.state.vclusters["vc-a000"]
    assert vc.shown_status(m.state, record) == ("failed", "task interrupted - node restarted")
    run(m, vc.UpdateVCluster(request_id="g", ts=3.0, vc_id="vc-a000", values={"guests": {"cp": 100}}))
    [again] = run(m, create("c", "one", workers=0))
    assert again["ok"] == {"id": "vc-a000", "upid": "U-c", "node": "n2"}
    record = m.state.vclusters["vc-a000"]
    assert record["status"] == "provisioning" and record["guests"] == {"cp": 100}  # the new attempt removes it
    assert record["addresses"] == {"cp": "10.77.0.2"}
    [busy] = run(m, vc.StartVClusterTask(request_id="d", ts=4.0, vc_id="vc-a000", type="vcdelete", node="n1",
                                         upid="U-d", starttime=4))
    assert busy["error"] == {"status": 409, "message": "vCluster 'vc-a000' is busy (provisioning) - try again when it "
                                                       "is done, or stop its task (DELETE /nodes/n1/tasks/U-c)"}
    [scale] = run(m, vc.StartVClusterTask(request_id="s", ts=4.0, vc_id="vc-a000", type="vcscale", node="n1",
                                          upid="U-s", starttime=4, intent={"workers": 2}))
    assert scale["error"]["message"] == "vCluster 'vc-a000' is provisioning - only a running vCluster can be scaled"


def test_scaling_allocates_the_new_workers_addresses_in_the_log():
    m = cluster()
    run(m, create("a", "one"))
    run(m, vc.UpdateVCluster(request_id="r", ts=3.0, vc_id="vc-a000", values={"status": "running"}))
    [ok] = run(m, vc.StartVClusterTask(request_id="s", ts=4.0, vc_id="vc-a000", type="vcscale", node="n1",
                                       upid="U-s", starttime=4, intent={"workers": 2, "memory": 2048}))
    assert ok == {"ok": {"upid": "U-s"}}
    record = m.state.vclusters["vc-a000"]
    assert record["status"] == "scaling" and record["addresses"] == {"cp": "10.77.0.2", "w1": "10.77.0.3",
                                                                     "w2": "10.77.0.4"}
    assert m.state.tasks["U-s"]["intent"] == {"workers": 2, "memory": 2048, "vcluster": "vc-a000"}
    [unknown] = run(m, vc.UpdateVCluster(request_id="u", ts=5.0, vc_id="vc-a000", values={"owner": "eve@pve"}))
    assert unknown["error"]["status"] == 400


# ---- PKI -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pki() -> dict[str, str]:
    return vcluster_pki.make("10.77.0.2", "dev-cp")


def test_the_certificates_chain_to_the_cluster_ca_with_the_api_servers_names(pki):
    ca = x509.load_pem_x509_certificate(pki["ca.crt"].encode())
    server = x509.load_pem_x509_certificate(pki["apiserver.crt"].encode())
    admin = x509.load_pem_x509_certificate(pki["admin.crt"].encode())
    for cert in (server, admin):
        cert.verify_directly_issued_by(ca)
    other = x509.load_pem_x509_certificate(vcluster_pki.make("10.77.0.3", "dev-cp")["ca.crt"].encode())
    with pytest.raises(InvalidSignature):
        admin.verify_directly_issued_by(other)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.IPv4Address("10.77.0.2"),
                                                        ipaddress.IPv4Address("10.96.0.1")]
    assert sans.get_values_for_type(x509.DNSName) == ["dev-cp", "kubernetes", "kubernetes.default",
                                                      "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"]
    assert admin.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "admin"
    assert admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    usage = admin.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert server.not_valid_after_utc > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=300)
    assert pki["sa.key"].startswith("-----BEGIN PRIVATE KEY-----") and pki["sa.pub"].startswith("-----BEGIN PUBLIC")
    assert re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", pki["token"])


def test_sealed_keys_open_with_the_cluster_key_only(pki):
    sealed = vcluster_pki.seal("k" * 32, pki)
    assert "PRIVATE" not in sealed and vcluster_pki.unseal("k" * 32, sealed) == pki
    with pytest.raises(Rejection) as exc:
        vcluster_pki.unseal("x" * 32, sealed)
    assert exc.value.status == 500


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed (Debian's kubernetes-client)")
def test_kubectl_reads_the_kubeconfig(pki, tmp_path):
    text = vcluster_pki.kubeconfig("dev-cluster", "https://10.77.0.2:6443", pki)
    path = tmp_path / "kubeconfig"
    path.write_text(text)
    out = subprocess.run(["kubectl", "config", "view", "--kubeconfig", str(path), "--raw", "-o", "json"],
                         check=True, capture_output=True, text=True).stdout
    view = json.loads(out)
    assert view["current-context"] == "dev-cluster"
    assert view["clusters"] == [{"name": "dev-cluster", "cluster": {
        "server": "https://10.77.0.2:6443",
        "certificate-authority-data": base64.b64encode(pki["ca.crt"].encode()).decode()}}]
    user = view["users"][0]
    assert user["name"] == "admin"
    assert base64.b64decode(user["user"]["client-key-data"]).decode() == pki["admin.key"]
    assert view["contexts"] == [{"name": "dev-cluster", "context": {"cluster": "dev-cluster", "user": "admin"}}]
    shown = subprocess.run(["kubectl", "config", "view", "--kubeconfig", str(path)], check=True, capture_output=True,
                           text=True).stdout
    assert "client-key-data: DATA+OMITTED" in shown and pki["admin.key"] not in shown  # kubectl hides the key


def test_user_data_keeps_the_guest_contract(pki):
    record = {"id": "vc-x", "name": "dev", "k8s_version": "1.28.0", "isolation": "vm",
              "addresses": {"cp": "10.77.0.2", "w1": "10.77.0.3"}}
    text = vcluster_pki.user_data(record, "cp", pki)
    lines = text.splitlines()
    assert lines[:3] == ["#cloud-config", "hostname: dev-cp", "write_files:"]
    entries = re.findall(r"^- path: (\S+)\n  encoding: b64\n  permissions: '(\d{4})'\n  content: (\S+)$", text, re.M)
    files = {path: (mode, base64.b64decode(content).decode()) for path, mode, content in entries}
    assert text.count("- path: ") == len(entries) == 7
    assert files["/etc/kubernetes/pki/ca.crt"] == ("0644", pki["ca.crt"])
    assert files["/etc/kubernetes/pki/apiserver.key"] == ("0600", pki["apiserver.key"])
    assert {p.rsplit("/", 1)[1] for p in files} == {"ca.crt", "ca.key", "apiserver.crt", "apiserver.key", "sa.key",
                                                    "sa.pub", "gpve-kubeadm.yaml"}
    kubeadm = files["/etc/kubernetes/gpve-kubeadm.yaml"][1]
    assert "kind: InitConfiguration" in kubeadm and "kubernetesVersion: v1.28.0" in kubeadm
    assert "controlPlaneEndpoint: 10.77.0.2:6443" in kubeadm and pki["token"] in kubeadm
    assert "nodeRegistration:\n  name: dev-cp\n" in kubeadm and '  - "dev-cp"\n' in kubeadm  # its certSANs
    assert lines[-2:] == ["runcmd:", "- kubeadm init --config /etc/kubernetes/gpve-kubeadm.yaml"]
    worker = vcluster_pki.user_data(record, "w1", pki)
    # a worker gets no ca.crt: kubeadm join's preflight refuses an existing one (it checks caCertHashes instead)
    assert "hostname: dev-w1" in worker and worker.count("- path: ") == 1 and "/etc/kubernetes/pki" not in worker
    assert worker.endswith("- kubeadm join --config /etc/kubernetes/gpve-kubeadm.yaml\n")
    join = base64.b64decode(re.findall(r"content: (\S+)", worker)[0]).decode()
    assert "kind: JoinConfiguration" in join and "apiServerEndpoint: 10.77.0.2:6443" in join
    assert vcluster_pki.ca_cert_hash(pki) in join


def test_a_guest_is_the_vclusters_while_its_uuid_or_name_and_tag_say_so():
    m = cluster()
    run(m, create("a", "one"))
    record = {**m.state.vclusters["vc-a000"], "guests": {"cp": 120}}
    assert vc.not_own_guest(m.state, record, "cp") == "VM 120 (one-cp) no longer exists"
    run(m, c.CreateGuest(request_id="g", ts=1.0, node="n1", vmid=120, upid="U-g", starttime=1,
                         config={"name": "one-cp", "smbios1": "uuid=AAAA-1"}))
    assert "another guest has its VMID" in vc.not_own_guest(m.state, record, "cp")  # no tag
    m.state.guests[120]["conf"]["tags"] = "vcluster-vc-a000"
    assert vc.not_own_guest(m.state, record, "cp") is None
    assert "another guest" in vc.not_own_guest(m.state, {**record, "uuids": {"cp": "bbbb-2"}}, "cp")
    assert vc.not_own_guest(m.state, {**record, "uuids": {"cp": "aaaa-1"}}, "cp") is None


def test_a_running_vclusters_status_follows_its_guests():
    m = cluster()
    run(m, create("a", "one"))
    run(m, c.CreateGuest(request_id="g", ts=1.0, node="n1", vmid=120, upid="U-g", starttime=1,
                         config={"name": "one-cp", "tags": "vcluster-vc-a000"}))
    run(m, vc.UpdateVCluster(request_id="r", ts=3.0, vc_id="vc-a000", values={"status": "running",
                                                                             "guests": {"cp": 120}}))
    record = m.state.vclusters["vc-a000"]
    assert vc.shown_status(m.state, record) == ("failed", "VM 120 (one-cp) is stopped")
    m.state.guests[120]["status"] = "running"
    assert vc.shown_status(m.state, record) == ("running", "")
    del m.state.guests[120]
    assert vc.shown_status(m.state, record) == ("failed", "VM 120 (one-cp) no longer exists")
    [again] = run(m, create("b", "one"))  # failed: its name may be provisioned anew
    assert again["ok"]["id"] == "vc-a000"
