"""Real QEMU guests (software emulation) driven through the API of a real node."""

from __future__ import annotations

import os
import signal
import time

import pytest
from proxmoxer import ResourceException

from tests.guest import build_guest, kernel_args, qemu_missing, serial_text, ticks, wait_serial
from tests.harness import Cluster, done, ok, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.skipif(qemu_missing() is not None, reason=qemu_missing() or "")]


@pytest.fixture(scope="module")
def guest_dir():
    return build_guest()


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    cluster = Cluster(str(tmp_path_factory.mktemp("guests")), 1).start()
    yield cluster.nodes[0]
    for vmid in _running(cluster.nodes[0]):
        try:
            cluster.nodes[0].api().nodes("n1").qemu(vmid).status.stop.post()
        except Exception:
            pass
    time.sleep(1)
    cluster.stop()


def _running(node) -> list[int]:
    try:
        return [g["vmid"] for g in node.api().nodes("n1").qemu.get() if g["status"] == "running"]
    except Exception:
        return []


def make_guest(px, guest_dir: str, cmdline: str = "", **extra) -> int:
    vmid = int(px.cluster.nextid.get())
    config = dict(name=f"g{vmid}", memory=256, kvm=0, serial0="socket", virtio0="local:1",
                  args=kernel_args(guest_dir, cmdline))
    config.update(extra)
    ok(px, px.nodes("n1").qemu.create(vmid=vmid, **config))
    return vmid


def start(px, node, vmid: int) -> None:
    ok(px, px.nodes("n1").qemu(vmid).status.start.post())
    wait_serial(node, vmid, r"GPVE-GUEST-READY")


def test_create_start_and_acpi_shutdown_with_proxmoxer(node, guest_dir):
    px = node.api()
    vmid = make_guest(px, guest_dir)
    conf = px.nodes("n1").qemu(vmid).config.get()
    assert conf["virtio0"] == f"local:{vmid}/vm-{vmid}-disk-0.qcow2,size=1G"
    content = px.nodes("n1").storage("local").content.get(vmid=vmid)
    assert [(c["volid"], c["size"]) for c in content] == [(f"local:{vmid}/vm-{vmid}-disk-0.qcow2", 1 << 30)]
    start(px, node, vmid)
    current = px.nodes("n1").qemu(vmid).status.current.get()
    assert current["status"] == "running" and current["qmpstatus"] == "running"
    assert current["pid"] > 0 and current["maxmem"] == 256 << 20 and current["running-qemu"]
    assert wait_serial(node, vmid, r"GPVE-GUEST-READY disk=/dev/vda")
    ok(px, px.nodes("n1").qemu(vmid).status.reset.post())
    wait_serial(node, vmid, r"(?s)GPVE-GUEST-READY.*GPVE-GUEST-READY")  # booted a second time
    pid = px.nodes("n1").qemu(vmid).status.current.get()["pid"]
    upid = px.nodes("n1").qemu(vmid).status.reboot.post(timeout=60)
    ok(px, upid)
    assert f"VM {vmid} shut down; starting again" in [x["t"] for x in px.nodes("n1").tasks(upid).log.get()]
    current = px.nodes("n1").qemu(vmid).status.current.get()
    assert current["status"] == "running" and current["pid"] != pid
    wait_serial(node, vmid, r"GPVE-GUEST-READY")
    ok(px, px.nodes("n1").qemu(vmid).status.shutdown.post(timeout=60))
    assert "GPVE-GUEST-POWEROFF" in serial_text(node, vmid)  # the guest itself powered off (ACPI)
    assert px.nodes("n1").qemu(vmid).status.current.get()["status"] == "stopped"
    tasks = px.nodes("n1").tasks.get(vmid=vmid, typefilter="qmstart")
    assert len(tasks) == 1 and tasks[0]["status"] == "OK"
    log = [line["t"] for line in px.nodes("n1").tasks(tasks[0]["upid"]).log.get()]
    assert log[0] == f"starting VM {vmid}" and log[-1] == "TASK OK"


