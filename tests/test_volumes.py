"""The one volume-id parser (engine/volumes.py) and the dir storage that resolves volumes with it."""

from __future__ import annotations

import os

import pytest

from engine.volumes import (
    Drive,
    Volume,
    VolumeError,
    destroyed_volumes,
    drive_props,
    owned_volumes,
    parse_drive,
    parse_volume,
    volume_in_use,
    volume_of,
)
from hypervisor.qemu_argv import HostFacts, RunPaths, build_argv
from hypervisor.storage import DirStorage, StorageError

GOOD = {
    "local:100/vm-100-disk-0.qcow2": Volume("local", "images", "images/100", "vm-100-disk-0.qcow2", 100),
    "local:100/base-100-disk-1.raw": Volume("local", "images", "images/100", "base-100-disk-1.raw", 100),
    "local:100/base-100-disk-0.qcow2/101/vm-101-disk-0.qcow2":
        Volume("local", "images", "images/101", "vm-101-disk-0.qcow2", 101, "100/base-100-disk-0.qcow2"),
    "local:iso/debian-12.iso": Volume("local", "iso", "template/iso", "debian-12.iso"),
    "nfs.backup-1:iso/Win11.IMG": Volume("nfs.backup-1", "iso", "template/iso", "Win11.IMG"),
    "local:vztmpl/debian-12.tar.zst": Volume("local", "vztmpl", "template/cache", "debian-12.tar.zst"),
    "local:backup/vzdump-qemu-100-2024_01_01-00_00_00.vma.zst":
        Volume("local", "backup", "dump", "vzdump-qemu-100-2024_01_01-00_00_00.vma.zst", 100),
    "local:snippets/user-data.yaml": Volume("local", "snippets", "snippets", "user-data.yaml"),
    "local:import/noble-server-cloudimg-amd64.qcow2": Volume("local", "import", "import",
                                                             "noble-server-cloudimg-amd64.qcow2"),
    "local:import/x.ova": Volume("local", "import", "import", "x.ova"),
    "local:import/appliance.ova": Volume("local", "import", "import", "appliance.ova"),
}
BAD = {
    "/etc/shadow": "unable to parse volume ID '/etc/shadow'",
    "etc/shadow": "unable to parse volume ID 'etc/shadow'",
    "local:": "unable to parse volume ID 'local:'",
    "Local:iso/x.iso": "unable to parse volume ID 'Local:iso/x.iso'",
    "-x:iso/x.iso": "unable to parse volume ID '-x:iso/x.iso'",
    "local:iso//etc/shadow": "unable to parse directory volume name 'iso//etc/shadow'",
    "local:iso/": "unable to parse directory volume name 'iso/'",
    "local:/iso/x.iso": "unable to parse directory volume name '/iso/x.iso'",
    "local:iso/../x.iso": "unable to parse directory volume name 'iso/../x.iso'",
    "local:iso/./x.iso": "unable to parse directory volume name 'iso/./x.iso'",
    "local:iso/x.qcow2": "unable to parse directory volume name 'iso/x.qcow2'",
    "local:iso/sub/x.iso": "unable to parse directory volume name 'iso/sub/x.iso'",
    "local:iso/%2e%2e%2fx.iso": "unable to parse directory volume name 'iso/%2e%2e%2fx.iso'",
    "local:iso/a b.iso": "unable to parse directory volume name 'iso/a b.iso'",
    "local:iso/x\0.iso": "unable to parse directory volume name 'iso/x\0.iso'",
    "local:iso/x\n.iso": "unable to parse directory volume name 'iso/x\n.iso'",
    "local:snippets/..": "unable to parse directory volume name 'snippets/..'",
    "local:snippets/../../../x": "unable to parse directory volume name 'snippets/../../../x'",
    "local:vztmpl/x.tar.": "unable to parse directory volume name 'vztmpl/x.tar.'",
    "local:backup/x.zip": "unable to parse directory volume name 'backup/x.zip'",
    "local:images/100/vm-100-disk-0.qcow2": "unable to parse directory volume name 'images/100/vm-100-disk-0.qcow2'",
    "local:100/vm-101-disk-0.qcow2": "unable to parse directory volume name '100/vm-101-disk-0.qcow2'",
    "local:100/../101/vm-101-disk-0.qcow2": "unable to parse directory volume name '100/../101/vm-101-disk-0.qcow2'",
    "local:100/vm-100-disk-0.qcow2/../x": "unable to parse directory volume name '100/vm-100-disk-0.qcow2/../x'",
    "local:100/vm-100-disk-0.qcow2/101/vm-101-disk-0.qcow2":  # a linked clone's base must be a base image
        "unable to parse directory volume name '100/vm-100-disk-0.qcow2/101/vm-101-disk-0.qcow2'",
    "local:100/shadow": "unable to parse directory volume name '100/shadow'",
    "local:import/x.iso": "unable to parse directory volume name 'import/x.iso'",
    "local:import/x.ova/disk.qcow2": "unable to parse directory volume name 'import/x.ova/disk.qcow2'",
    "local:import/../100/vm-100-disk-0.qcow2": "unable to parse directory volume name "
                                               "'import/../100/vm-100-disk-0.qcow2'",
    "local:import/a b.qcow2": "unable to parse directory volume name 'import/a b.qcow2'",
    "local:1": "unable to parse directory volume name '1'",
}


