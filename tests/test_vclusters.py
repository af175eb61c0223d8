"""/v1/vclusters and gRPC VClusterService against a real `gpve serve`: templates offering Kubernetes versions, the
create refusals (nothing left behind), privileges, a provisioning that fails (its network has no route from the node:
the guests start, the API server's address is unreachable) and is
retried, and a deletion leaving no guest, volume, snippet or key. The API server itself needs the test guest's
stand-in: tests/test_vclusters_guest.py."""

from __future__ import annotations

import glob
import os

import pytest
import requests

from tests import netns
from tests.guest import qemu_missing
from tests.harness import Cluster, done, kill_guests, ok

pytestmark = [pytest.mark.slow, pytest.mark.skipif(qemu_missing() is not None, reason=qemu_missing() or ""),
              pytest.mark.skipif(netns.unavailable() is not None, reason=netns.unavailable() or "")]
NET = {"bridge": "gpvebr0", "cidr": "10.88.0.0/29", "gateway": "10.88.0.1"}  # a bridge without a route to 10.88/29
UNREACHABLE = "the API server at https://10.88.0.2:6443 cannot be reached from node 'n1': Network is unreachable"


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """n1 in a network namespace of its own with a bridge `gpvebr0` (no address: no route to NET's network)."""
    with netns.Netns() as space:
        space.bridge("gpvebr0")
        with space.joined():
            cluster = Cluster(str(tmp_path_factory.mktemp("vc")), 1)
            cluster.nodes[0].prefix = space.prefix
            cluster.nodes[0].extra_args = ["--vcluster-ready-timeout", "30"]
            cluster.start()
            yield cluster.nodes[0]
            cluster.stop()
            kill_guests(cluster.nodes[0].data_dir)


def v1(node) -> str:
    return f"https://127.0.0.1:{node.api_port}/v1"


@pytest.fixture(scope="module")
def template(node):
    """A vCluster template offering 1.28.0 and 1.29.1 (a small disk, no OS: the guests only need to start)."""
    px, s = node.api(), node.session()
    vmid = int(px.cluster.nextid.get())
    ok(px, px.nodes("n1").qemu.create(vmid=vmid, name="k8s-base", memory=128, kvm=0, scsi0="local:1"))
    r = s.post(f"{v1(node)}/templates", json={"source_vmid": vmid, "name": "k8s-base", "kind": "vcluster",
                                              "k8s_versions": ["1.28.0", "1.29.1"]}, timeout=60)
    assert r.status_code == 200, r.text
    return vmid


def user_session(node, userid: str, password: str = "secret-pw-1") -> requests.Session:
    px = node.api()
    if userid not in [u["userid"] for u in px.access.users.get()]:
        px.access.users.post(userid=userid, password=password)
    s = requests.Session()
    s.verify, s.trust_env = False, False
    data = s.post(node.url + "/access/ticket", data={"username": userid, "password": password}, timeout=10).json()
    s.cookies.set("PVEAuthCookie", data["data"]["ticket"])
    s.headers["CSRFPreventionToken"] = data["data"]["CSRFPreventionToken"]
    return s


def vc_files(node) -> list[str]:
    return sorted(glob.glob(os.path.join(node.data_dir, "storage", "local", "snippets", "vc-*")))


def images(node) -> list[str]:
    return sorted(p for p in glob.glob(os.path.join(node.data_dir, "storage", "local", "images", "*", "*")))


