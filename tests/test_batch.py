"""`POST /v1/batch/vms/action`: one action on guests of several nodes, with the single calls' rules."""

from __future__ import annotations

import pytest
import requests
from proxmoxer.tools import Tasks

from tests.guest import qemu_missing

pytestmark = [pytest.mark.slow, pytest.mark.skipif(qemu_missing() is not None, reason=qemu_missing() or "")]


def batch(session, node, body: dict, request_id: str | None = None):
    headers = {"X-Request-ID": request_id} if request_id else {}
    return session.post(f"https://127.0.0.1:{node.api_port}/v1/batch/vms/action", json=body, headers=headers,
                        timeout=120)


def make(px, node: str) -> int:
    vmid = int(px.cluster.nextid.get())
    upid = px.nodes(node).qemu.create(vmid=vmid, memory=64, kvm=0)
    assert Tasks.blocking_status(px, upid, timeout=60, polling_interval=0.2)["exitstatus"] == "OK"
    return vmid


def status(px, vmid: int) -> str:
    return next(r["status"] for r in px.cluster.resources.get(type="vm") if r["vmid"] == vmid)


def test_batch_start_and_stop_across_nodes_with_a_locked_guest(three_nodes):
    n1, n2, _ = three_nodes.nodes
    px, s = n1.api(), n1.session()
    a, b, c, d = make(px, "n1"), make(px, "n2"), make(px, "n1"), make(px, "n2")
    px.nodes("n1").qemu(c).config.put(lock="backup")

    r = batch(s, n1, {"action": "start", "vmids": [a, b, c, d], "options": {"parallel": 4}, "wait": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["summary"] == {"total": 4, "succeeded": 3, "failed": 1, "skipped": 0}
    by_vmid = {row["vmid"]: row for row in body["results"]}
    assert [row["vmid"] for row in body["results"]] == [a, b, c, d]
    for vmid in (a, b, d):
        assert by_vmid[vmid]["success"] is True and by_vmid[vmid]["upid"].startswith("UPID:")
        assert by_vmid[vmid]["exitstatus"] == "OK"
        assert status(px, vmid) == "running"
    assert by_vmid[b]["upid"].startswith("UPID:n2:")  # run by the guest's own node
    assert by_vmid[c] == {"vmid": c, "success": False, "status": 423, "error": f"VM {c} is locked (backup)"}

    # continue_on_error=false, one at a time: nothing starts after the first failure
    r = batch(s, n1, {"action": "stop", "vmids": [a, c, b, d],
                      "options": {"parallel": 1, "continue_on_error": False}, "wait": 1})
    body = r.json()
    assert body["summary"] == {"total": 4, "succeeded": 1, "failed": 1, "skipped": 2}
    assert [(row["vmid"], row["success"], row.get("skipped", False)) for row in body["results"]] == \
        [(a, True, False), (c, False, False), (b, False, True), (d, False, True)]
    assert (status(px, a), status(px, b), status(px, d)) == ("stopped", "running", "running")

    # a guest whose node is down: the single call's 502, at once, and nothing queued
    three_nodes.node("n2").kill()
    r = batch(s, n1, {"action": "stop", "vmids": [b], "wait": 1})
    assert r.json()["results"] == [{"vmid": b, "success": False, "status": 502, "error": "node 'n2' is unreachable"}]


def test_batch_rules_are_the_single_calls_rules(single_node):
    node = single_node
    px, s = node.api(), node.session()
    mine, other = make(px, "n1"), make(px, "n1")
    px.access.users.post(userid="op@pve", password="operator-pw")
    px.access.acl.put(path=f"/vms/{mine}", roles="PVEVMUser", users="op@pve")
    op = _session_of(node, "op@pve", "operator-pw")
    r = batch(op, node, {"action": "snapshot", "vmids": [mine, other, 99999], "snapname": "before"})
    assert r.status_code == 200, r.text
    rows = r.json()["results"]
    assert rows[0]["success"] and rows[0]["upid"].startswith("UPID:n1:")
    assert rows[1] == {"vmid": other, "success": False, "status": 403,
                       "error": f"Permission denied - missing 'VM.Snapshot' on '/vms/{other}'"}
    assert rows[2]["status"] == 403  # no existence leak to who may not see it
    assert Tasks.blocking_status(px, rows[0]["upid"], timeout=60, polling_interval=0.2)["exitstatus"] == "OK"
    assert [x["name"] for x in px.nodes("n1").qemu(mine).snapshot.get()] == ["before", "current"]

    # a missing snapname is the single call's 400, per guest; unknown guests 404 for who may see them
    rows = batch(s, node, {"action": "snapshot", "vmids": [mine]}).json()["results"]
    assert rows[0]["status"] == 400 and "snapname" in rows[0]["error"]
    rows = batch(s, node, {"action": "reset", "vmids": [99999]}).json()["results"]
    assert rows[0] == {"vmid": 99999, "success": False, "status": 404, "error": "VM 99999 does not exist"}
    # parameters that belong to no such action, bad actions and bad options: 400 for the whole batch
    for body, key in (({"action": "start", "vmids": [mine], "snapname": "x"}, "snapname"),
                      ({"action": "explode", "vmids": [mine]}, "action"),
                      ({"action": "start", "vmids": [mine], "options": {"parallel": 99}}, "options.parallel"),
                      ({"action": "start", "vmids": [mine, mine]}, "vmids"),
                      ({"action": "start", "vmids": ["abc"]}, "vmids")):
        r = batch(s, node, body)
        assert r.status_code == 400 and key in r.json()["errors"], (body, r.text)

    # a retried batch (same X-Request-ID) starts nothing twice
    first = batch(s, node, {"action": "start", "vmids": [mine, other]}, request_id="batch-retry-1").json()
    again = batch(s, node, {"action": "start", "vmids": [mine, other]}, request_id="batch-retry-1").json()
    assert [row["upid"] for row in first["results"]] == [row["upid"] for row in again["results"]]
    starts = [t for t in px.nodes("n1").tasks.get(typefilter="qmstart", limit=100) if t["id"] in (str(mine),
                                                                                                  str(other))]
    assert len(starts) == 2


def _session_of(node, user: str, password: str):
    s = requests.Session()
    s.verify, s.trust_env = False, False
    data = s.post(node.url + "/access/ticket", data={"username": user, "password": password}, timeout=10).json()
    s.cookies.set("PVEAuthCookie", data["data"]["ticket"])
    s.headers["CSRFPreventionToken"] = data["data"]["CSRFPreventionToken"]
    return s