@pytest.mark.parametrize("volid", sorted(GOOD))
def test_volume_ids_parse_into_one_file_of_one_content_type(volid):
    volume = parse_volume(volid)
    assert volume == GOOD[volid]
    assert ".." not in volume.relpath.split("/") and not volume.relpath.startswith("/")


@pytest.mark.parametrize("volid", sorted(BAD))
def test_anything_else_is_refused_with_proxmoxs_wording(volid):
    with pytest.raises(VolumeError) as exc:
        parse_volume(volid)
    assert str(exc.value) == BAD[volid]


def test_a_drive_names_its_file_once_and_every_reader_sees_the_same_one():
    assert drive_props("local:iso/x.iso,media=cdrom") == {"file": "local:iso/x.iso", "media": "cdrom"}
    assert drive_props("volume=local:100/vm-100-disk-0.qcow2,cache=none")["file"] == "local:100/vm-100-disk-0.qcow2"
    for twice in ("local:1,file=/etc/shadow", "file=a,volume=b", "local:1,media=disk,media=cdrom"):
        with pytest.raises(VolumeError, match="duplicate key"):
            drive_props(twice)
    # QEMU's command line uses the file the checks looked at, in every spelling
    value = "media=disk,file=local:100/vm-100-disk-0.qcow2"
    assert volume_of(value) == "local:100/vm-100-disk-0.qcow2"
    argv = build_argv(100, {"kvm": 0, "scsi0": value}, lambda v: (f"/storage/{v}", "qcow2"), HostFacts(),
                      RunPaths("/run/q.qmp", "/run/q.pid", "/run"))
    assert any(a.startswith("if=none,id=drive-scsi0,file=/storage/local:100/vm-100-disk-0.qcow2") for a in argv)


def test_drives_are_none_the_host_cdrom_a_new_volume_a_host_path_or_a_volume_of_images_or_iso():
    kinds = {"none,media=cdrom": "none", "cdrom,media=cdrom": "host-cdrom", "local:8,cache=none": "alloc",
             "/dev/sdb": "path", "local:iso/x.iso,media=cdrom": "volume", "local:100/vm-100-disk-0.raw": "volume"}
    assert {value: parse_drive(value).kind for value in kinds} == kinds
    for value, message in (("local:iso/x.iso", "explicit 'media=cdrom' is required for iso images"),
                           ("local:snippets/x", "content type needs to be 'images' or 'iso'"),
                           ("local:8,media=cdrom", "unable to parse directory volume name '8'"),
                           ("cdrom", "unable to parse volume ID 'cdrom'"), ("media=disk", "drive has no volume")):
        with pytest.raises(VolumeError) as exc:
            parse_drive(value)
        assert str(exc.value) == message


def test_owned_volumes_are_the_guests_own_images_only():
    conf = {"scsi0": "local:100/base-100-disk-0.qcow2/101/vm-101-disk-0.qcow2,size=1G",
            "scsi1": "/srv/vm-101-disk-0.qcow2", "ide2": "local:iso/x.iso,media=cdrom", "scsi2": "none",
            "unused0": "local:101/vm-101-disk-1.raw", "virtio0": "local:102/vm-102-disk-0.qcow2"}
    assert owned_volumes(101, conf) == ["local:100/base-100-disk-0.qcow2/101/vm-101-disk-0.qcow2",
                                        "local:101/vm-101-disk-1.raw"]


def test_the_dir_storage_never_resolves_a_volume_outside_its_directory(tmp_path):
    storage = DirStorage("local", str(tmp_path / "local"))
    storage.ensure_dirs()
    assert storage.volume_path("local:iso/x.iso") == str(tmp_path / "local" / "template" / "iso" / "x.iso")
    assert storage.volume_path("local:100/base-100-disk-0.qcow2/101/vm-101-disk-0.qcow2") == \
        str(tmp_path / "local" / "images" / "101" / "vm-101-disk-0.qcow2")
    for volid in ("local:iso//etc/shadow", "local:snippets/../../x", "other:iso/x.iso", "/etc/shadow"):
        with pytest.raises(StorageError):
            storage.volume_path(volid)
    # a name that parses but is a link out of the storage is refused too
    secret = tmp_path / "secret.iso"
    secret.write_text("secret")
    os.symlink(secret, tmp_path / "local" / "template" / "iso" / "evil.iso")
    with pytest.raises(StorageError, match="outside storage 'local'"):
        storage.volume_path("local:iso/evil.iso")
    assert storage.volume_vmid("local:100/base-100-disk-0.qcow2/101/vm-101-disk-0.qcow2") == 101
    assert storage.volume_vmid("local:iso/x.iso") is None
    assert storage.volume_format("local:100/vm-100-disk-0.raw") == "raw"