def test_shutdown_of_a_guest_ignoring_acpi_with_force_stop(node, guest_dir):
    px = node.api()
    vmid = make_guest(px, guest_dir, cmdline="gpve.noacpi")
    start(px, node, vmid)
    started = time.monotonic()
    status = done(px, px.nodes("n1").qemu(vmid).status.shutdown.post(timeout=3, forceStop=1))
    assert time.monotonic() - started >= 3
    assert status["exitstatus"] == "WARNINGS: 1"
    assert "GPVE-GUEST-POWEROFF" not in serial_text(node, vmid)
    assert px.nodes("n1").qemu(vmid).status.current.get()["status"] == "stopped"
    # without forceStop the task fails after its timeout and the guest keeps running
    start(px, node, vmid)
    status = done(px, px.nodes("n1").qemu(vmid).status.shutdown.post(timeout=2))
    assert status["exitstatus"] == "VM quit/powerdown failed - got timeout"
    assert px.nodes("n1").qemu(vmid).status.current.get()["status"] == "running"
    # a paused guest never sees the power button: refused at once, or stopped with forceStop (qemu-server)
    guest = px.nodes("n1").qemu(vmid).status
    ok(px, guest.suspend.post())
    assert guest.current.get()["qmpstatus"] == "paused"
    started = time.monotonic()
    for action in (guest.shutdown, guest.reboot):
        assert done(px, action.post(timeout=30))["exitstatus"] == "VM is paused - cannot shutdown"
    assert time.monotonic() - started < 20
    upid = guest.shutdown.post(timeout=30, forceStop=1)
    assert done(px, upid)["exitstatus"] == "WARNINGS: 1"
    assert "WARN: VM is paused - stop instead of shutdown" in [x["t"] for x in px.nodes("n1").tasks(upid).log.get()]
    assert guest.current.get()["status"] == "stopped"


def test_vmstate_snapshot_rollback_restores_ram_and_disk(node, guest_dir):
    px = node.api()
    vmid = make_guest(px, guest_dir)
    vm = px.nodes("n1").qemu(vmid)
    start(px, node, vmid)
    vm.monitor.post(command="qemu-io drive-virtio0 \"write -P 0x41 0 512\"")
    wait_serial(node, vmid, r"disk=AAAAAAAAAAAAAAAA")
    ok(px, vm.snapshot.post(snapname="before", vmstate=1, description="disk A"))
    at_snapshot = max(n for n, _ in ticks(node, vmid))
    vm.monitor.post(command="qemu-io drive-virtio0 \"write -P 0x42 0 512\"")
    wait_serial(node, vmid, r"disk=BBBBBBBBBBBBBBBB")
    wait_serial(node, vmid, rf"GPVE-TICK {at_snapshot + 3} ")  # time moves on past the snapshot
    before_rollback = max(n for n, _ in ticks(node, vmid))
    snaps = {s["name"]: s for s in vm.snapshot.get()}
    assert snaps["before"]["vmstate"] == 1 and snaps["current"]["parent"] == "before"
    assert vm.snapshot("before").config.get()["description"] == "disk A"
    ok(px, vm.snapshot("before").rollback.post())
    assert vm.status.current.get()["status"] == "running"
    after = wait_for(lambda: (lambda t: t if len(t) >= 2 else None)(ticks(node, vmid)), timeout=60)
    assert after[0][0] <= at_snapshot + 2 < before_rollback + 1  # RAM: the counter went back in time
    assert all(disk == "A" * 16 for _, disk in after)  # disk: the snapshot's content
    ok(px, vm.status.stop.post())
    ok(px, vm.snapshot("before").delete())
    assert [s["name"] for s in vm.snapshot.get()] == ["current"]


def test_linked_clone_of_template_boots_and_purge_removes_volumes(node, guest_dir):
    px = node.api()
    base = make_guest(px, guest_dir)
    ok(px, px.nodes("n1").qemu(base).template.post())
    conf = px.nodes("n1").qemu(base).config.get()
    assert conf["template"] == 1 and conf["virtio0"].startswith(f"local:{base}/base-{base}-disk-0.qcow2")
    with pytest.raises(ResourceException) as exc:
        px.nodes("n1").qemu(base).status.start.post()
    assert exc.value.status_code == 400
    status = done(px, px.nodes("n1").qemu(base).snapshot.post(snapname="s1"))  # qemu-server's snapshot_prepare
    assert status["exitstatus"] == "you can't take a snapshot if it's a template"
    assert [s["name"] for s in px.nodes("n1").qemu(base).snapshot.get()] == ["current"]
    assert "lock" not in px.nodes("n1").qemu(base).config.get()
    clone = int(px.cluster.nextid.get())
    ok(px, px.nodes("n1").qemu(base).clone.post(newid=clone, name="linked", full=0))
    clone_conf = px.nodes("n1").qemu(clone).config.get()
    assert clone_conf["name"] == "linked"
    assert clone_conf["virtio0"].startswith(f"local:{base}/base-{base}-disk-0.qcow2/{clone}/vm-{clone}-disk-0.qcow2")
    start(px, node, clone)
    ok(px, px.nodes("n1").qemu(clone).status.stop.post())
    path = os.path.join(node.data_dir, "storage", "local", "images", str(clone), f"vm-{clone}-disk-0.qcow2")
    assert os.path.exists(path)
    ok(px, px.nodes("n1").qemu(clone).delete(purge=1))
    assert not os.path.exists(path)
    assert clone not in {g["vmid"] for g in px.nodes("n1").qemu.get()}
    full = int(px.cluster.nextid.get())
    ok(px, px.nodes("n1").qemu(base).clone.post(newid=full, name="full", full=1))
    assert px.nodes("n1").qemu(full).config.get()["virtio0"].startswith(f"local:{full}/vm-{full}-disk-0.qcow2")


