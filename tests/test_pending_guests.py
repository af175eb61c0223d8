"""Pending changes and hotplug on real QEMU guests, through a real node's API (proxmoxer): a change to a running
guest waits in `/pending` until its next start unless Proxmox would apply it at once or hot-plug it."""

from __future__ import annotations

import re
import time

import pytest
from proxmoxer import ResourceException

from tests.guest import build_guest, qemu_missing
from tests.harness import Cluster
from tests.test_guests import make_guest, ok, start

pytestmark = [pytest.mark.slow, pytest.mark.skipif(qemu_missing() is not None, reason=qemu_missing() or "")]
MAC = r"BC:24:11(:[0-9A-F]{2}){3}"


@pytest.fixture(scope="module")
def guest_dir():
    return build_guest()


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    cluster = Cluster(str(tmp_path_factory.mktemp("pending")), 1).start()
    yield cluster.nodes[0]
    px = cluster.nodes[0].api()
    for row in px.nodes("n1").qemu.get():
        if row["status"] == "running":
            try:
                px.nodes("n1").qemu(row["vmid"]).status.stop.post()
            except Exception:
                pass
    time.sleep(1)
    cluster.stop()


def monitor(px, vmid: int, command: str) -> str:
    return px.nodes("n1").qemu(vmid).monitor.post(command=command)


def pending_rows(px, vmid: int) -> dict:
    return {row["key"]: row for row in px.nodes("n1").qemu(vmid).pending.get()}


def waiting(px, vmid: int) -> dict:
    """Only the keys with a pending value or delete."""
    return {k: r for k, r in pending_rows(px, vmid).items() if "pending" in r or "delete" in r}


def stop_start(px, node, vmid: int) -> None:
    ok(px, px.nodes("n1").qemu(vmid).status.stop.post())
    start(px, node, vmid)


def test_cores_wait_for_the_next_start_and_revert_drops_a_pending_change(node, guest_dir):
    px = node.api()
    vmid = make_guest(px, guest_dir, cores=1)
    guest = px.nodes("n1").qemu(vmid)
    start(px, node, vmid)
    digest = guest.config.get()["digest"]
    guest.config.put(cores=2, name="renamed", description="fast plug", sockets=2)
    rows = pending_rows(px, vmid)
    assert rows["cores"] == {"key": "cores", "value": 1, "pending": 2}
    assert rows["sockets"] == {"key": "sockets", "pending": 2}
    assert rows["name"] == {"key": "name", "value": "renamed"}  # applied at once, nothing pending
    assert rows["description"] == {"key": "description", "value": "fast plug"}
    assert rows["digest"]["value"] == guest.config.get()["digest"] != digest  # the digest covers [PENDING]
    assert guest.config.get(current=1)["cores"] == 1 and guest.config.get()["cores"] == 2
    current = guest.status.current.get()
    assert current["cpus"] == 1 and current["name"] == "renamed"
    assert monitor(px, vmid, "info cpus").count("CPU #") == 1  # what QEMU really runs
    guest.config.put(revert="sockets")
    assert set(waiting(px, vmid)) == {"cores"} and "sockets" not in guest.config.get()
    with pytest.raises(ResourceException) as err:
        guest.config.put(revert="nosuchkey")
    assert err.value.status_code == 400 and "unknown option 'nosuchkey'" in str(err.value.errors)
    stop_start(px, node, vmid)
    assert waiting(px, vmid) == {}
    assert guest.config.get(current=1)["cores"] == 2 and guest.status.current.get()["cpus"] == 2
    assert monitor(px, vmid, "info cpus").count("CPU #") == 2
    guest.config.put(memory=320)  # a reboot restarts QEMU, and takes pending changes in on the way
    assert waiting(px, vmid)["memory"]["pending"] == 320 and guest.status.current.get()["maxmem"] == 256 << 20
    ok(px, guest.status.reboot.post(timeout=60))
    assert waiting(px, vmid) == {} and guest.status.current.get()["maxmem"] == 320 << 20
    ok(px, guest.status.stop.post())