def test_templates_name_their_kubernetes_versions(node, template):
    s = node.session()
    row = s.get(f"{v1(node)}/templates/{template}", timeout=10).json()
    assert (row["kind"], row["k8s_versions"]) == ("vcluster", ["1.28.0", "1.29.1"])
    r = s.post(f"{v1(node)}/templates", json={"source_vmid": template, "kind": "vcluster", "k8s_versions": []},
               timeout=10)
    assert r.status_code == 400 and "k8s_versions" in r.json()["errors"]
    # an existing template registered again offers other versions; its other tags stay
    node.api().nodes("n1").qemu(template).config.put(tags="gpve-vcluster;k8s-1.28.0;k8s-1.29.1;team-a")
    r = s.post(f"{v1(node)}/templates", json={"source_vmid": template, "kind": "vcluster",
                                              "k8s_versions": ["1.29.1", "1.28.0"]}, timeout=60)
    assert r.status_code == 200, r.text
    assert (r.json()["k8s_versions"], "team-a" in r.json()["tags"]) == (["1.28.0", "1.29.1"], True)
    # versions are MAJOR.MINOR.PATCH, a leading v dropped, each once; each bad one named (tester's finding 9)
    r = s.post(f"{v1(node)}/templates", json={"source_vmid": template, "kind": "vcluster",
                                              "k8s_versions": ["1.28.0", "x y", "v1.29.1", "1.28", "v1.28.0"]},
               timeout=60)
    assert r.status_code == 400 and r.json()["errors"] == {
        f"k8s_versions[{i}]": f"invalid Kubernetes version '{v}' - use MAJOR.MINOR.PATCH (1.28.0, a leading 'v' is "
                              "dropped)" for i, v in ((1, "x y"), (3, "1.28"))}
    r = s.post(f"{v1(node)}/templates", json={"source_vmid": template, "kind": "vcluster",
                                              "k8s_versions": ["v1.29.1", "1.28.0", "1.29.1"]}, timeout=60)
    assert r.status_code == 200 and r.json()["k8s_versions"] == ["1.28.0", "1.29.1"], r.text
    assert node.api().nodes("n1").qemu(template).config.get()["tags"].count("k8s-1.29.1") == 1


def test_create_refusals_leave_nothing_behind(node, template):
    s = node.session()
    before = (s.get(f"{v1(node)}/vclusters", timeout=10).json(), node.api().cluster.resources.get(type="vm"))
    base = {"name": "bad", "k8s_version": "1.28.0", "resources": {"cpu": 1, "memory": "256Mi"}, "network": NET}
    r = s.post(f"{v1(node)}/vclusters", json={**base, "k8s_version": "1.99.0"}, timeout=10)
    assert r.status_code == 400
    assert r.json()["errors"]["k8s_version"] == "unsupported Kubernetes version '1.99.0' - available: 1.28.0, 1.29.1"
    for name in ("a" * 41, "Dev", "-dev", "dev_1"):  # tester's finding 15
        r = s.post(f"{v1(node)}/vclusters", json={**base, "name": name}, timeout=10)
        assert r.json()["errors"] == {"name": "value must be a lowercase DNS label of at most 40 characters"}, name
    r = s.post(f"{v1(node)}/vclusters", json={**base, "name": 5}, timeout=10)
    assert r.json()["errors"] == {"name": "type check ('string') failed - got '5'"}
    r = s.post(f"{v1(node)}/vclusters", json={**base, "isolation": "cluster"}, timeout=10)
    assert r.status_code == 400 and "enumeration" in r.json()["errors"]["isolation"]
    r = s.post(f"{v1(node)}/vclusters", json={**base, "resources": {"cpu": 1, "memory": "3Ti"}}, timeout=10)
    assert r.status_code == 409, r.text
    assert r.json()["message"].startswith("no node can take the vCluster: it needs 1 guest(s) of 1 core(s) and "
                                          "3145728 MiB") and "n1: " in r.json()["message"]
    # bounds and spaces refused in validation (tester's findings 8, 16)
    r = s.post(f"{v1(node)}/vclusters", json={**base, "resources": {"cpu": 1, "memory": "9" * 26 + "Gi"}}, timeout=10)
    assert r.json()["errors"] == {"resources.memory": f"memory '{'9' * 26}Gi' is more than the maximum of 4Ti"}
    r = s.post(f"{v1(node)}/vclusters", json={**base, "resources": {"cpu": "9" * 26, "memory": " 1Gi"}}, timeout=10)
    assert r.json()["errors"] == {"resources.cpu": f"cpu '{'9' * 26}' is more than the maximum of 512 cores",
                                  "resources.memory": "invalid memory quantity ' 1Gi' - use bytes or a suffix such as "
                                                      "512Mi, 8Gi, 1G"}
    r = s.post(f"{v1(node)}/vclusters", json={**base, "resources": {"cpu": 1, "memory": "lots"}}, timeout=10)
    assert r.status_code == 400 and "resources.memory" in r.json()["errors"]
    r = s.post(f"{v1(node)}/vclusters", json={**base, "workers": 2}, timeout=10)
    assert r.status_code == 400 and "isolation 'vm'" in r.json()["errors"]["workers"]
    # per-field errors are named as the body nests them (tester's findings 13, 14)
    r = s.post(f"{v1(node)}/vclusters", json={**base, "node_selector": {"node": "elsewhere"}}, timeout=10)
    assert (r.status_code, r.json()["errors"]) == (400, {"node_selector.node": "no such cluster node 'elsewhere'"})
    r = s.post(f"{v1(node)}/vclusters", json={**base, "resources": {"cpu": True, "memory": "1Gi"}}, timeout=10)
    assert r.json()["errors"] == {"resources.cpu": "type check ('integer or string') failed - got 'True'"}
    r = s.post(f"{v1(node)}/vclusters", json={**base, "resources": {"cpu": None, "memory": "1Gi"}}, timeout=10)
    assert r.json()["errors"] == {"resources.cpu": "property is missing and it is not optional"}
    r = s.post(f"{v1(node)}/vclusters", json={**base, "network": {**NET, "gateway": None}}, timeout=10)
    assert r.json()["errors"] == {"network.gateway": "property is missing and it is not optional"}
    r = s.post(f"{v1(node)}/vclusters", json={**base, "network": {**NET, "cidr": "10.88.0.0/33"}}, timeout=10)
    assert r.status_code == 400 and list(r.json()["errors"]) == ["network.cidr"]
    r = s.post(f"{v1(node)}/vclusters", json={**base, "network": {**NET, "bridge": "gpvenobr9"}}, timeout=10)
    assert r.json()["errors"] == {"network.bridge": "bridge 'gpvenobr9' does not exist on node 'n1'"}  # finding 12
    r = s.post(f"{v1(node)}/vclusters", json={**base, "network": {**NET, "gateway": "10.99.0.1"}}, timeout=10)
    assert r.status_code == 400 and "network.gateway" in r.json()["errors"]
    assert (s.get(f"{v1(node)}/vclusters", timeout=10).json(), node.api().cluster.resources.get(type="vm")) == before
    assert vc_files(node) == []