def test_import_from_needs_storage_0_and_a_source_of_images_or_import_content_or_a_host_path():
    assert parse_drive("local:0,import-from=local:import/noble.qcow2") == \
        Drive("local:0", False, "alloc", "local:import/noble.qcow2")
    assert parse_drive("local:0,import-from=local:100/vm-100-disk-0.raw,cache=none").import_from == \
        "local:100/vm-100-disk-0.raw"
    assert parse_drive("local:0,import-from=/srv/images/disk.img").import_from == "/srv/images/disk.img"
    assert parse_drive("local:0,import-from=local:import/vars.raw,efitype=4m,pre-enrolled-keys=0",
                       "efidisk0").kind == "alloc"
    for key, value, message in (
            ("scsi0", "local:8,import-from=local:import/a.raw",
             "'import-from' requires special syntax - use <storage ID>:0,import-from=<source>"),
            ("scsi0", "local:100/vm-100-disk-0.raw,import-from=local:import/a.raw",
             "'import-from' requires special syntax - use <storage ID>:0,import-from=<source>"),
            ("ide2", "local:0,media=cdrom,import-from=local:import/a.raw",
             "'import-from' requires special syntax - use <storage ID>:0,import-from=<source>"),
            ("scsi0", "local:0,import-from=local:iso/x.iso", "local:iso/x.iso has wrong type 'iso' - needs to be "
                                                            "'images' or 'import'"),
            ("scsi0", "local:0,import-from=local:snippets/x", "local:snippets/x has wrong type 'snippets' - needs to "
                                                             "be 'images' or 'import'"),
            ("scsi0", "local:0,import-from=local:import/../x.raw", "unable to parse directory volume name "
                                                                  "'import/../x.raw'"),
            ("scsi0", "local:0,import-from=x.raw", "unable to parse volume ID 'x.raw'"),
            ("efidisk0", "local:0,import-from=local:import/v.raw,efitype=4m",
             "need to specify 'pre-enrolled-keys' when using 'import-from'"),
            ("tpmstate0", "local:0,import-from=local:import/t.raw",
             "need to specify 'version' when using 'import-from'"),
            ("efidisk0", "local:1,efitype=8m",
             "invalid format - efitype: value '8m' does not have a value in the enumeration '2m, 4m'")):
        with pytest.raises(VolumeError) as exc:
            parse_drive(value, key)
        assert str(exc.value) == message, value


def test_a_config_change_destroys_only_the_guests_own_volumes_and_none_still_in_use():
    conf = {"scsi0": "local:100/vm-100-disk-0.qcow2,size=1G", "scsi1": "local:100/vm-100-disk-1.qcow2,size=1G",
            "scsi2": "local:101/vm-101-disk-0.qcow2", "ide2": "local:iso/x.iso,media=cdrom",
            "unused0": "local:100/vm-100-disk-2.qcow2", "unused1": "local:100/vm-100-disk-0.qcow2",
            "unused2": "local:101/vm-101-disk-1.qcow2"}
    snaps = {"s1": {"scsi3": "local:100/vm-100-disk-3.qcow2"}}
    assert destroyed_volumes(100, conf, snaps, {"delete": ["scsi0", "scsi1", "unused0"]}) == \
        [("unused0", "local:100/vm-100-disk-2.qcow2", False)]  # without force disks are kept (as unused)
    assert destroyed_volumes(100, conf, snaps, {"delete": ["scsi1", "scsi2", "ide2", "unused2"], "force": 1}) == \
        [("scsi1", "local:100/vm-100-disk-1.qcow2", False)]  # another guest's volume and a CD-ROM only leave
    # unused1 names the volume scsi0 still uses; a snapshot's disk is in use while the snapshot exists
    assert destroyed_volumes(100, conf, snaps, {"delete": ["unused1"]}) == \
        [("unused1", "local:100/vm-100-disk-0.qcow2", True)]
    assert volume_in_use({}, snaps, "unused0", "local:100/vm-100-disk-3.qcow2")
    assert not volume_in_use(conf, {}, "scsi1", "local:100/vm-100-disk-1.qcow2")
