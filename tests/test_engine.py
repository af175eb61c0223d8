"""The pure core: decide and apply, request-id idempotency, locks, digests, reservations."""

from __future__ import annotations

import pytest

from engine import commands as c
from engine import machine
from engine.codec import decode_records, encode_records
from engine.errors import Rejection
from engine.machine import Machine
from engine.state import State, config_digest, render_guest_config


def run(machine: Machine, *commands: c.Command) -> list[dict]:
    return machine.execute_entry(encode_records(list(commands)))


def machine_with_node() -> Machine:
    m = Machine()
    run(m, c.RegisterNode(request_id="reg", ts=1.0, name="n1", ip="127.0.0.1", api_port=8006, raft_addr="a:1"))
    return m


def create(rid: str, vmid: int, ts: float = 2.0, **config) -> c.CreateGuest:
    return c.CreateGuest(request_id=rid, ts=ts, node="n1", vmid=vmid, config=config, upid=f"U-{rid}", starttime=2)


def update(rid: str, ts: float, description: str) -> c.UpdateGuestConfig:
    return c.UpdateGuestConfig(request_id=rid, ts=ts, node="n1", vmid=100, set={"description": description})


def test_request_memory_is_bounded_by_count_and_a_remembered_retry_applies_once(monkeypatch):
    monkeypatch.setattr(machine, "REQUEST_MEMORY_MAX", 50)
    m = machine_with_node()
    run(m, create("r1", 100, name="a"))
    for i in range(200):  # 4 times the bound: memory stays at it, oldest forgotten first
        run(m, update(f"u{i}", 10.0 + i, f"d{i}"))
    assert len(m.state.requests) == 50
    assert list(m.state.requests)[0] == "u150"
    assert run(m, update("u199", 300.0, "changed")) == [{"ok": {}}]  # remembered: answered, not applied again
    assert m.state.guests[100]["conf"]["description"] == "d199"
    assert machine.remembered(m.state, "u0") is None  # forgotten: a retry this late would apply anew
    assert run(m, update("u0", 301.0, "late"))[0] == {"ok": {}}
    assert m.state.guests[100]["conf"]["description"] == "late"


def test_request_memory_forgets_requests_older_than_an_hour_and_keeps_rejections():
    m = machine_with_node()
    [created] = run(m, create("r1", 100, ts=10.0, name="a"))
    [refused] = run(m, create("r2", 100, ts=11.0, name="b"))
    assert refused["error"]["status"] == 409
    assert run(m, create("r2", 100, ts=12.0, name="b")) == [refused]  # a rejection is remembered as such
    assert machine.remembered(m.state, "r1") == created
    run(m, update("u1", 11.0 + machine.REQUEST_MEMORY_SECONDS + 1, "later"))
    assert set(m.state.requests) == {"u1"}  # everything older than an hour before the newest command is gone


def test_records_round_trip_with_type_and_version():
    cmd = create("r1", 100, name="a")
    wire = encode_records([cmd])
    assert decode_records(wire) == [cmd]
    assert cmd.to_wire()[:2] == ["guest.create", 1]


def test_same_vmid_twice_is_a_conflict_and_a_retry_applies_once():
    m = machine_with_node()
    first, dup, retry = run(m, create("r1", 100, name="a"), create("r2", 100, name="b"), create("r1", 100, name="a"))
    assert first == {"ok": {"upid": "U-r1", "vmid": 100}}
    assert dup["error"]["status"] == 409 and "already exists" in dup["error"]["message"]
    assert retry == first
    assert m.state.guests[100]["conf"] == {"name": "a"}
    assert sum(1 for t in m.state.tasks.values() if t["type"] == "qmcreate") == 1


def test_create_on_unknown_node_is_refused():
    m = machine_with_node()
    [res] = run(m, c.CreateGuest(request_id="x", ts=2, node="nope", vmid=100, upid="U", starttime=2))
    assert res["error"]["status"] == 404


