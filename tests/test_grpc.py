"""The gRPC API of a real node (TLS on its gRPC port): a Python client generated from proto/gpve/v1 and a
Node.js client loading the same .proto files drive a real guest; errors come back as the mapped status codes;
reflection and health answer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading

import grpc
import pytest
import requests
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_status import rpc_status

from api.rpc.pb import PROTO_DIR, cluster_pb2, guest_pb2, operation_pb2, vcluster_pb2
from tests.grpc_client import Stubs, ca_path, channel, ticket, token
from tests.guest import build_guest, kernel_args, qemu_missing, wait_serial
from tests.harness import REPO, Cluster

pytestmark = pytest.mark.slow
NPM_DIR = os.path.expanduser(os.environ.get("GPVE_NPM_DIR", "~/.cache/gpve/npm"))
S = guest_pb2  # states and messages
needs_qemu = pytest.mark.skipif(qemu_missing() is not None, reason=qemu_missing() or "")


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    cluster = Cluster(str(tmp_path_factory.mktemp("grpc")), 1).start()
    yield cluster.nodes[0]
    cluster.stop()


@pytest.fixture(scope="module")
def rpc(node):
    chan = channel(node)
    yield Stubs(chan)
    chan.close()


@pytest.fixture(scope="module")
def root(node):
    return ticket(node)


def watch(stubs: Stubs, vmid: int, metadata, since_id: int = 0) -> tuple[list, threading.Thread, object]:
    """Collect a WatchStatus stream in a thread: (messages so far, the thread, the call to cancel)."""
    seen: list = []
    call = stubs.guests.WatchStatus(guest_pb2.WatchStatusRequest(vmid=vmid, since_id=since_id), metadata=metadata)

    def run() -> None:
        try:
            for status in call:
                seen.append(status)
        except grpc.RpcError as exc:
            seen.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return seen, thread, call


def wait_seen(seen: list, count: int, timeout: float = 60.0) -> list:
    from tests.harness import wait_for

    wait_for(lambda: len(seen) >= count, timeout=timeout, interval=0.05)
    return seen


@needs_qemu
def test_python_client_creates_starts_watches_stops_and_deletes_a_guest(node, rpc, root):
    guest_dir = build_guest()
    created = rpc.guests.Create(S.CreateGuestRequest(
        name="from-python", cores=1, memory=256, disks=[S.DiskConfig(storage="local", size="1G")],
        options={"kvm": "0", "serial0": "socket", "args": kernel_args(guest_dir)}), metadata=root)
    assert created.vmid >= 100 and created.operation.type == "qmcreate"
    assert created.operation.upid.startswith("UPID:n1:") and created.operation.user == "root@pam"
    rpc.wait_ok(created.operation, root)
    guest = rpc.guests.Get(S.GetGuestRequest(vmid=created.vmid), metadata=root)
    assert (guest.name, guest.node, guest.state, guest.cpus) == ("from-python", "n1", S.GUEST_STATE_STOPPED, 1)
    assert guest.max_memory_bytes == 256 << 20 and guest.max_disk_bytes == 1 << 30
    assert guest.config["scsi0"] == f"local:{created.vmid}/vm-{created.vmid}-disk-0.qcow2,size=1G"
    assert len(guest.digest) == 40

    seen, thread, _call = watch(rpc, created.vmid, root)
    first = wait_seen(seen, 1)[0]
    assert (first.state, first.previous_state, first.node) == (S.GUEST_STATE_STOPPED, S.GUEST_STATE_UNSPECIFIED, "n1")
    started = rpc.guests.Start(S.StartGuestRequest(vmid=created.vmid), metadata=root)
    assert started.type == "qmstart" and started.vmid == created.vmid
    rpc.wait_ok(started, root)
    running = wait_seen(seen, 2)[1]
    assert (running.state, running.previous_state) == (S.GUEST_STATE_RUNNING, S.GUEST_STATE_STOPPED)
    wait_serial(node, created.vmid, r"GPVE-GUEST-READY")  # a real guest, booted under software emulation
    live = rpc.guests.Get(S.GetGuestRequest(vmid=created.vmid), metadata=root)
    assert live.state == S.GUEST_STATE_RUNNING and live.pid > 0 and live.qmp_status == "running"

    rpc.wait_ok(rpc.guests.Stop(S.StopGuestRequest(vmid=created.vmid), metadata=root), root)
    stopped = wait_seen(seen, 3)[2]
    assert (stopped.state, stopped.previous_state) == (S.GUEST_STATE_STOPPED, S.GUEST_STATE_RUNNING)
    deleted = rpc.guests.Delete(S.DeleteGuestRequest(vmid=created.vmid), metadata=root)
    assert deleted.operation.type == "qmdestroy"
    rpc.wait_ok(deleted.operation, root)
    thread.join(30)
    assert not thread.is_alive(), "the stream ends once the guest is deleted"
    assert [s.state for s in seen] == [S.GUEST_STATE_STOPPED, S.GUEST_STATE_RUNNING, S.GUEST_STATE_STOPPED,
                                       S.GUEST_STATE_DELETED]
    ids = [s.event_id for s in seen]
    assert ids == sorted(set(ids)), ids
    with pytest.raises(grpc.RpcError) as exc:
        rpc.guests.Get(S.GetGuestRequest(vmid=created.vmid), metadata=root)
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND


@needs_qemu
@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed on this machine")
def test_nodejs_client_loading_the_proto_files_runs_the_same_flow(node, root):
    assert os.path.isdir(os.path.join(NPM_DIR, "node_modules", "@grpc", "grpc-js")), "make test installs @grpc/grpc-js"
    script = os.path.join(NPM_DIR, "grpc_client.mjs")
    shutil.copy(os.path.join(REPO, "tests", "js", "grpc_client.mjs"), script)
    md = dict(root)
    result = subprocess.run(["node", script, str(node.grpc_port), ca_path(node), PROTO_DIR,
                             md["authorization"].removeprefix("PVEAuthCookie="), md["csrfpreventiontoken"],
                             kernel_args(build_guest())], capture_output=True, text=True, timeout=300, cwd=NPM_DIR)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["createType"] == "qmcreate"
    assert out["states"] == ["GUEST_STATE_STOPPED", "GUEST_STATE_RUNNING", "GUEST_STATE_STOPPED",
                             "GUEST_STATE_DELETED"]
    assert out["eventIds"] == sorted(set(out["eventIds"]))
    assert out["running"]["state"] == "GUEST_STATE_RUNNING" and out["running"]["pid"] > 0
    assert out["running"]["disk"] == f"local:{out['vmid']}/vm-{out['vmid']}-disk-0.qcow2,size=1G"
    assert out["afterDelete"]["isNotFound"]
    assert out["afterDelete"]["details"] == \
        f"Configuration file 'nodes/n1/qemu-server/{out['vmid']}.conf' does not exist"


def _error(fn, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as exc:
        fn(*args, **kwargs)
    return exc.value


def test_errors_come_back_as_the_mapped_status_codes_with_the_rest_message(node, rpc, root):
    px = node.api()
    # bad input: INVALID_ARGUMENT, one field violation per bad field, named as in the request
    err = _error(rpc.guests.Create, S.CreateGuestRequest(
        name="not a name!", disks=[S.DiskConfig(storage="local", size="1Q")], options={"nosuchkey": "1"}),
        metadata=root)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details() == "Parameter verification failed"
    [detail] = rpc_status.from_call(err).details
    bad = error_details_pb2.BadRequest()
    assert detail.Unpack(bad)
    assert {v.field: v.description for v in bad.field_violations} == {
        "disks[0].size": "value '1Q' is not a size: a number with K, M, G or T, at least 1K",
        "name": "value does not look like a valid dns-name",
        "options[nosuchkey]": "property is not defined in schema and the schema does not allow additional properties"}
    err = _error(rpc.guests.Create, S.CreateGuestRequest(name="dup", options={"name": "x"}), metadata=root)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    rpc_status.from_call(err).details[0].Unpack(bad)
    assert [(v.field, v.description) for v in bad.field_violations] == [("options[name]",
                                                                          "'name' is set by the field 'name'")]
    assert not [g for g in px.cluster.resources.get(type="vm") if g.get("name") in ("dup", "x")], "nothing written"

    # a memory size no guest can have: refused (it once made every List fail)
    err = _error(rpc.guests.Create, S.CreateGuestRequest(name="huge", memory=2**63), metadata=root)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT

    # a guest to refuse things on; a retried Create (same request id) answers the guest its first attempt made
    retried = [*root, ("x-request-id", "grpc-create-retry")]
    made = rpc.guests.Create(S.CreateGuestRequest(name="target", memory=64), metadata=retried)
    rpc.wait_ok(made.operation, root)
    vmid = made.vmid
    again = rpc.guests.Create(S.CreateGuestRequest(name="target", memory=64), metadata=retried)
    assert again.vmid == vmid and again.operation.upid == made.operation.upid
    # an existing VMID: ALREADY_EXISTS
    err = _error(rpc.guests.Create, S.CreateGuestRequest(vmid=vmid, name="again"), metadata=root)
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS and "already exists" in err.details()
    # an unknown guest: NOT_FOUND, with Proxmox's message
    err = _error(rpc.guests.Get, S.GetGuestRequest(vmid=999_999), metadata=root)
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "Configuration file 'nodes/n1/qemu-server/999999.conf' does not exist"
    # no credentials, or a bad token: UNAUTHENTICATED
    assert _error(rpc.guests.Get, S.GetGuestRequest(vmid=vmid)).code() == grpc.StatusCode.UNAUTHENTICATED
    err = _error(rpc.guests.Get, S.GetGuestRequest(vmid=vmid), metadata=token("root@pam!nope", "x"))
    assert (err.code(), err.details()) == (grpc.StatusCode.UNAUTHENTICATED, "invalid token value!")
    # a ticket write without its CSRF token: UNAUTHENTICATED, as REST
    err = _error(rpc.guests.Start, S.StartGuestRequest(vmid=vmid), metadata=[root[0]])
    assert (err.code(), err.details()) == (grpc.StatusCode.UNAUTHENTICATED, "Permission denied - invalid csrf token")

    # a PVEAuditor token reads, and is refused writes with the missing privilege named
    px.access.users.post(userid="auditor@pve")
    px.access.acl.put(path="/", roles="PVEAuditor", users="auditor@pve")
    secret = px.access.users("auditor@pve").token("grpc").post(privsep=0)["value"]
    auditor = token("auditor@pve!grpc", secret)
    assert rpc.guests.Get(S.GetGuestRequest(vmid=vmid), metadata=auditor).name == "target"
    err = _error(rpc.guests.Start, S.StartGuestRequest(vmid=vmid), metadata=auditor)
    assert (err.code(), err.details()) == (grpc.StatusCode.PERMISSION_DENIED,
                                           f"Permission denied - missing 'VM.PowerMgmt' on '/vms/{vmid}'")
    err = _error(rpc.guests.Create, S.CreateGuestRequest(vmid=vmid + 1000), metadata=auditor)
    assert (err.code(), err.details()) == (grpc.StatusCode.PERMISSION_DENIED,
                                           f"Permission denied - missing 'VM.Allocate' on '/vms/{vmid + 1000}'")
    err = _error(rpc.cluster.Leave, cluster_pb2.LeaveRequest(node="n1"), metadata=auditor)
    assert (err.code(), err.details()) == (grpc.StatusCode.PERMISSION_DENIED,
                                           "Permission check failed (user != root@pam)")

    # a locked guest: FAILED_PRECONDITION, with Proxmox's message
    px.nodes("n1").qemu(vmid).config.put(lock="backup")
    err = _error(rpc.guests.Start, S.StartGuestRequest(vmid=vmid), metadata=root)
    assert (err.code(), err.details()) == (grpc.StatusCode.FAILED_PRECONDITION, f"VM {vmid} is locked (backup)")
    assert rpc.guests.Get(S.GetGuestRequest(vmid=vmid), metadata=root).lock == "backup"
    px.nodes("n1").qemu(vmid).config.put(delete="lock", skiplock=1)
    # the unlocked guest can be changed: Update answers the guest as it then is
    updated = rpc.guests.Update(S.UpdateGuestRequest(vmid=vmid, cores=2, options={"description": "via gRPC"}),
                                metadata=root)
    assert updated.config["cores"] == "2" and updated.config["description"] == "via gRPC" and updated.cpus == 2
    err = _error(rpc.guests.Update, S.UpdateGuestRequest(vmid=vmid, memory=512, digest="0" * 40), metadata=root)
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "detected modified configuration - "
                                                                             "file changed by other user? Try again.")


def test_operations_and_lists(node, rpc, root):
    made = rpc.guests.Create(S.CreateGuestRequest(name="listed", memory=64), metadata=root)
    done = rpc.wait_ok(made.operation, root)
    assert done.exit_status == "OK" and done.start_time.seconds > 0
    assert rpc.operations.Get(operation_pb2.GetOperationRequest(upid=made.operation.upid), metadata=root) == done
    err = _error(rpc.operations.Get, operation_pb2.GetOperationRequest(upid="UPID:nope"), metadata=root)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "unable to parse worker upid" in str(
        rpc_status.from_call(err).details)
    listed = rpc.guests.List(S.ListGuestsRequest(), metadata=root)
    assert made.vmid in [g.vmid for g in listed.guests] and listed.total_size == len(listed.guests)
    assert [g.vmid for g in listed.guests] == sorted(g.vmid for g in listed.guests)
    first = rpc.guests.List(S.ListGuestsRequest(page_size=1), metadata=root)
    assert len(first.guests) == 1 and (first.next_page_token != "") == (listed.total_size > 1)
    err = _error(rpc.guests.List, S.ListGuestsRequest(page_size=501), metadata=root)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    clone = rpc.guests.Clone(S.CloneGuestRequest(vmid=made.vmid, new_vmid=made.vmid + 500, name="copy"),
                             metadata=root)
    assert (clone.type, clone.vmid) == ("qmclone", made.vmid)
    rpc.wait_ok(clone, root)
    assert rpc.guests.Get(S.GetGuestRequest(vmid=made.vmid + 500), metadata=root).name == "copy"
    err = _error(rpc.guests.Clone, S.CloneGuestRequest(vmid=made.vmid, new_vmid=5), metadata=root)
    rpc_status.from_call(err).details[0].Unpack(bad := error_details_pb2.BadRequest())
    assert [(v.field, v.description) for v in bad.field_violations] == [("new_vmid",
                                                                          "value must have a minimum value of 100")]


def test_reflection_lists_the_services_and_health_says_serving(node, rpc, root):
    services = ProtoReflectionDescriptorDatabase(rpc.channel).get_services()
    assert {"gpve.v1.GuestService", "gpve.v1.ClusterService", "gpve.v1.VClusterService", "gpve.v1.OperationService",
            "grpc.health.v1.Health"} <= set(services)
    health = health_pb2_grpc.HealthStub(rpc.channel)
    for service in ("", "gpve.v1.GuestService"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == \
            health_pb2.HealthCheckResponse.SERVING
    status = rpc.cluster.Status(cluster_pb2.StatusRequest(), metadata=root)
    assert (status.name, status.quorate, [n.name for n in status.nodes]) == ("gpve", True, ["n1"])
    assert status.nodes[0].local and status.nodes[0].online and status.nodes[0].node_id == 1
    assert rpc.cluster.ListNodes(cluster_pb2.ListNodesRequest(), metadata=root).nodes == status.nodes
    assert rpc.vclusters.List(vcluster_pb2.ListVClustersRequest(), metadata=root).vclusters == []


def test_rest_and_grpc_calls_share_one_rate_budget(tmp_path):
    cluster = Cluster(str(tmp_path), 1)
    cluster.nodes[0].rate_limits = "read=5"
    cluster.start()
    try:
        node = cluster.nodes[0]
        secret = node.api().access.users("root@pam").token("limited").post(privsep=0)["value"]
        auth = token("root@pam!limited", secret)
        session = requests.Session()
        session.verify, session.trust_env = False, False
        for _ in range(3):
            assert session.get(node.url + "/cluster/status", headers=dict(auth), timeout=5).status_code == 200
        stubs = Stubs(channel(node))
        for _ in range(2):
            stubs.cluster.Status(cluster_pb2.StatusRequest(), metadata=auth)
        err = _error(stubs.cluster.Status, cluster_pb2.StatusRequest(), metadata=auth)
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and err.details().startswith("Rate limit exceeded.")
        assert int(dict(err.trailing_metadata())["retry-after"]) > 0
        assert session.get(node.url + "/cluster/status", headers=dict(auth), timeout=5).status_code == 429
    finally:
        cluster.stop()
