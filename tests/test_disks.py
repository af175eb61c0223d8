"""Disks on a real node, as Proxmox handles them: detach, unlink, purge, EFI disks and `import-from`.

The storage directory is listed after each step (what a user finds with `ls /var/lib/vz/images`), images are
made and read with the real `qemu-img`, and guests boot under QEMU (software emulation). Expected answers follow
qemu-server's `PVE/API2/Qemu.pm` (`update_vm_api`, `unlink`, `destroy_vm`, `create_disks`), `PVE/QemuServer.pm`
(`try_deallocate_drive`, `destroy_vm`) and `PVE/QemuServer/OVMF.pm`.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile

import pytest
from proxmoxer import ProxmoxAPI, ResourceException

from tests.guest import build_guest, kernel_args, qemu_missing, serial_text, ticks, wait_serial
from tests.harness import Cluster, done, ok

pytestmark = [pytest.mark.skipif(qemu_missing() is not None, reason=qemu_missing() or ""),
              pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")]
OVMF = "/usr/share/OVMF"
MARKER = b"GPVEIMPORTMARKER"


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    cluster = Cluster(str(tmp_path_factory.mktemp("disks")), 1).start()
    # `local` holds no `import` content unless told to (as pve-storage's default `local`)
    cluster.nodes[0].api().storage("local").put(content="backup,images,import,iso,snippets,vztmpl")
    yield cluster.nodes[0]
    px = cluster.nodes[0].api()
    for guest in px.nodes("n1").qemu.get():
        if guest["status"] == "running":
            px.nodes("n1").qemu(guest["vmid"]).status.stop.post()
    cluster.stop()


def storage(node, *parts: str) -> str:
    return os.path.join(node.data_dir, "storage", "local", *parts)


def files_of(node, vmid: int) -> list[str]:
    """The guest's files on the storage, as `ls images/VMID` shows them."""
    directory = storage(node, "images", str(vmid))
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def refused(call, *args, **kwargs) -> ResourceException:
    with pytest.raises(ResourceException) as exc:
        call(*args, **kwargs)
    return exc.value


def create(px, **config) -> int:
    vmid = int(px.cluster.nextid.get())
    ok(px, px.nodes("n1").qemu.create(vmid=vmid, **config))
    return vmid