def test_update_checks_digest_and_lock():
    m = machine_with_node()
    run(m, create("r1", 100, memory=512))
    digest = config_digest(m.state.guests[100]["conf"])
    [ok] = run(m, c.UpdateGuestConfig(request_id="u1", ts=3, node="n1", vmid=100, set={"memory": 1024},
                                      digest=digest))
    assert ok == {"ok": {}}
    [stale] = run(m, c.UpdateGuestConfig(request_id="u2", ts=3, node="n1", vmid=100, set={"memory": 2048},
                                         digest=digest))
    assert stale["error"]["status"] == 400 and "file changed by other user" in stale["error"]["message"]
    [locked] = run(m, c.LockGuest(request_id="l1", ts=4, vmid=100, lock="backup"))
    assert locked == {"ok": {"lock": "backup"}}
    [again] = run(m, c.LockGuest(request_id="l2", ts=4, vmid=100, lock="snapshot"))
    assert again["error"] == {"status": 423, "message": "VM 100 is locked (backup)"}
    [blocked] = run(m, c.UpdateGuestConfig(request_id="u3", ts=5, node="n1", vmid=100, set={"cores": 2}))
    assert blocked["error"]["status"] == 423
    [wrong] = run(m, c.UnlockGuest(request_id="x1", ts=6, vmid=100, lock="snapshot"))
    assert wrong["error"]["status"] == 423
    run(m, c.UnlockGuest(request_id="x2", ts=6, vmid=100, lock="backup"))
    assert "lock" not in m.state.guests[100]["conf"]
    [deleted] = run(m, c.DeleteGuest(request_id="d1", ts=7, node="n1", vmid=100, upid="UD", starttime=7))
    assert deleted == {"ok": {"upid": "UD"}} and 100 not in m.state.guests


def test_reservations_expire_by_command_time():
    m = machine_with_node()
    [r1] = run(m, c.ReserveVmid(request_id="v1", ts=10, user="alice@pve", lease=30))
    assert r1 == {"ok": {"vmid": 100}}
    [r2] = run(m, c.ReserveVmid(request_id="v2", ts=11, user="bob@pve"))
    assert r2 == {"ok": {"vmid": 101}}
    assert m.state.next_free_vmid(now=12) == 102
    [theft] = run(m, c.CreateGuest(request_id="c1", ts=12, user="bob@pve", node="n1", vmid=100, upid="U",
                                   starttime=12))
    assert theft["error"]["status"] == 409
    [own] = run(m, c.CreateGuest(request_id="c2", ts=12, user="alice@pve", node="n1", vmid=100, upid="U2",
                                 starttime=12))
    assert "ok" in own and 100 not in m.state.reservations
    assert m.state.next_free_vmid(now=100) == 101  # bob's lease (60 s from t=11) has expired by t=100
    [later] = run(m, c.ReserveVmid(request_id="v3", ts=100, user="carol@pve"))
    assert later == {"ok": {"vmid": 101}} and m.state.reservations[101]["user"] == "carol@pve"


def test_a_bug_in_decide_is_a_deterministic_rejection_not_a_crash():
    m = machine_with_node()
    [res] = run(m, create("bad", 100, name="a"), )
    assert "ok" in res
    bad = c.UpdateGuestConfig(request_id="b", ts=3, node="n1", vmid=100, set={"a": 1}, delete=None)  # type: ignore
    [res] = run(m, bad)
    assert res["error"]["status"] == 500
    assert m.state.guests[100]["conf"] == {"name": "a"}


def test_config_text_and_digest_follow_proxmox():
    conf = {"name": "web", "memory": 2048, "description": "line one\nline two", "cores": 2}
    assert render_guest_config(conf) == "#line one\n#line two\ncores: 2\nmemory: 2048\nname: web\n"
    assert len(config_digest(conf)) == 40
    assert config_digest(conf) != config_digest({**conf, "cores": 4})


def test_state_snapshot_round_trip():
    m = machine_with_node()
    run(m, create("r1", 100, name="a"), c.ReserveVmid(request_id="v", ts=3, user="u@pve"))
    from engine.codec import packb, unpackb
    restored = State.from_dict(unpackb(packb(m.state.to_dict())))
    assert restored == m.state


def test_rejection_round_trip():
    rej = Rejection(400, "Parameter verification failed", {"vmid": "bad"})
    assert Rejection.from_dict(rej.to_dict()) == rej
    with pytest.raises(Rejection):
        raise rej