def test_a_running_guest_gets_a_new_nic_by_hotplug_or_at_its_next_start(node, guest_dir):
    px = node.api()
    vmid = make_guest(px, guest_dir, net0="virtio")
    guest = px.nodes("n1").qemu(vmid)
    start(px, node, vmid)
    guest.config.put(net1="virtio")  # default hotplug: network,disk,usb
    mac = re.fullmatch(rf"virtio=({MAC}),?", guest.config.get(current=1)["net1"]).group(1)
    assert waiting(px, vmid) == {}
    assert re.search(r'id "net1"', monitor(px, vmid, "info pci"))
    assert f"macaddr={mac.lower()}" in monitor(px, vmid, "info network")
    guest.config.put(delete="net1")  # unplugged (the guest acknowledges through ACPI)
    assert "net1" not in guest.config.get(current=1) and waiting(px, vmid) == {}
    assert not re.search(r'id "net1"', monitor(px, vmid, "info pci"))
    guest.config.put(hotplug="0")  # applies at once (no CPU or memory hotplug involved)
    ok(px, guest.config.post(net2="e1000"))
    assert set(waiting(px, vmid)) == {"net2"} and "net2" not in guest.config.get(current=1)
    assert re.fullmatch(rf"e1000={MAC}", guest.config.get()["net2"])
    assert "net2" not in monitor(px, vmid, "info network")
    guest.config.put(delete="net0")  # hotplug off: the delete waits too
    assert waiting(px, vmid)["net0"]["delete"] == 1 and "net0" not in guest.config.get()
    assert "net0" in guest.config.get(current=1)
    stop_start(px, node, vmid)
    assert waiting(px, vmid) == {}
    network = monitor(px, vmid, "info network")
    assert "net2:" in network and "net0:" not in network
    ok(px, guest.status.stop.post())


def test_a_disk_added_to_a_running_guest_is_hot_plugged_and_detached_again(node, guest_dir):
    px = node.api()
    vmid = make_guest(px, guest_dir)
    guest = px.nodes("n1").qemu(vmid)
    start(px, node, vmid)
    guest.config.put(scsi1="local:1")
    volid = f"local:{vmid}/vm-{vmid}-disk-1.qcow2"
    assert guest.config.get(current=1)["scsi1"] == f"{volid},size=1G" and waiting(px, vmid) == {}
    assert "drive-scsi1" in monitor(px, vmid, "info block") and 'id "scsihw0"' in monitor(px, vmid, "info pci")
    guest.config.put(delete="scsi1")  # SCSI unplugs without the guest's help
    conf = guest.config.get(current=1)
    assert "scsi1" not in conf and conf["unused0"] == volid and waiting(px, vmid) == {}
    assert "drive-scsi1" not in monitor(px, vmid, "info block")
    assert 'id "scsihw0"' not in monitor(px, vmid, "info pci")  # its last disk gone, the controller goes too
    guest.config.put(ide1="local:1")  # IDE cannot be hot-plugged: allocated now, attached at the next start
    rows = waiting(px, vmid)
    assert rows["ide1"]["pending"] == f"local:{vmid}/vm-{vmid}-disk-2.qcow2,size=1G"
    assert "drive-ide1" not in monitor(px, vmid, "info block")
    ok(px, guest.status.stop.post())
    assert waiting(px, vmid) == {} and guest.config.get(current=1)["ide1"].startswith(f"local:{vmid}/vm-{vmid}-disk-2")


def test_every_path_that_adds_a_nic_gives_it_a_mac(node, guest_dir):
    px = node.api()
    vmid = make_guest(px, guest_dir)
    guest = px.nodes("n1").qemu(vmid)
    guest.config.put(net1="virtio,bridge=vmbr0")
    assert re.fullmatch(rf"virtio={MAC},bridge=vmbr0", guest.config.get()["net1"])
    ok(px, guest.config.post(net2="model=e1000,tag=5"))
    assert re.fullmatch(rf"e1000={MAC},tag=5", guest.config.get()["net2"])
    given = "virtio=02:00:00:00:00:07"
    guest.config.put(net3=given)
    assert guest.config.get()["net3"] == given
    with pytest.raises(ResourceException) as err:
        guest.config.put(hotplug="network,bogus")
    assert err.value.status_code == 400 and "invalid hotplug feature 'bogus'" in str(err.value.errors)
    guest.config.put(cipassword="s3cret")  # `/pending` never shows the password, as Proxmox's
    assert pending_rows(px, vmid)["cipassword"]["value"] == "**********"
    with pytest.raises(ResourceException) as err:
        guest.config.get(current=1, snapshot="s1")
    assert err.value.status_code == 400 and "cannot use 'snapshot' parameter with 'current'" in str(err.value.errors)
