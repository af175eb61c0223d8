"""`/v1/events/ws`: the event stream over a real WebSocket client, across nodes, resumable by id."""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import time

import pytest
import requests
from proxmoxer.tools import Tasks
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.guest import build_guest, kernel_args, qemu_missing
from tests.harness import Cluster, wait_for

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
        with pytest.raises(InvalidStatus) as refused:  # an id no event of this cluster has: not a silent stream
            open_stream(node, ticket, since=10**15)
        assert refused.value.response.status_code == 400 and b"since" in refused.value.response.body
        r = node.session().get(f"https://127.0.0.1:{node.api_port}/v1/events", params={"since": 10**15}, timeout=10)
        assert r.status_code == 400 and "since" in r.json()["errors"]

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


def test_a_consumer_that_stops_reading_is_cut_off_and_the_node_goes_on(tmp_path):
    cluster = Cluster(str(tmp_path), 1).start()
    try:
        node = cluster.nodes[0]
        px, writer = node.api(), node.session()
        done(px, px.nodes("n1").qemu.create(vmid=100, memory=64))
        stuck = _upgraded_and_never_read(node, writer.cookies["PVEAuthCookie"])
        config = f"{node.url}/nodes/n1/qemu/100/config"
        started = time.monotonic()
        for i in range(600):  # ~8 MB of events (old and new value each) the stuck client never takes
            r = writer.put(config, data={"description": f"{i} " + "x" * 7000}, timeout=10)
            assert r.status_code == 200, r.text
        writes = time.monotonic() - started
        assert writes < 60  # the node did not wait for the consumer
        # dropped: the kernel gives up on a peer that takes nothing (TCP_USER_TIMEOUT), and the stream ends
        wait_for(lambda: "events stream closed" in open(node.log_path).read(), timeout=60)
        stuck.close()
        assert node.api().version.get()["version"]
    finally:
        cluster.stop()


def _upgraded_and_never_read(node, ticket: str) -> ssl.SSLSocket:
    """A client that opens the stream (the RFC 6455 upgrade request, by hand) and then reads nothing, with a
    small receive window: the stream's bytes pile up at the node."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", node.api_port))
    tls = ssl.create_default_context()
    tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
    sock = tls.wrap_socket(raw, server_hostname="127.0.0.1")
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /v1/events/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nCookie: PVEAuthCookie={ticket}\r\n\r\n"
                  ).encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(1)
    assert answer.startswith(b"HTTP/1.1 101"), answer
    return sock