def test_dropping_a_snapshot_hands_its_children_to_its_parent():
    from engine.snapshots import drop_snapshot
    snaps = {"a": {"snaptime": 1}, "b": {"parent": "a", "snaptime": 2}, "c": {"parent": "b", "snaptime": 3}}
    conf, left = drop_snapshot({"parent": "b", "name": "x"}, snaps, "b")
    assert left == {"a": {"snaptime": 1}, "c": {"parent": "a", "snaptime": 3}}
    assert conf == {"parent": "a", "name": "x"}
    assert snaps["c"]["parent"] == "b"  # the inputs stay as they were
    conf, left = drop_snapshot(conf, left, "a")
    assert "parent" not in conf and "parent" not in left["c"]


def test_destroying_a_guest_drops_its_acls_and_pool_membership():
    """As Proxmox's remove_vm_access: a later guest with the same VMID must not inherit old permissions."""
    from engine.access import ChangeAcl, SetPool, SetUser

    m = machine_with_node()
    run(m, create("r1", 100), create("r2", 101),
        SetUser(request_id="u", ts=3, userid="ann@pve", create=True),
        SetPool(request_id="p", ts=3, poolid="team", create=True, vms=[100, 101]),
        ChangeAcl(request_id="a1", ts=3, path="/vms/100", roles=["PVEVMUser"], users=["ann@pve"]),
        ChangeAcl(request_id="a2", ts=3, path="/vms/101", roles=["PVEVMUser"], users=["ann@pve"]))
    [gone] = run(m, c.DeleteGuest(request_id="d", ts=4, node="n1", vmid=100, upid="U-d", starttime=4))
    assert "ok" in gone
    assert m.state.access["pool"]["team"]["vms"] == [101]
    assert "/vms/100" not in m.state.access["acl"] and "/vms/101" in m.state.access["acl"]
    run(m, create("r3", 100))
    assert "/vms/100" not in m.state.access["acl"]


def test_a_guest_is_not_destroyed_under_a_running_task():
    """Found by the simulator (seed 87 before the fix): a resize took no lock, the guest was destroyed while it
    ran, and its handler got no guest. Destroying now waits for the guest's tasks, as Proxmox's config lock."""
    m = machine_with_node()
    run(m, create("r1", 100, scsi0="local:100/vm-100-disk-0.raw,size=1G"))
    run(m, c.StartTask(request_id="t", ts=3, node="n1", upid="U-t", starttime=3, type="resize", vmid=100,
                       intent={"disk": "scsi0", "size": "+1G"}))
    [refused] = run(m, c.DeleteGuest(request_id="d", ts=4, node="n1", vmid=100, upid="U-d", starttime=4))
    assert refused["error"]["status"] == 409 and "U-t" in refused["error"]["message"]
    run(m, c.FinishTask(request_id="f", ts=5, upid="U-t", exitstatus="OK"))
    [gone] = run(m, c.DeleteGuest(request_id="d2", ts=6, node="n1", vmid=100, upid="U-d2", starttime=6))
    assert "ok" in gone and 100 not in m.state.guests


def test_a_task_outcome_patches_the_config_and_keeps_edits_made_meanwhile():
    m = machine_with_node()
    run(m, create("r1", 100, memory=512, scsi0="local:100/vm-100-disk-0.raw,size=1G", description="old"))
    run(m, c.StartTask(request_id="t", ts=3, node="n1", upid="U-t", starttime=3, type="resize", vmid=100,
                       intent={"disk": "scsi0", "size": "+1G"}))
    run(m, c.UpdateGuestConfig(request_id="u", ts=4, node="n1", vmid=100, set={"memory": 2048}))
    [done] = run(m, c.FinishTask(request_id="f", ts=5, upid="U-t", exitstatus="OK", patches={
        100: {"set": {"scsi0": "local:100/vm-100-disk-0.raw,size=2G"}, "delete": ["description"]}}))
    assert "ok" in done
    assert m.state.guests[100]["conf"] == {"memory": 2048, "scsi0": "local:100/vm-100-disk-0.raw,size=2G"}