def test_failed_provisioning_retry_and_delete_leave_nothing(node, template):
    s, px = node.session(), node.api()
    guests_before, images_before = px.cluster.resources.get(type="vm"), images(node)
    spec = {"name": "dev", "k8s_version": "1.29.1", "isolation": "vm", "workers": 1,
            "resources": {"cpu": "500m", "memory": "128Mi"}, "network": NET}
    r = s.post(f"{v1(node)}/vclusters", json=spec, timeout=10)
    assert r.status_code == 200, r.text
    made = r.json()
    assert made["id"].startswith("vc-") and made["status"] == "provisioning" and made["node"] == "n1"
    assert [(g["role"], g["address"]) for g in made["guests"]] == [("cp", "10.88.0.2"), ("w1", "10.88.0.3")]
    assert made["resources"] == {"cpu": 1, "memory": "128Mi"}
    status = done(px, made["upid"])
    assert status["exitstatus"] == UNREACHABLE  # at once, not after the ready timeout (tester's finding 12)
    row = s.get(f"{v1(node)}/vclusters/{made['id']}", timeout=10).json()
    assert (row["status"], row["reason"]) == ("failed", UNREACHABLE)
    cp = next(g["vmid"] for g in row["guests"] if g["role"] == "cp")
    conf = px.nodes("n1").qemu(cp).config.get()
    assert (conf["name"], conf["cores"], conf["memory"]) == ("dev-cp", 1, 128)
    assert conf["ipconfig0"] == "ip=10.88.0.2/29,gw=10.88.0.1"
    assert conf["cicustom"] == f"user=local:snippets/{made['id']}-cp.yaml" and "bridge=gpvebr0" in conf["net0"]
    files = vc_files(node)
    assert [os.path.basename(f) for f in files] == [f"{made['id']}-cp.yaml", f"{made['id']}-w1.yaml"]
    assert all(os.stat(f).st_mode & 0o777 == 0o600 for f in files)
    # no key in the task log, the events or the answers
    log = "\n".join(line["t"] for line in px.nodes("n1").tasks(made["upid"]).log.get())
    events = s.get(f"{v1(node)}/events", params={"since": 0, "limit": 500}, timeout=10).text
    for text in (log, events, r.text, s.get(f"{v1(node)}/vclusters", timeout=10).text):
        assert "PRIVATE KEY" not in text and "LS0tLS1CRUdJTiBQUklWQVRF" not in text

    # a retry under the same name: the failed attempt's guests go first, the same id and addresses
    r = s.post(f"{v1(node)}/vclusters", json={**spec, "workers": 0}, timeout=10)
    assert r.status_code == 200, r.text
    again = r.json()
    assert again["id"] == made["id"] and [g["role"] for g in again["guests"]] == ["cp"]
    assert f":vccreate:{made['id']}:root@pam:" in again["upid"]  # the task names the vCluster it provisions
    done(px, again["upid"])
    row = s.get(f"{v1(node)}/vclusters/{made['id']}", timeout=10).json()
    assert row["status"] == "failed" and [g["role"] for g in row["guests"]] == ["cp"]
    log = [line["t"] for line in px.nodes("n1").tasks(again["upid"]).log.get()]
    assert any(line.startswith("removing what the failed attempt left: VMs ") for line in log), log
    assert [os.path.basename(f) for f in vc_files(node)] == [f"{made['id']}-cp.yaml"]
    assert len(px.cluster.resources.get(type="vm")) == len(guests_before) + 1
    # the kubeconfig exists once the keys are made (the failed vCluster has them)
    kubeconfig = s.get(f"{v1(node)}/vclusters/{made['id']}/kubeconfig", timeout=10)
    assert kubeconfig.status_code == 200 and kubeconfig.headers["Content-Type"].startswith("application/yaml")
    assert kubeconfig.headers["Cache-Control"] == "no-store"  # it holds a private key (tester's finding 20)
    assert "server: https://10.88.0.2:6443" in kubeconfig.text

    r = s.delete(f"{v1(node)}/vclusters/{made['id']}", timeout=10)
    assert r.status_code == 200, r.text
    ok(px, r.json()["upid"])
    assert s.get(f"{v1(node)}/vclusters/{made['id']}", timeout=10).status_code == 404
    assert s.get(f"{v1(node)}/vclusters/{made['id']}/kubeconfig", timeout=10).status_code == 404
    assert px.cluster.resources.get(type="vm") == guests_before
    assert images(node) == images_before and vc_files(node) == []


