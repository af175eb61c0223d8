"""Pending changes, pure: what a config change to a running guest leaves for its next start (engine/pending.py,
decided in the log), and the MACs every path gives a new NIC (engine/nics.py)."""

from __future__ import annotations

from engine import commands as c
from engine import nics, pending
from engine.codec import encode_records
from engine.machine import Machine
from engine.pending import Pending
from engine.state import guest_digest, render_guest_config


def run(m: Machine, *commands: c.Command) -> list[dict]:
    return m.execute_entry(encode_records(list(commands)))


def guest_machine(running: bool, **config) -> Machine:
    m = Machine()
    run(m, c.RegisterNode(request_id="reg", ts=1.0, name="n1", ip="127.0.0.1", api_port=8006, raft_addr="a:1"),
        c.CreateGuest(request_id="mk", ts=2.0, node="n1", vmid=100, config=config, upid="U-mk", starttime=2))
    if running:
        run(m, c.ObserveGuest(request_id="up", ts=3.0, node="n1", vmid=100, status="running"))
    return m


def update(m: Machine, rid: str, digest: str | None = None, delete=(), revert=(), **values) -> dict:
    [res] = run(m, c.UpdateGuestConfig(request_id=rid, ts=4.0, node="n1", vmid=100, set=values, delete=list(delete),
                                       revert=list(revert), digest=digest))
    return res


def test_a_stopped_guest_takes_a_change_at_once():
    m = guest_machine(False, cores=1, memory=512)
    assert update(m, "u1", cores=2, delete=["memory"]) == {"ok": {}}
    guest = m.state.guests[100]
    assert guest["conf"] == {"cores": 2} and "pending" not in guest and "pending_delete" not in guest


def test_a_running_guest_keeps_cores_pending_and_takes_fast_plug_keys_at_once():
    m = guest_machine(True, cores=1, name="a", memory=512)
    before = guest_digest(m.state.guests[100])
    assert update(m, "u1", cores=2, name="b", description="x", onboot=1, delete=["memory"]) == {"ok": {}}
    guest = m.state.guests[100]
    assert guest["conf"] == {"cores": 1, "name": "b", "description": "x", "onboot": 1, "memory": 512}
    assert guest["pending"] == {"cores": 2} and guest["pending_delete"] == {"memory": False}
    conf, pend = guest["conf"], pending.of(guest)
    assert pending.applied(conf, pend) == {"cores": 2, "name": "b", "description": "x", "onboot": 1}
    assert pending.rows(conf, pend) == [
        {"key": "cores", "value": 1, "pending": 2}, {"key": "description", "value": "x"},
        {"key": "memory", "value": 512, "delete": 1}, {"key": "name", "value": "b"}, {"key": "onboot", "value": 1}]
    # the digest covers the [PENDING] section, as Proxmox's covers the whole file
    text = render_guest_config(conf, {}, pending.section(pend))
    assert text.endswith("\n[PENDING]\ncores: 2\ndelete: memory\n")
    assert guest_digest(guest) != before
    stale = update(m, "u2", digest=before, cores=4)
    assert stale["error"]["status"] == 400 and "file changed by other user" in stale["error"]["message"]


def test_setting_the_current_value_again_or_reverting_drops_the_pending_change():
    m = guest_machine(True, cores=1, memory=512)
    update(m, "u1", cores=2, memory=1024)
    update(m, "u2", cores=1)  # back to what runs: nothing pending for cores
    assert m.state.guests[100]["pending"] == {"memory": 1024}
    update(m, "u3", revert=["memory"])
    assert "pending" not in m.state.guests[100] and m.state.guests[100]["conf"] == {"cores": 1, "memory": 512}
    both = update(m, "u4", cores=3, revert=["cores"])
    assert both["error"]["status"] == 400 and "-revert cores" in both["error"]["errors"]["delete"]


def test_deleting_a_key_that_is_only_pending_drops_it():
    m = guest_machine(True, cores=1)
    update(m, "u1", sockets=2)
    assert m.state.guests[100]["pending"] == {"sockets": 2}
    update(m, "u2", delete=["sockets"])
    assert "pending" not in m.state.guests[100] and "pending_delete" not in m.state.guests[100]


def test_a_start_under_way_makes_a_change_wait():
    m = guest_machine(False, cores=1)
    run(m, c.StartTask(request_id="s", ts=3.5, node="n1", upid="U-s", starttime=3, type="qmstart", vmid=100))
    update(m, "u1", cores=2)
    assert m.state.guests[100]["pending"] == {"cores": 2}


def test_a_task_outcome_takes_in_what_it_applied_and_keeps_what_was_staged_meanwhile():
    m = guest_machine(True, cores=1, memory=512)
    update(m, "u1", cores=2, memory=1024)
    run(m, c.StartTask(request_id="r", ts=5, node="n1", upid="U-r", starttime=5, type="qmreboot", vmid=100))
    seen = pending.of(m.state.guests[100])
    update(m, "u2", cores=4)  # staged while the reboot ran: the reboot applied cores=2 as it saw it
    done = pending.diff(seen, Pending())
    assert done == {"values": {}, "deletes": {}, "applied": {"cores": ["value", 2], "memory": ["value", 1024]}}
    run(m, c.FinishTask(request_id="f", ts=6, upid="U-r", exitstatus="OK", power={100: "running"},
                        patches={100: {"set": {"cores": 2, "memory": 1024}, "delete": []}}, pending={100: done}))
    guest = m.state.guests[100]
    assert guest["conf"] == {"cores": 2, "memory": 1024} and guest["pending"] == {"cores": 4}