def test_destroy_refuses_a_running_guest_and_its_lock_keeps_tasks_out():
    """Found by the simulator (seeds 177 and 172): a running guest could be destroyed, and a start could begin
    while a destroy ran; its QEMU then outlived the guest. The destroy task holds `lock: destroyed`, as Proxmox."""
    m = machine_with_node()
    run(m, create("r1", 100), c.ObserveGuest(request_id="o", ts=3, node="n1", vmid=100, status="running"))
    [running] = run(m, c.DeleteGuest(request_id="d", ts=4, node="n1", vmid=100, upid="U-d", starttime=4))
    assert running["error"]["status"] == 409 and "running" in running["error"]["message"]
    run(m, c.ObserveGuest(request_id="o2", ts=5, node="n1", vmid=100, status="stopped"))
    run(m, c.StartTask(request_id="x", ts=6, node="n1", upid="U-x", starttime=6, type="qmdestroy", vmid=100,
                       lock="destroyed"))
    [start] = run(m, c.StartTask(request_id="s", ts=7, node="n1", upid="U-s", starttime=7, type="qmstart", vmid=100))
    assert start["error"]["status"] == 423 and "destroyed" in start["error"]["message"]


def test_an_interrupted_migration_keeps_its_lock():
    """The guest may already run on the target: as Proxmox, `lock: migrate` stays until an admin unlocks it."""
    m = machine_with_node()
    run(m, c.RegisterNode(request_id="reg2", ts=1.0, name="n2", ip="127.0.0.2", api_port=8006, raft_addr="b:1"))
    run(m, create("r1", 100))
    run(m, c.StartTask(request_id="t", ts=3, node="n1", upid="U-t", starttime=3, type="qmigrate", vmid=100,
                       lock="migrate", intent={"target": "n2"}))
    run(m, c.FinishTask(request_id="f", ts=5, upid="U-t", exitstatus="task interrupted", keep_lock=True))
    assert m.state.guests[100]["conf"]["lock"] == "migrate" and m.state.guests[100]["node"] == "n1"
    [unlocked] = run(m, c.UnlockGuest(request_id="u", ts=6, vmid=100))
    assert "ok" in unlocked and "lock" not in m.state.guests[100]["conf"]


@pytest.mark.parametrize("kind,intent,newid", [("qmigrate", {"target": "n2", "online": 1}, None),
                                                ("qmclone", {"target": "n2"}, 101)])
def test_a_node_is_not_removed_while_a_task_puts_a_guest_on_it(kind, intent, newid):
    """A migration (or a clone) to a node runs on the source: while it runs, the target is not removed, or its outcome
    would put the guest on a node that is gone (found by the simulator, --membership seed 47: the outcome could not
    move the guest, the source ran it again and so did the removed target)."""
    m = machine_with_node()
    run(m, c.RegisterNode(request_id="reg2", ts=1.0, name="n2", ip="127.0.0.2", api_port=8006, raft_addr="b:1"))
    run(m, create("r1", 100))
    [started] = run(m, c.StartTask(request_id="t", ts=3, node="n1", upid="U-t", starttime=3, type=kind, vmid=100,
                                   intent=intent, newid=newid))
    assert "ok" in started, started
    [refused] = run(m, c.RemoveNode(request_id="rm", ts=4.0, name="n2"))
    assert refused["error"]["status"] == 409 and "U-t" in refused["error"]["message"]
    assert "n2" in m.state.nodes
    put = {"moved": {100: "n2"}} if kind == "qmigrate" else {"created": [{"vmid": 101, "node": "n2", "config": {}}]}
    run(m, c.FinishTask(request_id="f", ts=5, upid="U-t", exitstatus="OK", **put))
    assert m.state.guests[newid or 100]["node"] == "n2"  # and the removal now says what is left on it
    [owns] = run(m, c.RemoveNode(request_id="rm2", ts=6.0, name="n2"))
    assert owns["error"]["status"] == 409 and "still owns guests" in owns["error"]["message"]


def start_task(rid: str, kind: str, user: str = "root@pam", **intent) -> c.StartTask:
    return c.StartTask(request_id=rid, ts=3.0, user=user, node="n1", upid=f"U-{rid}", starttime=3, type=kind,
                       vmid=100, intent=intent)