def test_locks_missing_bridge_resize_config_and_task_abort(node, guest_dir):
    px = node.api()
    vmid = make_guest(px, guest_dir, cmdline="gpve.noacpi")
    vm = px.nodes("n1").qemu(vmid)
    vm.config.put(lock="backup")
    with pytest.raises(ResourceException) as exc:
        vm.status.start.post()
    assert exc.value.status_code == 423 and f"VM {vmid} is locked (backup)" in exc.value.content
    with pytest.raises(ResourceException) as exc:
        vm.snapshot.post(snapname="during-backup")
    assert exc.value.status_code == 423 and f"VM {vmid} is locked (backup)" in exc.value.content
    assert [s["name"] for s in vm.snapshot.get()] == ["current"]  # nothing changed
    vm.config.put(delete="lock", skiplock=1)
    # growing a disk, and a new disk added through the config
    ok(px, vm.resize.put(disk="virtio0", size="+1G"))
    assert vm.config.get()["virtio0"].endswith("size=2G")
    vm.config.put(virtio1="local:1")
    assert vm.config.get()["virtio1"] == f"local:{vmid}/vm-{vmid}-disk-1.qcow2,size=1G"
    with pytest.raises(ResourceException) as exc:
        vm.config.put(memory=512, digest="0" * 40)
    assert exc.value.status_code == 400 and "file changed by other user" in exc.value.content
    # a bridge that does not exist is a clear start error
    vm.config.put(net0="virtio,bridge=vmbr97")
    status = done(px, vm.status.start.post())
    assert status["exitstatus"] == "bridge 'vmbr97' does not exist"
    vm.config.put(delete="net0")
    # a running task can be stopped
    start(px, node, vmid)
    pid = vm.status.current.get()["pid"]
    status = done(px, vm.status.start.post())  # starting it again: the task fails, the guest is untouched
    assert status["exitstatus"] == f"VM {vmid} already running"
    assert vm.status.current.get()["pid"] == pid
    with pytest.raises(ResourceException) as exc:  # deleting it while it runs
        vm.delete()
    assert exc.value.status_code == 409 and f"VM {vmid} is running - destroy failed" in exc.value.content
    assert vm.config.get()["name"] == f"g{vmid}" and vm.status.current.get()["pid"] == pid
    upid = vm.status.shutdown.post(timeout=120)
    time.sleep(1)
    px.nodes("n1").tasks(upid).delete()
    status = done(px, upid, timeout=20)
    assert status["exitstatus"] == "received interrupt"
    assert vm.status.current.get()["status"] == "running"
    ok(px, vm.status.suspend.post())
    assert vm.status.current.get()["qmpstatus"] == "paused"
    ok(px, vm.status.resume.post())
    assert vm.status.current.get()["qmpstatus"] == "running"
    ok(px, vm.status.stop.post())


def test_guests_outlive_the_daemon_and_a_killed_qemu_is_noticed(node, guest_dir):
    px = node.api()
    first, second = make_guest(px, guest_dir), make_guest(px, guest_dir)
    start(px, node, first)
    start(px, node, second)
    pids = {v: px.nodes("n1").qemu(v).status.current.get()["pid"] for v in (first, second)}
    node.kill()
    node.start()
    node.wait_ready()
    px = node.api()
    for vmid in (first, second):
        current = px.nodes("n1").qemu(vmid).status.current.get()
        assert current["status"] == "running" and current["pid"] == pids[vmid]
    ok(px, px.nodes("n1").qemu(first).status.stop.post())
    assert px.nodes("n1").qemu(first).status.current.get()["status"] == "stopped"
    os.kill(pids[second], signal.SIGKILL)
    deadline = time.monotonic() + 15
    crashes: list = []
    while time.monotonic() < deadline and not crashes:
        crashes = [e for e in px.cluster.log.get() if f"VM {second} crashed" in e["msg"]]
        time.sleep(0.2)
    assert crashes and crashes[0]["severity"] == "err"
    assert px.nodes("n1").qemu(second).status.current.get()["status"] == "stopped"
    resources = {r["vmid"]: r["status"] for r in px.cluster.resources.get(type="vm")}
    assert resources[second] == "stopped" and resources[first] == "stopped"