def test_plan_follows_the_hotplug_option():
    net, disk = "virtio=BC:24:11:00:00:01,bridge=vmbr0", "local:100/vm-100-disk-1.qcow2"
    pend = Pending({"net1": net, "scsi1": disk, "ide1": disk, "cores": 2, "name": "x",
                    "ide2": "local:iso/b.iso,media=cdrom", "efidisk0": "local:100/vm-100-disk-2.raw"}, {"net0": False})
    conf = {"net0": net, "ide2": "local:iso/a.iso,media=cdrom"}
    assert pending.plan(conf, pend, running=False) == pending.Plan(now=tuple(pend.keys()))
    default = pending.plan(conf, pend, running=True)
    assert default.now == ("name",) and default.plug == ("ide2", "net0", "net1", "scsi1")
    off = pending.plan({**conf, "hotplug": "0"}, pend, running=True)
    assert off.now == ("name",) and off.plug == ("ide2",)  # a CD-ROM's medium changes without hotplug
    network = pending.plan({**conf, "hotplug": "network"}, pend, running=True)
    assert network.plug == ("ide2", "net0", "net1")
    only = pending.plan(conf, pend, running=True, selection=["net1"])
    assert only.now == ("name",) and only.plug == ("net1",)


def test_hot_actions_of_keys_that_need_no_qemu():
    hot = pending.hot_action
    features = pending.hotplug_features(None)
    assert features == {"network", "disk", "usb"} and pending.hotplug_features("1") == features
    assert pending.hotplug_features("0") == frozenset()
    assert hot("hotplug", None, "network", False, features) == pending.NOW
    assert hot("hotplug", None, "network,cpu", False, features) is None
    assert hot("balloon", None, 256, False, features) == pending.NOW
    assert hot("balloon", None, 0, False, features) is None
    assert hot("agent", "1", "1,fstrim_cloned_disks=1", False, features) == pending.NOW
    assert hot("agent", "1", "1,type=isa", False, features) is None
    assert hot("memory", 512, 1024, False, features) is None and hot("cores", 1, 2, False, features) is None
    assert hot("ipconfig0", None, "ip=dhcp", False, features) == pending.NOW
    old = "local:100/vm-100-disk-0.qcow2,size=1G"
    assert hot("scsi0", old, "local:100/vm-100-disk-0.qcow2,size=2G", False, features) == pending.NOW
    assert hot("scsi0", old, old + ",cache=writeback", False, features) is None


def test_commit_keeps_a_replaced_disk_as_unused_and_returns_a_forced_delete():
    vol0, vol1 = "local:100/vm-100-disk-0.qcow2", "local:100/vm-100-disk-1.qcow2"
    conf = {"scsi0": vol0 + ",size=1G", "scsi1": vol1 + ",size=1G"}
    pend = Pending({"scsi0": "local:100/vm-100-disk-2.qcow2,size=1G"}, {"scsi1": True})
    new, rest, doomed = pending.commit(100, conf, pend, pend.keys())
    assert new == {"scsi0": "local:100/vm-100-disk-2.qcow2,size=1G", "unused0": vol0} and not rest
    assert doomed == [vol1]
    again, _, _ = pending.commit(100, new, Pending({"scsi3": vol0}), ["scsi3"])  # re-attached: no longer unused
    assert "unused0" not in again and again["scsi3"] == vol0


def test_a_pending_disk_dropped_by_revert_is_kept_as_unused():
    conf, pend = pending.stage(100, {"scsi0": "local:100/vm-100-disk-0.qcow2"}, Pending(),
                               {"scsi1": "local:100/vm-100-disk-1.qcow2,size=1G"})
    assert pend.values == {"scsi1": "local:100/vm-100-disk-1.qcow2,size=1G"}
    conf, pend = pending.stage(100, conf, pend, {}, revert=["scsi1"])
    assert not pend and conf == {"scsi0": "local:100/vm-100-disk-0.qcow2", "unused0": "local:100/vm-100-disk-1.qcow2"}


def test_every_nic_without_a_mac_gets_one_under_proxmox_oui():
    entropy = lambda: "a1b2c3"  # noqa: E731
    assert nics.with_mac("virtio,bridge=vmbr0", entropy) == "virtio=BC:24:11:A1:B2:C3,bridge=vmbr0"
    assert nics.with_mac("model=e1000,bridge=vmbr0,tag=5", entropy) == "e1000=BC:24:11:A1:B2:C3,bridge=vmbr0,tag=5"
    assert nics.with_mac("model=virtio,macaddr=02:00:00:00:00:01", entropy) == "virtio=02:00:00:00:00:01"
    kept = "virtio=BC:24:11:00:00:01,bridge=vmbr0"
    assert nics.with_mac(kept, lambda: (_ for _ in ()).throw(AssertionError("no entropy needed"))) == kept
    assert nics.with_mac(kept, entropy, renew=True) == "virtio=BC:24:11:A1:B2:C3,bridge=vmbr0"
    assert nics.with_mac("bogus,bridge=vmbr0", entropy) == "bogus,bridge=vmbr0"


def test_a_change_left_pending_is_a_public_config_event():
    from engine import events as ev
    from engine.public_events import describe

    m = guest_machine(True, cores=1, memory=512)
    update(m, "u1", cores=3)
    [(kind, data)] = describe(ev.GuestPendingChanged(vmid=100, pending={"cores": 2}, pending_delete={"memory": True}),
                              m.state)
    assert kind == "vm.config.changed" and data["changes"] == {}
    assert data["pending"] == {"cores": {"old": 3, "new": 2}, "memory": {"delete": 2}}
