"""Moving guests between the nodes of a real three-node cluster: live (QEMU migration) and offline."""

from __future__ import annotations

import os

import pytest
from proxmoxer.tools import Tasks

from tests.guest import build_guest, kernel_args, qemu_missing, serial_text, ticks, wait_serial
from tests.harness import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.skipif(qemu_missing() is not None, reason=qemu_missing() or "")]


def done(px, node: str, upid: str, timeout: float = 120) -> dict:
    status = Tasks.blocking_status(px, upid, timeout=timeout, polling_interval=0.2)
    assert status is not None, f"task {upid} did not end"
    return status


def test_live_migration_keeps_the_guest_running_and_moves_its_config(three_nodes):
    guest_dir = build_guest()
    n1, n2, n3 = three_nodes.nodes
    px = n1.api()  # every call goes through node 1; requests for n2 and n3 are forwarded there
    vmid = int(px.cluster.nextid.get())
    upid = px.nodes("n2").qemu.create(vmid=vmid, name="traveller", memory=256, kvm=0, serial0="socket",
                                      args=kernel_args(guest_dir))
    assert done(px, "n2", upid)["exitstatus"] == "OK"
    assert done(px, "n2", px.nodes("n2").qemu(vmid).status.start.post())["exitstatus"] == "OK"
    wait_serial(n2, vmid, r"GPVE-TICK 3 ")
    check = px.nodes("n2").qemu(vmid).migrate.get(target="n3")
    assert check["running"] and "n3" in check["allowed_nodes"] and check["local_disks"] == []
    before = max(n for n, _ in ticks(n2, vmid))
    upid = px.nodes("n2").qemu(vmid).migrate.post(target="n3", online=1)
    status = done(px, "n2", upid)
    log = [line["t"] for line in px.nodes("n2").tasks(upid).log.get()]
    assert status["exitstatus"] == "OK", log
    assert any("downtime" in line for line in log)
    # the guest never restarted: its counter goes on, on node 3, without a second boot
    after = wait_for(lambda: (lambda t: t if len(t) >= 2 else None)(ticks(n3, vmid)), timeout=60)
    assert after[0][0] >= before and after[-1][0] > after[0][0]
    assert "GPVE-GUEST-READY" not in serial_text(n3, vmid)
    current = px.nodes("n3").qemu(vmid).status.current.get()
    assert current["status"] == "running" and current["qmpstatus"] == "running"
    assert px.nodes("n3").qemu(vmid).config.get()["name"] == "traveller"
    assert "lock" not in px.nodes("n3").qemu(vmid).config.get()
    for node in three_nodes.nodes:
        rows = {r["vmid"]: r for r in node.api().cluster.resources.get(type="vm")}
        assert rows[vmid]["node"] == "n3" and rows[vmid]["status"] == "running"
    assert vmid not in {g["vmid"] for g in px.nodes("n2").qemu.get()}
    assert done(px, "n3", px.nodes("n3").qemu(vmid).status.stop.post())["exitstatus"] == "OK"
    # a guest without local disks clones to another node too, with a cluster-wide next id
    newid = int(px.cluster.nextid.get())
    upid = px.nodes("n3").qemu(vmid).clone.post(newid=newid, name="copy-on-n1", target="n1")
    assert done(px, "n3", upid)["exitstatus"] == "OK"
    assert px.nodes("n1").qemu(newid).config.get()["name"] == "copy-on-n1"
    assert {r["vmid"]: r["node"] for r in px.cluster.resources.get(type="vm")}[newid] == "n1"