def failed_vcluster(node, name: str) -> str:
    """A vCluster whose provisioning failed (its API server's network unreachable): its id."""
    s, px = node.session(), node.api()
    r = s.post(f"{v1(node)}/vclusters", json={"name": name, "k8s_version": "1.28.0", "network": NET,
                                              "resources": {"cpu": 1, "memory": "128Mi"}}, timeout=10)
    assert r.status_code == 200, r.text
    done(px, r.json()["upid"])
    return r.json()["id"]


def test_privileges_on_vclusters(node, template):
    px = node.api()
    mine, other = failed_vcluster(node, "mine"), failed_vcluster(node, "other")
    aud = user_session(node, "vcaudit@pve")
    px.access.acl.put(path=f"/vclusters/{mine}", roles="PVEAuditor", users="vcaudit@pve")
    assert [r["id"] for r in aud.get(f"{v1(node)}/vclusters", timeout=10).json()["items"]] == [mine]
    assert aud.get(f"{v1(node)}/vclusters/{mine}", timeout=10).json()["name"] == "mine"
    r = aud.get(f"{v1(node)}/vclusters/{other}", timeout=10)
    assert (r.status_code, r.json()["message"]) == (403, f"Permission denied - missing 'VCluster.Audit' on "
                                                         f"'/vclusters/{other}'")
    r = aud.get(f"{v1(node)}/vclusters/{mine}/kubeconfig", timeout=10)
    assert (r.status_code, r.json()["message"]) == (403, f"Permission denied - missing 'VCluster.Modify' on "
                                                         f"'/vclusters/{mine}'")
    assert aud.delete(f"{v1(node)}/vclusters/{mine}", timeout=10).status_code == 403
    assert aud.post(f"{v1(node)}/vclusters/{mine}/scale", json={"workers": 1}, timeout=10).status_code == 403
    r = aud.post(f"{v1(node)}/vclusters", json={"name": "x", "k8s_version": "1.28.0",
                                                "resources": {"cpu": 1, "memory": "1Gi"}}, timeout=10)
    assert (r.status_code, r.json()["message"]) == (403, "Permission denied - missing 'VCluster.Allocate' on "
                                                         "'/vclusters'")
    # a name taken: its id is not told to who may not audit it, nor may they provision it anew (finding 19)
    maker = user_session(node, "vcmaker@pve")
    px.access.acl.put(path="/vclusters", roles="PVEAdmin", users="vcmaker@pve", propagate=0)
    r = maker.post(f"{v1(node)}/vclusters", json={"name": "other", "k8s_version": "1.28.0", "network": NET,
                                                  "resources": {"cpu": 1, "memory": "128Mi"}}, timeout=10)
    assert (r.status_code, r.json()["message"]) == (409, "vCluster 'other' already exists")
    px.access.acl.put(path=f"/vclusters/{other}", roles="PVEAuditor", users="vcmaker@pve")
    r = maker.post(f"{v1(node)}/vclusters", json={"name": "other", "k8s_version": "1.28.0", "network": NET,
                                                  "resources": {"cpu": 1, "memory": "128Mi"}}, timeout=10)
    assert (r.status_code, r.json()["message"]) == (409, f"vCluster 'other' already exists ({other})")
    # PVEAdmin on the vCluster: its kubeconfig; a scale of a failed vCluster is refused (409)
    adm = user_session(node, "vcadmin@pve")
    px.access.acl.put(path=f"/vclusters/{mine}", roles="PVEAdmin", users="vcadmin@pve")
    assert adm.get(f"{v1(node)}/vclusters/{mine}/kubeconfig", timeout=10).text.startswith("apiVersion: v1\n")
    r = adm.post(f"{v1(node)}/vclusters/{mine}/scale", json={"resources": {"memory": "256Mi"}}, timeout=10)
    assert (r.status_code, r.json()["message"]) == (409, f"vCluster '{mine}' is failed - only a running vCluster "
                                                         "can be scaled")
    with open(node.log_path, errors="replace") as f:
        logged = [line for line in f if "vcluster kubeconfig read" in line]
    assert any(mine in line and "vcadmin@pve" in line for line in logged)
    assert not any("PRIVATE KEY" in line for line in logged)
    for vc_id in (mine, other):
        ok(px, node.session().delete(f"{v1(node)}/vclusters/{vc_id}", timeout=10).json()["upid"])


