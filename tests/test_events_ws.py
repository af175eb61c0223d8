"""`/v1/events/ws`: the event stream over a real WebSocket client, across nodes, resumable by id."""

from __future__ import annotations

import json
import ssl

import pytest
import requests
from proxmoxer.tools import Tasks
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.guest import build_guest, kernel_args, qemu_missing
from tests.harness import Cluster

pytestmark = [pytest.mark.slow, pytest.mark.skipif(qemu_missing() is not None, reason=qemu_missing() or "")]


def open_stream(node, ticket: str, **params):
    tls = ssl.create_default_context()
    tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return connect(f"wss://127.0.0.1:{node.api_port}/v1/events/ws?{query}", ssl=tls, open_timeout=10,
                   additional_headers={"Cookie": f"PVEAuthCookie={ticket}"})


def receive(ws, count: int, timeout: float = 60) -> list[dict]:
    return [json.loads(ws.recv(timeout=timeout)) for _ in range(count)]


def done(px, upid: str) -> None:
    status = Tasks.blocking_status(px, upid, timeout=120, polling_interval=0.2)
    assert status["exitstatus"] == "OK", status


def test_a_client_on_node3_follows_a_guest_started_on_node1_and_resumes_on_node2(three_nodes):
    n1, n2, n3 = three_nodes.nodes
    px = n1.api()
    ticket = n1.session().cookies["PVEAuthCookie"]
    vmid = int(px.cluster.nextid.get())
    done(px, px.nodes("n1").qemu.create(vmid=vmid, name="streamed", memory=256, kvm=0, serial0="socket",
                                        args=kernel_args(build_guest())))
    with open_stream(n3, ticket, types="vm.*", vmid=vmid) as ws:
        done(px, px.nodes("n1").qemu(vmid).status.start.post())
        changed, started = receive(ws, 2)
    assert changed["type"] == "vm.status.changed"
    assert (changed["data"]["old_status"], changed["data"]["new_status"]) == ("stopped", "running")
    assert started["type"] == "vm.started" and started["id"] > changed["id"]
    assert changed["timestamp"].endswith("Z") and changed["data"]["node"] == "n1"

    # disconnected: three more events (status change, stopped, config change), then resume on node 2
    done(px, px.nodes("n1").qemu(vmid).status.stop.post())
    px.nodes("n1").qemu(vmid).config.put(description="after the gap")
    with open_stream(n2, ticket, types="vm.*", vmid=vmid, since=started["id"]) as ws:
        missed = receive(ws, 3)
        with pytest.raises(TimeoutError):
            ws.recv(timeout=1.5)  # exactly three: nothing repeated, nothing more
        px.nodes("n1").qemu(vmid).config.put(description="live again")
        live = receive(ws, 1)
    assert [e["type"] for e in missed] == ["vm.status.changed", "vm.stopped", "vm.config.changed"]
    assert [e["id"] for e in missed] == sorted(e["id"] for e in missed) and missed[0]["id"] > started["id"]
    assert (missed[0]["data"]["old_status"], missed[0]["data"]["new_status"]) == ("running", "stopped")
    assert live[0]["type"] == "vm.config.changed" and live[0]["id"] > missed[-1]["id"]


def test_refusals_and_the_resync_close_code(tmp_path):
    cluster = Cluster(str(tmp_path), 1)
    node = cluster.nodes[0]
    node.extra_args = ["--event-buffer", "4"]
    cluster.start()
    try:
        ticket = node.session().cookies["PVEAuthCookie"]
        with pytest.raises(InvalidStatus) as refused:
            open_stream(node, "PVE:root@pam:00000000::bad")
        assert refused.value.response.status_code == 401
        with pytest.raises(InvalidStatus) as refused:
            open_stream(node, ticket, types="vm.nonsense")
        assert refused.value.response.status_code == 400
        assert b"unknown event type 'vm.nonsense'" in refused.value.response.body
        r = node.session().get(f"https://127.0.0.1:{node.api_port}/v1/events/ws", timeout=10)
        assert r.status_code == 400 and "WebSocket" in r.json()["message"]

        px = node.api()
        for i in range(4):  # more events than the node keeps: the oldest ids are gone
            done(px, px.nodes("n1").qemu.create(vmid=100 + i, memory=64))
        with open_stream(node, ticket, since=1) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
        assert closed.value.rcvd.code == 4410 and "resync" in closed.value.rcvd.reason
        with open_stream(node, ticket) as ws:  # without `since`: the live stream
            ws.ping().wait(5)
            px.nodes("n1").qemu(100).config.put(description="live")
            assert json.loads(ws.recv(timeout=10))["type"] == "vm.config.changed"
    finally:
        cluster.stop()


def test_an_auditor_sees_only_guests_it_may_audit(single_node):
    n1 = single_node
    px = n1.api()
    px.access.users.post(userid="aud@pve", password="auditor-pw")
    a = int(px.cluster.nextid.get())
    done(px, px.nodes("n1").qemu.create(vmid=a, name="seen", memory=64))
    b = int(px.cluster.nextid.get())
    done(px, px.nodes("n1").qemu.create(vmid=b, name="hidden", memory=64))
    px.access.acl.put(path=f"/vms/{a}", roles="PVEAuditor", users="aud@pve")
    ticket = _login(n1, "aud@pve", "auditor-pw")
    with open_stream(n1, ticket, types="vm.config.changed") as ws:
        px.nodes("n1").qemu(b).config.put(description="secret change")
        px.nodes("n1").qemu(a).config.put(description="visible change")
        (event,) = receive(ws, 1)
    assert event["data"]["vmid"] == a


def _login(node, user: str, password: str) -> str:
    r = requests.post(node.url + "/access/ticket", data={"username": user, "password": password}, verify=False,
                      timeout=10)
    r.raise_for_status()
    return r.json()["data"]["ticket"]


def test_a_node_that_stops_closes_its_streams(tmp_path):
    cluster = Cluster(str(tmp_path), 1).start()
    n1 = cluster.nodes[0]
    ws = open_stream(n1, n1.session().cookies["PVEAuthCookie"])
    cluster.stop()
    with pytest.raises(ConnectionClosed):
        ws.recv(timeout=20)