def test_local_disks_migrate_live_and_offline_and_a_failed_migration_changes_nothing(three_nodes):
    guest_dir = build_guest()
    n1, n2, n3 = three_nodes.nodes
    px = n1.api()
    vmid = int(px.cluster.nextid.get())
    upid = px.nodes("n2").qemu.create(vmid=vmid, name="with-disk", memory=256, kvm=0, serial0="socket",
                                      virtio0="local:1", args=kernel_args(guest_dir))
    assert done(px, "n2", upid)["exitstatus"] == "OK"
    volume = f"vm-{vmid}-disk-0.qcow2"
    on = {n.name: os.path.join(n.data_dir, "storage", "local", "images", str(vmid), volume) for n in (n2, n3)}
    assert os.path.exists(on["n2"])
    assert done(px, "n2", px.nodes("n2").qemu(vmid).status.start.post())["exitstatus"] == "OK"
    # live, without with-local-disks: the task fails, the guest runs on where it was, unlocked
    status = done(px, "n2", px.nodes("n2").qemu(vmid).migrate.post(target="n3", online=1))
    assert "local disks" in status["exitstatus"]
    assert px.nodes("n2").qemu(vmid).status.current.get()["status"] == "running"
    assert "lock" not in px.nodes("n2").qemu(vmid).config.get()
    # live, with its local disk mirrored to the target: what the guest wrote travels with it
    px.nodes("n2").qemu(vmid).monitor.post(command='qemu-io drive-virtio0 "write -P 0x41 0 512"')
    wait_serial(n2, vmid, r"disk=AAAAAAAAAAAAAAAA")
    status = done(px, "n2", px.nodes("n2").qemu(vmid).migrate.post(target="n3", online=1, **{"with-local-disks": 1}))
    assert status["exitstatus"] == "OK", px.nodes("n2").tasks(status["upid"]).log.get()
    wait_serial(n3, vmid, r"GPVE-TICK \d+ disk=AAAAAAAAAAAAAAAA")
    assert "GPVE-GUEST-READY" not in serial_text(n3, vmid)
    assert os.path.exists(on["n3"]) and not os.path.exists(on["n2"])
    assert px.nodes("n3").qemu(vmid).status.current.get()["status"] == "running"
    assert done(px, "n3", px.nodes("n3").qemu(vmid).status.stop.post())["exitstatus"] == "OK"
    # offline: the volume travels back, the config follows
    status = done(px, "n3", px.nodes("n3").qemu(vmid).migrate.post(target="n2"))
    assert status["exitstatus"] == "OK"
    assert os.path.exists(on["n2"]) and not os.path.exists(on["n3"])
    assert px.nodes("n2").qemu(vmid).config.get()["virtio0"].startswith(f"local:{vmid}/{volume}")
    assert done(px, "n2", px.nodes("n2").qemu(vmid).status.start.post())["exitstatus"] == "OK"
    wait_serial(n2, vmid, r"GPVE-TICK \d+ disk=AAAAAAAAAAAAAAAA")
    assert done(px, "n2", px.nodes("n2").qemu(vmid).status.stop.post())["exitstatus"] == "OK"


def test_devices_hot_plugged_before_a_live_migration_travel_with_the_guest(three_nodes):
    """A NIC and a disk hot-plugged into a running guest sit at the PCI slots a cold start gives them, so the
    migration target, started from the config, lays its devices out as the source: the guest moves live."""
    guest_dir = build_guest()
    n1, n2, n3 = three_nodes.nodes
    px = n1.api()
    vmid = int(px.cluster.nextid.get())
    upid = px.nodes("n2").qemu.create(vmid=vmid, name="plugged", memory=256, kvm=0, serial0="socket",
                                      virtio0="local:1", net0="virtio", args=kernel_args(guest_dir))
    assert done(px, "n2", upid)["exitstatus"] == "OK"
    guest = px.nodes("n2").qemu(vmid)
    assert done(px, "n2", guest.status.start.post())["exitstatus"] == "OK"
    wait_serial(n2, vmid, r"GPVE-TICK 2 ")
    guest.config.put(virtio1="local:1", net1="e1000")
    assert {r["key"] for r in guest.pending.get() if "pending" in r or "delete" in r} == set()
    status = done(px, "n2", guest.migrate.post(target="n3", online=1, **{"with-local-disks": 1}))
    assert status["exitstatus"] == "OK", [line["t"] for line in px.nodes("n2").tasks(status["upid"]).log.get()]
    moved = px.nodes("n3").qemu(vmid)
    pci = moved.monitor.post(command="info pci")
    assert 'id "virtio1"' in pci and 'id "net1"' in pci
    assert moved.status.current.get()["status"] == "running"
    wait_for(lambda: len(ticks(n3, vmid)) >= 2, timeout=60)
    assert "GPVE-GUEST-READY" not in serial_text(n3, vmid)  # it moved, it did not boot again
    assert done(px, "n3", moved.status.stop.post())["exitstatus"] == "OK"
