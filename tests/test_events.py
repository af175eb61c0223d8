"""The event hub: public events in log order, the same ids on every node, resumable, without secrets."""

from __future__ import annotations

import json

import pytest
from proxmoxer.tools import Tasks

from tests.guest import build_guest, kernel_args, qemu_missing
from tests.harness import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.skipif(qemu_missing() is not None, reason=qemu_missing() or "")]


def events(session, node, since: int = 0, **params) -> list[dict]:
    """Every event after `since` that node 2 keeps, read page by page."""
    out = []
    while True:
        r = session.get(f"https://127.0.0.1:{node.api_port}/v1/events", params={"since": since, "limit": 50,
                                                                                 **params}, timeout=10)
        assert r.status_code == 200, r.text
        body = r.json()
        out += body["events"]
        if not body["events"]:
            return out
        since = body["last_id"]


def test_a_guest_life_seen_from_another_node_in_log_order_and_resumable(three_nodes):
    n1, n2, _ = three_nodes.nodes
    px = n2.api()
    reader = n1.session()
    vmid = int(px.cluster.nextid.get())
    guest_dir = build_guest()
    steps = [lambda: px.nodes("n2").qemu.create(vmid=vmid, name="evented", memory=256, kvm=0, serial0="socket",
                                                 cipassword="s3cret-Pa55", args=kernel_args(guest_dir)),
             lambda: px.nodes("n2").qemu(vmid).status.start.post(),
             lambda: px.nodes("n2").qemu(vmid).status.stop.post(),
             lambda: px.nodes("n2").qemu(vmid).delete()]
    upids = []
    for step in steps:
        upids.append(step())
        status = Tasks.blocking_status(px, upids[-1], timeout=120, polling_interval=0.2)
        assert status["exitstatus"] == "OK", status
    wait_for(lambda: any(e["type"] == "vm.deleted" for e in events(reader, n1, vmid=vmid)))

    seen = events(reader, n1)
    mine = [e for e in seen if e["data"].get("vmid") == vmid]
    ids = [e["id"] for e in seen]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    kinds = [e["type"] for e in mine]
    assert kinds == ["task.started", "vm.created", "task.finished",
                     "task.started", "vm.status.changed", "vm.started", "task.finished",
                     "task.started", "vm.status.changed", "vm.stopped", "task.finished",
                     "vm.locked", "task.started", "vm.deleted", "task.finished"], kinds
    assert [e["data"]["lock"] for e in mine if e["type"] == "vm.locked"] == ["destroyed"]
    status_changes = [(e["data"]["old_status"], e["data"]["new_status"]) for e in mine
                      if e["type"] == "vm.status.changed"]
    assert status_changes == [("stopped", "running"), ("running", "stopped")]
    finished = [e["data"] for e in mine if e["type"] == "task.finished"]
    assert [f["upid"] for f in finished] == upids and {f["exitstatus"] for f in finished} == {"OK"}
    assert [e["data"]["node"] for e in mine if e["type"] == "vm.created"] == ["n2"]
    assert all(e["timestamp"].endswith("Z") for e in mine)

    # resuming from the middle gives exactly the rest, on any node
    middle = mine[len(mine) // 2]["id"]
    rest = [e for e in seen if e["id"] > middle]
    assert events(n2.session(), n2, since=middle) == rest
    assert events(reader, n1, since=middle, vmid=vmid) == [e for e in rest if e["data"].get("vmid") == vmid]
    assert [e["id"] for e in events(reader, n1, types="vm.status.*")] == \
        [e["id"] for e in mine if e["type"] == "vm.status.changed"]

    # no secret in any event: not the cloud-init password, not a key, not a hash
    text = json.dumps(seen)
    assert "s3cret-Pa55" not in text and "PRIVATE KEY" not in text and "$" not in text