@pytest.mark.parametrize("kind,intent,lock", [
    ("qmsnapshot", {"snapname": "s1"}, "snapshot"), ("qmdestroy", {}, "destroyed"),
    ("qmigrate", {"target": "n2"}, "migrate"), ("qmstart", {}, None),
    ("resize", {"disk": "scsi0", "size": "+1G"}, None),
])
def test_each_task_kind_takes_the_lock_it_declares(kind, intent, lock):
    m = machine_with_node()
    run(m, c.RegisterNode(request_id="reg2", ts=1.0, name="n2", ip="127.0.0.2", api_port=8006, raft_addr="b:1"))
    run(m, create("r1", 100))
    [res] = run(m, start_task("t", kind, **intent))
    assert "ok" in res, res
    assert m.state.guests[100]["conf"].get("lock") == lock and m.state.tasks["U-t"]["lock"] == lock


def clone(rid: str, newid: int, **intent) -> c.StartTask:
    return c.StartTask(request_id=rid, ts=3.0, node="n1", upid=f"U-{rid}", starttime=3, type="qmclone", vmid=100,
                       intent=intent, newid=newid)


def finish(rid: str, upid: str) -> c.FinishTask:
    return c.FinishTask(request_id=rid, ts=5.0, upid=upid, exitstatus="OK")


FLOCK_TIMEOUT = "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout"


def test_clones_of_a_template_share_it_and_keep_out_what_needs_it_alone():
    """qemu-server's `clone_vm` holds a source that does not run with a shared flock and writes no lock into its
    config: parallel clones of one template all start; a config change, lock, destroy, snapshot, migration or
    power action waits for the exclusive flock and fails `can't lock file ... - got timeout` (skiplock or not);
    nothing is written then. The source is free again only when the last clone has ended."""
    m = machine_with_node()
    run(m, c.RegisterNode(request_id="reg2", ts=1.0, name="n2", ip="127.0.0.2", api_port=8006, raft_addr="b:1"))
    run(m, create("r1", 100, name="tpl", template=1))
    first, second, linked = run(m, clone("a", 101), clone("b", 102), clone("l", 103, linked=1))
    assert "ok" in first and "ok" in second and "ok" in linked, (first, second, linked)
    assert "lock" not in m.state.guests[100]["conf"]  # as Proxmox: a shared clone shows no lock on its source
    assert all(m.state.tasks[f"U-{r}"]["shared"] and m.state.tasks[f"U-{r}"]["lock"] is None for r in "abl")
    assert {101, 102, 103} <= set(m.state.reservations)  # each new VMID held for its task
    conf, tasks_before = dict(m.state.guests[100]["conf"]), set(m.state.tasks)
    refused = run(
        m,
        c.UpdateGuestConfig(request_id="u", ts=4, node="n1", vmid=100, set={"name": "x"}),
        c.UpdateGuestConfig(request_id="us", ts=4, node="n1", vmid=100, set={"name": "x"}, skiplock=True),
        c.LockGuest(request_id="lk", ts=4, vmid=100, lock="backup"),
        c.DeleteGuest(request_id="d", ts=4, node="n1", vmid=100, upid="U-d", starttime=4),
        start_task("td", "qmdestroy"), start_task("ts", "qmsnapshot", snapname="s1"),
        start_task("tm", "qmigrate", target="n2"), start_task("tt", "qmtemplate"),
        start_task("tc", "qmconfig", set={"name": "x"}),
    )
    for res in refused:
        assert res.get("error") == {"status": 423, "message": FLOCK_TIMEOUT}, res
    assert m.state.guests[100]["conf"] == conf and set(m.state.tasks) == tasks_before
    run(m, finish("fa", "U-a"), finish("fl", "U-l"))
    [still] = run(m, c.UpdateGuestConfig(request_id="u2", ts=6, node="n1", vmid=100, set={"name": "x"}))
    assert still["error"]["message"] == FLOCK_TIMEOUT  # the last clone still holds it
    run(m, finish("fb", "U-b"))
    [free] = run(m, c.UpdateGuestConfig(request_id="u3", ts=6, node="n1", vmid=100, set={"name": "y"}))
    assert free == {"ok": {}} and m.state.guests[100]["conf"]["name"] == "y"
    assert not {101, 102, 103} & set(m.state.reservations)