def test_grpc_vcluster_service(node, template):
    import grpc
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    from api.rpc.pb import vcluster_pb2 as pb
    from tests.grpc_client import Stubs, channel, ticket

    rpc, root = Stubs(channel(node)), ticket(node)
    with pytest.raises(grpc.RpcError) as exc:
        rpc.vclusters.Create(pb.CreateVClusterRequest(name="g1", k8s_version="2.0.0", isolation=pb.ISOLATION_VM,
                                                      resources=pb.VClusterResources(cpu=1, memory_mib=128),
                                                      network=pb.VClusterNetwork(**NET)),
                             metadata=root)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    rpc_status.from_call(exc.value).details[0].Unpack(bad := error_details_pb2.BadRequest())
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("k8s_version", "unsupported Kubernetes version '2.0.0' - available: 1.28.0, 1.29.1")]
    with pytest.raises(grpc.RpcError) as exc:
        rpc.vclusters.Create(pb.CreateVClusterRequest(name="g1", k8s_version="1.28.0", node="nX",
                                                      resources=pb.VClusterResources(cpu=1, memory_mib=128)),
                             metadata=root)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    rpc_status.from_call(exc.value).details[0].Unpack(bad := error_details_pb2.BadRequest())
    assert [(v.field, v.description) for v in bad.field_violations] == [("node", "no such cluster node 'nX'")]
    with pytest.raises(grpc.RpcError) as exc:  # an isolation the enum lacks (tester's finding 7)
        rpc.vclusters.Create(pb.CreateVClusterRequest(name="g1", k8s_version="1.28.0", isolation=7,
                                                      resources=pb.VClusterResources(cpu=1, memory_mib=128)),
                             metadata=root)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    rpc_status.from_call(exc.value).details[0].Unpack(bad := error_details_pb2.BadRequest())
    assert [v.field for v in bad.field_violations] == ["isolation"], bad
    assert "enumeration" in bad.field_violations[0].description
    made = rpc.vclusters.Create(pb.CreateVClusterRequest(
        name="g1", k8s_version="1.28.0", isolation=pb.ISOLATION_VM, workers=1,
        resources=pb.VClusterResources(cpu=1, memory_mib=128),
        network=pb.VClusterNetwork(**NET)), metadata=root)
    assert made.vcluster.state == pb.VCLUSTER_STATE_PROVISIONING and made.operation.type == "vccreate"
    assert (made.vcluster.workers, made.vcluster.resources.memory_mib) == (1, 128)
    done(node.api(), made.operation.upid)
    got = rpc.vclusters.Get(pb.GetVClusterRequest(id=made.vcluster.id), metadata=root)
    assert got.state == pb.VCLUSTER_STATE_FAILED and "Network is unreachable" in got.reason
    assert [v.id for v in rpc.vclusters.List(pb.ListVClustersRequest(), metadata=root).vclusters] == [got.id]
    kubeconfig = rpc.vclusters.GetKubeconfig(pb.GetKubeconfigRequest(id=got.id), metadata=root).kubeconfig
    assert "current-context: g1\n" in kubeconfig
    with pytest.raises(grpc.RpcError) as exc:
        rpc.vclusters.Scale(pb.ScaleVClusterRequest(id=got.id, workers=2), metadata=root)
    assert exc.value.code() == grpc.StatusCode.ABORTED and "only a running vCluster" in exc.value.details()
    deleted = rpc.vclusters.Delete(pb.DeleteVClusterRequest(id=got.id), metadata=root)
    rpc.wait_ok(deleted.operation, root)
    with pytest.raises(grpc.RpcError) as exc:
        rpc.vclusters.Get(pb.GetVClusterRequest(id=got.id), metadata=root)
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_vclusters_snippets_are_its_own_guests_only(node, template):
    """Tester's finding 1: setting another guest's `cicustom` to a vCluster's snippet read its keys. A snippet needs
    Datastore.Allocate on its storage (pve-storage's check_volume_access), checked before its existence (no oracle);
    a vCluster's snippet is refused to every other guest, root's too, and to a clone of its guest."""
    px = node.api()
    vc_id = failed_vcluster(node, "snip")
    cp = next(g["vmid"] for g in node.session().get(f"{v1(node)}/vclusters/{vc_id}", timeout=10).json()["guests"]
              if g["role"] == "cp")
    vmid = int(px.cluster.nextid.get())
    ok(px, px.nodes("n1").qemu.create(vmid=vmid, name="plain", memory=128, kvm=0))
    user_session(node, "vmadm@pve")
    px.access.acl.put(path=f"/vms/{vmid}", roles="PVEVMAdmin", users="vmadm@pve")
    adm = user_session(node, "vmadm@pve")
    url = f"{node.url}/nodes/n1/qemu/{vmid}/config"
    for volid in (f"local:snippets/{vc_id}-cp.yaml", "local:snippets/none-such.yaml"):
        r = adm.put(url, data={"cicustom": f"user={volid}"}, timeout=10)
        assert (r.status_code, r.reason) == (403, "Permission denied - missing 'Datastore.Allocate' on "
                                                  "'/storage/local'"), r.text
    root = node.session()
    r = root.put(url, data={"cicustom": f"user=local:snippets/{vc_id}-cp.yaml"}, timeout=10)
    assert r.status_code == 403 and f"volume 'local:snippets/{vc_id}-cp.yaml' is a vCluster's cloud-init " \
                                     "snippet" in r.reason, r.text
    r = root.put(url, data={"cicustom": "user=local:snippets/none-such.yaml"}, timeout=10)
    assert r.status_code == 400 and "does not exist" in r.json()["errors"]["cicustom"]
    newid = int(px.cluster.nextid.get())
    r = root.post(f"{node.url}/nodes/n1/qemu/{cp}/clone", data={"newid": newid, "full": 1}, timeout=10)
    assert r.status_code == 403 and "vCluster's cloud-init snippet" in r.reason, r.text
    assert "cicustom" not in px.nodes("n1").qemu(vmid).config.get()
    ok(px, root.delete(f"{v1(node)}/vclusters/{vc_id}", timeout=10).json()["upid"])
    ok(px, px.nodes("n1").qemu(vmid).delete())