def image_bytes(path: str, fmt: str, length: int) -> bytes:
    """The first `length` bytes a guest sees of an image (read through qemu-img, whatever its format)."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["qemu-img", "convert", "-f", fmt, "-O", "raw", path, f"{tmp}/raw"], check=True)
        with open(f"{tmp}/raw", "rb") as f:
            return f.read(length)


def virtual_size(path: str) -> int:
    return json.loads(subprocess.run(["qemu-img", "info", "--output=json", path], check=True,
                                     capture_output=True, text=True).stdout)["virtual-size"]


def test_detach_unlink_and_purge_leave_no_file_of_the_guest(node):
    px = node.api()
    vmid = create(px, scsi0="local:1", scsi1="local:1", virtio0="local:1", sata0="local:1")
    vm = px.nodes("n1").qemu(vmid)
    disk = {k: vm.config.get()[k].split(",")[0].split("/")[1] for k in ("scsi0", "scsi1", "virtio0", "sata0")}
    assert files_of(node, vmid) == sorted(disk.values())
    # detaching keeps the volume as unused0; deleting unused0 destroys it
    vm.config.put(delete="scsi1")
    conf = vm.config.get()
    assert "scsi1" not in conf and conf["unused0"] == f"local:{vmid}/{disk['scsi1']}"
    assert disk["scsi1"] in files_of(node, vmid)
    vm.config.put(delete="unused0")
    assert "unused0" not in vm.config.get() and disk["scsi1"] not in files_of(node, vmid)
    # unlink (Ansible's proxmox_disk): without force the disk becomes unused, with force its volume goes
    vm.unlink.put(idlist="scsi0")
    assert vm.config.get()["unused0"] == f"local:{vmid}/{disk['scsi0']}" and disk["scsi0"] in files_of(node, vmid)
    vm.unlink.put(idlist="virtio0", force=1)
    conf = vm.config.get()
    assert "virtio0" not in conf and not any(v.endswith(disk["virtio0"]) for v in map(str, conf.values()))
    assert disk["virtio0"] not in files_of(node, vmid)
    # a volume of the guest that no config names (left by a crash, copied in by hand)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", storage(node, "images", str(vmid),
                                                                         f"vm-{vmid}-disk-7.qcow2"), "1M"], check=True)
    assert files_of(node, vmid) == sorted([disk["scsi0"], disk["sata0"], f"vm-{vmid}-disk-7.qcow2"])
    ok(px, vm.delete(purge=1, **{"destroy-unreferenced-disks": 1}))
    assert files_of(node, vmid) == []
    assert vmid not in {g["vmid"] for g in px.nodes("n1").qemu.get()}


def test_destroy_keeps_unreferenced_volumes_unless_asked(node):
    px = node.api()
    vmid = create(px, scsi0="local:1")
    stray = storage(node, "images", str(vmid), f"vm-{vmid}-disk-5.raw")
    with open(stray, "wb") as f:
        f.truncate(1 << 20)
    ok(px, px.nodes("n1").qemu(vmid).delete())
    assert files_of(node, vmid) == [f"vm-{vmid}-disk-5.raw"]  # as Proxmox: only what the config named
    os.unlink(stray)


def test_a_volume_still_in_a_snapshot_or_a_protected_guests_disk_is_not_destroyed(node):
    px = node.api()
    vmid = create(px, scsi0="local:1", scsi1="local:1")
    vm = px.nodes("n1").qemu(vmid)
    scsi1 = vm.config.get()["scsi1"].split(",")[0]
    ok(px, vm.snapshot.post(snapname="before"))
    vm.config.put(delete="scsi1")  # detaching is fine: the snapshot still has it
    before = vm.config.get()
    assert before["unused0"] == scsi1
    exc = refused(vm.config.put, delete="unused0")
    assert exc.status_code == 400 and exc.content == f"unable to delete '{scsi1}' - volume is still in use (snapshot?)"
    exc = refused(vm.unlink.put, idlist="scsi0", force=1)
    assert exc.status_code == 400 and "volume is still in use (snapshot?)" in exc.content
    assert vm.config.get() == before and len(files_of(node, vmid)) == 2  # nothing changed
    ok(px, vm.snapshot("before").delete())
    vm.config.put(delete="unused0")
    assert len(files_of(node, vmid)) == 1 and scsi1.split("/")[1] not in files_of(node, vmid)
    # protection: no disk leaves the config, the guest is not destroyed
    vm.config.put(protection=1)
    exc = refused(vm.unlink.put, idlist="scsi0")
    assert exc.status_code == 400 and exc.content == "can't remove drive 'scsi0' - protection mode enabled"
    exc = refused(vm.delete)
    assert exc.status_code == 400 and exc.content == f"can't remove VM {vmid} - protection mode enabled"
    vm.config.put(delete="protection")
    ok(px, vm.delete(purge=1))
    assert files_of(node, vmid) == []


def test_destroying_volumes_needs_allocate_space_on_their_storage(node):
    root = node.api()
    vmid = create(root, scsi0="local:1", scsi1="local:1")
    root.access.users.post(userid="diskop@pve", password="diskop-secret")
    root.access.roles.post(roleid="DiskOnly", privs="VM.Config.Disk,VM.Audit")
    root.access.acl.put(path=f"/vms/{vmid}", roles="DiskOnly", users="diskop@pve")
    user = ProxmoxAPI("127.0.0.1", port=node.api_port, user="diskop@pve", password="diskop-secret",
                      verify_ssl=False)
    vm = user.nodes("n1").qemu(vmid)
    vm.unlink.put(idlist="scsi1")  # detaching changes the config only
    exc = refused(vm.unlink.put, idlist="unused0")
    assert exc.status_code == 403
    assert exc.content == "Permission denied - missing 'Datastore.AllocateSpace' on '/storage/local'"
    exc = refused(vm.unlink.put, idlist="scsi0", force=1)
    assert exc.status_code == 403 and "Datastore.AllocateSpace" in exc.content
    assert len(files_of(node, vmid)) == 2 and "scsi0" in vm.config.get()
    root.access.acl.put(path="/storage/local", roles="PVEDatastoreUser", users="diskop@pve")
    vm.unlink.put(idlist="unused0,scsi0", force=1)
    assert files_of(node, vmid) == []
    root.access.acl.put(path=f"/vms/{vmid}", roles="DiskOnly", users="diskop@pve", delete=1)
    root.access.acl.put(path=f"/vms/{vmid}", roles="PVEAuditor", users="diskop@pve")
    exc = refused(vm.unlink.put, idlist="unused0")
    assert exc.status_code == 403 and exc.content == f"Permission denied - missing 'VM.Config.Disk' on '/vms/{vmid}'"
    ok(root, root.nodes("n1").qemu(vmid).delete())


@pytest.mark.parametrize("options,template,size", [
    ("efitype=4m", "OVMF_VARS_4M.fd", "528K"),
    ("efitype=4m,pre-enrolled-keys=1,format=raw", "OVMF_VARS_4M.ms.fd", "528K"),
    ("", "OVMF_VARS.fd", "128K"),
])
def test_an_efidisk_is_a_copy_of_the_ovmf_vars_template(node, options, template, size):
    px = node.api()
    vmid = create(px, efidisk0="local:1" + (f",{options}" if options else ""))  # the size given is ignored
    value = px.nodes("n1").qemu(vmid).config.get()["efidisk0"]
    volid = value.split(",")[0]
    assert value.endswith(f"size={size}") and ("efitype=4m" in value) == ("4m" in options)
    fmt = "raw" if "format=raw" in options else "qcow2"
    assert volid == f"local:{vmid}/vm-{vmid}-disk-0.{fmt}" and "format=" not in value
    path = storage(node, "images", str(vmid), f"vm-{vmid}-disk-0.{fmt}")
    with open(os.path.join(OVMF, template), "rb") as f:
        vars_template = f.read()
    assert virtual_size(path) == len(vars_template)
    assert image_bytes(path, fmt, len(vars_template)) == vars_template
    ok(px, px.nodes("n1").qemu(vmid).delete())
    assert files_of(node, vmid) == []


def test_clones_and_snapshots_cover_the_efidisk(node):
    px = node.api()
    vmid = create(px, efidisk0="local:1,efitype=4m", scsi0="local:1")
    vm = px.nodes("n1").qemu(vmid)
    ok(px, vm.snapshot.post(snapname="s1"))  # the efidisk (qcow2) holds the snapshot too
    efidisk = storage(node, "images", str(vmid), f"vm-{vmid}-disk-0.qcow2")
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", efidisk], check=True,
                                     capture_output=True, text=True).stdout)
    assert [s["name"] for s in info.get("snapshots", [])] == ["s1"]
    clone = int(px.cluster.nextid.get())
    ok(px, vm.clone.post(newid=clone, full=1))
    value = px.nodes("n1").qemu(clone).config.get()["efidisk0"]
    assert value.startswith(f"local:{clone}/vm-{clone}-disk-") and "efitype=4m" in value
    ok(px, vm.delete(purge=1))
    assert files_of(node, vmid) == [] and len(files_of(node, clone)) == 2  # the clone's own copies
    with open(os.path.join(OVMF, "OVMF_VARS_4M.fd"), "rb") as f:
        template = f.read()
    name = value.split(",")[0].split("/")[1]
    assert image_bytes(storage(node, "images", str(clone), name), "qcow2", len(template)) == template
    ok(px, px.nodes("n1").qemu(clone).delete(purge=1))


def write_marked_image(path: str, fmt: str = "raw", size: int = 64 << 20) -> None:
    """An image whose first bytes are the marker, the rest zeros (qcow2 through qemu-img)."""
    raw = path if fmt == "raw" else path + ".tmp"
    with open(raw, "wb") as f:
        f.write(MARKER)
        f.truncate(size)
    if fmt != "raw":
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", fmt, raw, path], check=True)
        os.unlink(raw)


def test_import_from_copies_volumes_and_paths_and_refuses_bad_sources(node, tmp_path):
    px = node.api()
    write_marked_image(storage(node, "import", "seed.qcow2"), "qcow2", 40 << 20)
    vmid = create(px, virtio0="local:0,import-from=local:import/seed.qcow2", scsi0="local:0,format=raw,"
                  "import-from=local:import/seed.qcow2,cache=writeback")
    vm = px.nodes("n1").qemu(vmid)
    conf = vm.config.get()
    assert conf["scsi0"] == f"local:{vmid}/vm-{vmid}-disk-0.raw,cache=writeback,size=40M"
    assert conf["virtio0"] == f"local:{vmid}/vm-{vmid}-disk-1.qcow2,size=40M"
    for name, fmt in ((f"vm-{vmid}-disk-0.raw", "raw"), (f"vm-{vmid}-disk-1.qcow2", "qcow2")):
        path = storage(node, "images", str(vmid), name)
        assert virtual_size(path) == 40 << 20 and image_bytes(path, fmt, len(MARKER)) == MARKER
    assert os.path.exists(storage(node, "import", "seed.qcow2"))  # the source stays
    # another guest's disk, through PUT config of a stopped guest; and a host path, root@pam's only
    other = create(px, name="importer")
    px.nodes("n1").qemu(other).config.put(sata0=f"local:0,import-from=local:{vmid}/vm-{vmid}-disk-0.raw")
    host = tmp_path / "host.img"
    write_marked_image(str(host), "qcow2", 8 << 20)
    px.nodes("n1").qemu(other).config.put(sata1=f"local:0,import-from={host}")
    conf = px.nodes("n1").qemu(other).config.get()
    assert conf["sata0"] == f"local:{other}/vm-{other}-disk-0.qcow2,size=40M"
    assert conf["sata1"] == f"local:{other}/vm-{other}-disk-1.qcow2,size=8M"
    assert image_bytes(storage(node, "images", str(other), f"vm-{other}-disk-1.qcow2"), "qcow2", 16) == MARKER
    # what Proxmox refuses, with its words; nothing is written
    before = px.nodes("n1").qemu(other).config.get()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(host),
                    storage(node, "import", "overlay.qcow2")], check=True)
    for value, message in (
            ("local:0,import-from=/nonexistent.qcow2", "can't find file '/nonexistent.qcow2'"),
            ("local:0,import-from=local:import/nope.raw",
             "cannot import from 'local:import/nope.raw' - could not get size of local:import/nope.raw"),
            ("local:0,import-from=local:iso/x.iso", "local:iso/x.iso has wrong type 'iso' - needs to be 'images' or "
                                                   "'import'"),
            ("local:4,import-from=local:import/seed.qcow2",
             "'import-from' requires special syntax - use <storage ID>:0,import-from=<source>"),
            ("local:0,import-from=local:import/overlay.qcow2",
             f"backing file not allowed for untrusted image '{storage(node, 'import', 'overlay.qcow2')}'!")):
        exc = refused(px.nodes("n1").qemu(other).config.put, sata2=value)
        assert exc.status_code == 400 and exc.errors == {"sata2": message}, (value, exc.errors)
    assert px.nodes("n1").qemu(other).config.get() == before
    assert files_of(node, other) == [f"vm-{other}-disk-0.qcow2", f"vm-{other}-disk-1.qcow2"]
    # who may import what: VM.Clone on the source's guest; host paths are root@pam's
    px.access.users.post(userid="importer@pve", password="importer-secret")
    px.access.acl.put(path=f"/vms/{other}", roles="PVEVMAdmin", users="importer@pve")
    px.access.acl.put(path="/storage/local", roles="PVEDatastoreUser", users="importer@pve")
    user = ProxmoxAPI("127.0.0.1", port=node.api_port, user="importer@pve", password="importer-secret",
                      verify_ssl=False).nodes("n1").qemu(other)
    exc = refused(user.config.put, sata2=f"local:0,import-from={host}")
    assert exc.status_code == 403 and exc.content == "Only root can pass arbitrary filesystem paths."
    exc = refused(user.config.put, sata2=f"local:0,import-from=local:{vmid}/vm-{vmid}-disk-1.qcow2")
    assert exc.status_code == 403 and exc.content == f"Permission denied - missing 'VM.Clone' on '/vms/{vmid}'"
    user.config.put(sata2="local:0,import-from=local:import/seed.qcow2")  # an image to import: storage access
    assert px.nodes("n1").qemu(other).config.get()["sata2"].endswith(",size=40M")
    for guest in (vmid, other):
        ok(px, px.nodes("n1").qemu(guest).delete(purge=1))


@pytest.fixture(scope="module")
def guest_dir():
    return build_guest()


@pytest.mark.slow
def test_an_imported_image_boots_as_the_guests_disk(node, guest_dir):
    px = node.api()
    write_marked_image(storage(node, "import", "cloud.raw"))
    vmid = create(px, name="imported", memory=256, kvm=0, serial0="socket", args=kernel_args(guest_dir),
                  virtio0="local:0,import-from=local:import/cloud.raw")
    assert px.nodes("n1").qemu(vmid).config.get()["virtio0"] == f"local:{vmid}/vm-{vmid}-disk-0.qcow2,size=64M"
    ok(px, px.nodes("n1").qemu(vmid).status.start.post())
    wait_serial(node, vmid, r"GPVE-TICK \d+ disk=")
    assert ticks(node, vmid)[0][1] == MARKER.decode()
    ok(px, px.nodes("n1").qemu(vmid).status.stop.post())
    ok(px, px.nodes("n1").qemu(vmid).delete(purge=1))


def _cmdline(node, vmid: int) -> list[str]:
    pid = node.api().nodes("n1").qemu(vmid).status.current.get()["pid"]
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [a.decode() for a in f.read().split(b"\0")]


@pytest.mark.slow
def test_an_ovmf_guest_boots_with_its_efidisk_or_a_temporary_copy(node, guest_dir):
    px = node.api()
    vmid = create(px, name="uefi", memory=256, kvm=0, serial0="socket", args=kernel_args(guest_dir), bios="ovmf",
                  efidisk0="local:1,efitype=4m", virtio0="local:1")
    vm = px.nodes("n1").qemu(vmid)
    efidisk = storage(node, "images", str(vmid), f"vm-{vmid}-disk-0.qcow2")
    ok(px, vm.status.start.post())
    wait_serial(node, vmid, r"GPVE-GUEST-READY", timeout=180)  # OVMF under TCG, then the kernel's EFI stub
    assert "EFI stub" in serial_text(node, vmid)
    assert vm.status.current.get()["qmpstatus"] == "running"
    argv = _cmdline(node, vmid)
    assert f"if=pflash,unit=0,format=raw,readonly=on,file={OVMF}/OVMF_CODE_4M.fd" in argv
    assert f"if=pflash,unit=1,id=drive-efidisk0,format=qcow2,file={efidisk}" in argv
    ok(px, vm.status.stop.post())
    # without efidisk0: a warning in the task log, a fresh copy of the 2 MiB template for this run
    vm.config.put(delete="efidisk0")
    status = done(px, vm.status.start.post())
    assert status["exitstatus"] == "WARNINGS: 1"
    log = [line["t"] for line in px.nodes("n1").tasks(status["upid"]).log.get()]
    assert "WARN: no efidisk configured! Using temporary efivars disk." in log
    temporary = os.path.join(node.data_dir, "run", "qemu", f"{vmid}-ovmf.fd")
    assert f"if=pflash,unit=1,id=drive-efidisk0,format=raw,file={temporary}" in _cmdline(node, vmid)
    assert f"if=pflash,unit=0,format=raw,readonly=on,file={OVMF}/OVMF_CODE.fd" in _cmdline(node, vmid)
    wait_serial(node, vmid, r"GPVE-GUEST-READY", timeout=180)  # (the serial log starts anew with each run)
    ok(px, vm.status.stop.post())
    ok(px, vm.delete(purge=1))
    assert files_of(node, vmid) == []


@pytest.mark.slow
def test_on_a_running_guest_unused_volumes_go_at_once_and_forced_deletes_follow_pending(node, guest_dir):
    """qemu-server's update_vm_api on a running guest: deleting `unusedN` destroys the volume at once; a forced delete
    of a disk that cannot be unplugged (SATA) waits in `/pending` as `delete: 2` and destroys the volume when it
    applies (the next stop); one that can (SCSI, default hotplug) is unplugged and destroyed at once."""
    px = node.api()
    vmid = create(px, name="running-unlink", memory=256, kvm=0, serial0="socket", args=kernel_args(guest_dir),
                  virtio0="local:1", sata0="local:1", scsi1="local:1", scsi2="local:1")
    vm = px.nodes("n1").qemu(vmid)
    name = {k: vm.config.get()[k].split(",")[0].split("/")[1] for k in ("sata0", "scsi1", "scsi2")}
    vm.config.put(delete="scsi2")  # stopped: detached at once, kept as unused0
    assert vm.config.get()["unused0"].endswith(name["scsi2"])
    ok(px, vm.status.start.post())
    wait_serial(node, vmid, r"GPVE-GUEST-READY")
    vm.config.put(delete="unused0")
    assert "unused0" not in vm.config.get() and name["scsi2"] not in files_of(node, vmid)
    vm.unlink.put(idlist="sata0", force=1)
    pending = {row["key"]: row for row in vm.pending.get()}
    assert pending["sata0"]["delete"] == 2 and "sata0" in vm.config.get(current=1) and "sata0" not in vm.config.get()
    assert name["sata0"] in files_of(node, vmid)  # QEMU still has it open
    vm.unlink.put(idlist="scsi1", force=1)
    assert "scsi1" not in vm.config.get(current=1) and name["scsi1"] not in files_of(node, vmid)
    assert not any(v.endswith(name["scsi1"]) for v in map(str, vm.config.get().values()))
    ok(px, vm.status.stop.post())  # the pending forced delete applies: the volume goes, not to unusedN
    conf = vm.config.get()
    assert "sata0" not in conf and not any(k.startswith("unused") for k in conf)
    assert name["sata0"] not in files_of(node, vmid) and not any("delete" in r for r in vm.pending.get())
    ok(px, vm.delete(purge=1))
    assert files_of(node, vmid) == []