def test_a_clone_of_a_stopped_guest_shares_it_and_a_start_waits_for_it():
    """A full clone of a stopped (not template) guest is shared too; Proxmox's start takes the exclusive flock."""
    m = machine_with_node()
    run(m, create("r1", 100, name="vm"))
    assert all("ok" in r for r in run(m, clone("a", 101), clone("b", 102)))
    [start] = run(m, start_task("s", "qmstart"))
    assert start["error"] == {"status": 423, "message": FLOCK_TIMEOUT}
    run(m, finish("fa", "U-a"), finish("fb", "U-b"))
    assert "ok" in run(m, start_task("s2", "qmstart"))[0]


def test_a_clone_of_a_running_guest_holds_it_alone():
    """A running source is cloned under Proxmox's exclusive flock: gpve's `lock: clone`; a second clone waits."""
    m = machine_with_node()
    run(m, create("r1", 100, name="vm"))
    m.state.guests[100]["status"] = "running"
    first, second = run(m, clone("a", 101), clone("b", 102))
    assert "ok" in first and second["error"] == {"status": 423, "message": "VM 100 is locked (clone)"}
    assert m.state.guests[100]["conf"]["lock"] == "clone" and not m.state.tasks["U-a"]["shared"]
    assert 102 not in m.state.reservations
    run(m, finish("fa", "U-a"))
    assert "lock" not in m.state.guests[100]["conf"]


def test_a_clone_after_a_task_that_holds_the_guest_alone_takes_the_lock_and_waits_its_turn():
    """With a task on the source under way or waiting (a start, say, that may make it run), a clone does not share
    it: it takes `lock: clone` and runs after that task, as before; once it is in, nothing else starts."""
    m = machine_with_node()
    run(m, create("r1", 100, name="vm"))
    run(m, start_task("s", "qmstart"))
    [cloned] = run(m, clone("a", 101))
    assert "ok" in cloned and m.state.guests[100]["conf"]["lock"] == "clone"
    assert not m.state.tasks["U-a"]["shared"]
    assert run(m, clone("b", 102))[0]["error"]["message"] == "VM 100 is locked (clone)"


def test_a_task_parameter_the_node_cannot_honour_is_refused_and_root_only_ones_need_root():
    m = machine_with_node()
    run(m, create("r1", 100))
    [unknown] = run(m, start_task("a", "qmstart", machine="q35"))
    assert unknown["error"]["status"] == 400 and "machine" in unknown["error"]["errors"]
    [not_root] = run(m, start_task("b", "qmstart", user="alice@pve", keepActive=1))
    assert not_root["error"]["status"] == 403
    assert not_root["error"]["errors"] == {"keepActive": "Only root may use this option."}
    assert not m.state.running_tasks
    [root] = run(m, start_task("c", "qmstart", keepActive=1))
    assert "ok" in root


def test_a_stop_with_overrule_shutdown_aborts_the_shutdown_under_way():
    m = machine_with_node()
    run(m, create("r1", 100))
    m.state.guests[100]["status"] = "running"
    run(m, start_task("s", "qmshutdown", timeout=60))
    run(m, start_task("k", "qmstop", **{"overrule-shutdown": 1}))
    assert m.state.tasks["U-s"]["abort"] is True


def test_an_admission_that_outlives_the_nodes_removal_does_not_register_it_again():
    """A member's admission of a joining node carries the `applied` count it began at: a removal of the node after
    that refuses its registration (found by the simulator, --membership seed 15); a later admission works."""
    m = machine_with_node()

    def admit(rid: str, admitted_at: int) -> dict:
        [res] = run(m, c.RegisterNode(request_id=rid, ts=2.0, name="n2", ip="127.0.0.2", api_port=8006,
                                      raft_addr="b:1", admitted_at=admitted_at))
        return res

    began = m.state.applied
    assert "ok" in admit("admit-1", began)
    run(m, c.RemoveNode(request_id="rm", ts=3.0, name="n2"))
    stale = admit("admit-stale", began)
    assert stale["error"]["status"] == 409 and "removed after its admission began" in stale["error"]["message"]
    assert "n2" not in m.state.nodes
    assert "ok" in admit("admit-2", m.state.applied) and "n2" in m.state.nodes
