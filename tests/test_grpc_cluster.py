"""The gRPC API across a cluster: a status stream on one node follows changes made through REST on another and
resumes after its node restarts, missing nothing and seeing nothing twice; joining and leaving by gRPC."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from proxmoxer.tools import Tasks

from api.rpc.pb import cluster_pb2, guest_pb2
from tests.grpc_client import Stubs, channel, ticket
from tests.guest import build_guest, kernel_args, qemu_missing
from tests.harness import Cluster, wait_for

pytestmark = pytest.mark.slow
S = guest_pb2


class ResumingWatcher:
    """What a client does: watch a guest, and when the stream breaks, watch again from the last event id."""

    def __init__(self, node, vmid: int) -> None:
        self.node, self.vmid = node, vmid
        self.seen: list = []
        self.connects = 0
        self._stop = threading.Event()
        self._call = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                chan = channel(self.node)
                metadata = ticket(self.node)
                since = self.seen[-1].event_id if self.seen else 0
                self._call = Stubs(chan).guests.WatchStatus(
                    S.WatchStatusRequest(vmid=self.vmid, since_id=since), metadata=metadata)
                self.connects += 1
                for status in self._call:
                    self.seen.append(status)
                return  # the guest was deleted
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.CANCELLED and self._stop.is_set():
                    return
            except Exception:  # the node is down: its REST login fails too
                pass
            time.sleep(0.3)

    def states(self) -> list[int]:
        return [s.state for s in self.seen]

    def stop(self) -> None:
        self._stop.set()
        if self._call is not None:
            self._call.cancel()
        self.thread.join(10)


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    cluster = Cluster(str(tmp_path_factory.mktemp("grpc3")), 3).start()
    yield cluster
    cluster.stop()


def ok(px, upid: str) -> None:
    status = Tasks.blocking_status(px, upid, timeout=120, polling_interval=0.1)
    assert status and status["exitstatus"] == "OK", status


@pytest.mark.skipif(qemu_missing() is not None, reason=qemu_missing() or "")
def test_a_stream_on_node_2_follows_rest_changes_on_node_1_across_a_restart(three):
    n1, n2, _n3 = three.nodes
    px = n1.api()
    vmid = int(px.cluster.nextid.get())
    ok(px, px.nodes("n1").qemu.create(vmid=vmid, name="watched", memory=256, kvm=0,
                                      args=kernel_args(build_guest())))
    wait_for(lambda: vmid in [g["vmid"] for g in n2.api().cluster.resources.get(type="vm")])
    watcher = ResumingWatcher(n2, vmid)
    try:
        wait_for(lambda: watcher.states() == [S.GUEST_STATE_STOPPED])
        vm = px.nodes("n1").qemu(vmid)
        ok(px, vm.status.start.post())
        wait_for(lambda: watcher.states()[-1:] == [S.GUEST_STATE_RUNNING])
        assert watcher.seen[-1].node == "n1"

        n2.stop()  # the stream breaks; changes go on without node 2
        ok(px, vm.status.stop.post())
        ok(px, vm.status.start.post())
        n2.start()
        n2.wait_ready()
        wait_for(lambda: len(watcher.seen) >= 4, timeout=60)
        assert watcher.connects >= 2
        ok(px, vm.status.stop.post())
        wait_for(lambda: len(watcher.seen) >= 5)
        time.sleep(0.5)  # nothing more comes
        assert watcher.states() == [S.GUEST_STATE_STOPPED, S.GUEST_STATE_RUNNING, S.GUEST_STATE_STOPPED,
                                    S.GUEST_STATE_RUNNING, S.GUEST_STATE_STOPPED]
        ids = [s.event_id for s in watcher.seen]
        assert ids == sorted(set(ids)), ids
        assert [s.previous_state for s in watcher.seen[1:]] == watcher.states()[:-1]
        # the ids are the cluster's: node 3 resumes from the same id with the same changes
        n3 = three.nodes[2]
        call = Stubs(channel(n3)).guests.WatchStatus(S.WatchStatusRequest(vmid=vmid, since_id=ids[0]),
                                                     metadata=ticket(n3), timeout=3)
        replay = []
        with pytest.raises(grpc.RpcError) as exc:
            for status in call:
                replay.append(status)
        assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert [(s.event_id, s.state) for s in replay] == [(s.event_id, s.state) for s in watcher.seen[1:]]
        # any node answers for any guest: node 3 starts and stops node 1's guest, and node 2's stream sees it
        on_n3, md3 = Stubs(channel(n3)), ticket(n3)
        started = on_n3.guests.Start(S.StartGuestRequest(vmid=vmid), metadata=md3)
        assert (started.node, started.type) == ("n1", "qmstart")
        on_n3.wait_ok(started, md3)
        got = on_n3.guests.Get(S.GetGuestRequest(vmid=vmid), metadata=md3)
        assert (got.node, got.state, got.name) == ("n1", S.GUEST_STATE_RUNNING, "watched")
        on_n3.wait_ok(on_n3.guests.Stop(S.StopGuestRequest(vmid=vmid), metadata=md3), md3)
        wait_for(lambda: len(watcher.seen) >= 7)
        assert watcher.states()[5:] == [S.GUEST_STATE_RUNNING, S.GUEST_STATE_STOPPED]
    finally:
        watcher.stop()


def test_join_and_leave_by_grpc(tmp_path):
    pair = Cluster(str(tmp_path), 2, standalone=True).start()
    try:
        n1, n2 = pair.nodes
        fingerprint = n1.api().cluster.config.join.get()["nodelist"][0]["pve_fp"]
        on_n2 = Stubs(channel(n2))
        joined = on_n2.cluster.Join(cluster_pb2.JoinRequest(hostname=f"127.0.0.1:{n1.api_port}", password=n1.password,
                                                            fingerprint=fingerprint), metadata=ticket(n2), timeout=90)
        assert "joined" in joined.message
        on_n1 = Stubs(channel(n1))
        wait_for(lambda: [n.name for n in on_n1.cluster.ListNodes(cluster_pb2.ListNodesRequest(),
                                                                   metadata=ticket(n1)).nodes] == ["n1", "n2"])
        # node 2's gRPC server now presents a certificate of the cluster CA (node 1's): it restarted with it
        wait_for(lambda: Stubs(channel(n2, ca_of=n1)).cluster.Status(cluster_pb2.StatusRequest(), metadata=ticket(n2),
                                                                     timeout=5).quorate)
        with pytest.raises(grpc.RpcError) as exc:
            on_n1.cluster.Leave(cluster_pb2.LeaveRequest(node="n1"), metadata=ticket(n1))
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert exc.value.details() == "cannot remove the node you are talking to - ask another member"
        on_n1.cluster.Leave(cluster_pb2.LeaveRequest(node="n2"), metadata=ticket(n1), timeout=60)
        nodes = on_n1.cluster.ListNodes(cluster_pb2.ListNodesRequest(), metadata=ticket(n1)).nodes
        assert [n.name for n in nodes] == ["n1"]
    finally:
        pair.stop()