def test_guests_are_tied_to_their_vcluster_and_a_reused_vmid_is_left_alone(node, template):
    """Tester's findings 2 and 25: a vCluster's guests carry its tag and protection; a guest destroyed behind its
    back whose VMID an unrelated guest took is left alone by the retry and the delete (a task-log line says so)."""
    px, root = node.api(), node.session()
    vc_id = failed_vcluster(node, "tied")
    cp = next(g["vmid"] for g in root.get(f"{v1(node)}/vclusters/{vc_id}", timeout=10).json()["guests"])
    conf = px.nodes("n1").qemu(cp).config.get()
    assert (conf["tags"], conf["protection"]) == (f"vcluster-{vc_id}", 1)
    r = root.delete(f"{node.url}/nodes/n1/qemu/{cp}", timeout=10)
    assert r.status_code == 400 and f"can't remove VM {cp} - protection mode enabled" in r.text, r.text
    px.nodes("n1").qemu(cp).config.put(delete="protection")
    ok(px, px.nodes("n1").qemu(cp).status.stop.post())
    ok(px, px.nodes("n1").qemu(cp).delete())
    ok(px, px.nodes("n1").qemu.create(vmid=cp, name="tied-cp", memory=128, kvm=0))  # even its name
    r = root.post(f"{v1(node)}/vclusters", json={"name": "tied", "k8s_version": "1.28.0", "network": NET,
                                                 "resources": {"cpu": 1, "memory": "128Mi"}}, timeout=10)
    assert r.status_code == 200, r.text
    done(px, r.json()["upid"])
    log = [line["t"] for line in px.nodes("n1").tasks(r.json()["upid"]).log.get()]
    assert f"VM {cp} is no longer tied-cp of vCluster {vc_id} (another guest has its VMID) - left alone" in log, log
    upid = root.delete(f"{v1(node)}/vclusters/{vc_id}", timeout=10).json()["upid"]
    ok(px, upid)
    assert px.nodes("n1").qemu(cp).config.get()["name"] == "tied-cp"  # the bystander is still there
    ok(px, px.nodes("n1").qemu(cp).delete())


def test_concurrent_creates_from_one_template_all_clone_it(node, template):
    """Creates racing for one template: their clones hold the template shared and run at once (qemu-server's
    `lock_config_shared`), so each gets its guest (each then fails on the unreachable network here)."""
    px, s = node.api(), node.session()
    made = [s.post(f"{v1(node)}/vclusters", json={"name": f"race{i}", "k8s_version": "1.28.0", "network": NET,
                                                    "resources": {"cpu": 1, "memory": "64Mi"}}, timeout=10).json()
            for i in range(3)]
    for vc in made:
        status = done(px, vc["upid"])
        assert "cannot be reached from node 'n1'" in status["exitstatus"], status
    for vc in made:
        ok(px, s.delete(f"{v1(node)}/vclusters/{vc['id']}", timeout=10).json()["upid"])
