"""Config -> QEMU command line, without QEMU: each Proxmox key lands where QEMU expects it."""

from __future__ import annotations

import pytest

from engine.volumes import drive_props
from hypervisor.qemu_argv import HostFacts, RunPaths, StartError, build_argv, ovmf_files, start_warnings, tap_script

PATHS = RunPaths(qmp="/run/100.qmp", pidfile="/run/100.pid", run_dir="/run")
HOST = HostFacts(bridges=frozenset({"vmbr0"}), kvm_available=True)


def resolve(volid: str) -> tuple[str, str]:
    name = volid.partition(":")[2].split("/")[-1]
    return f"/images/{name}", name.rsplit(".", 1)[-1] if "." in name else "raw"


def argv(conf: dict, host: HostFacts = HOST) -> list[str]:
    return build_argv(100, conf, resolve, host, PATHS)


def pairs(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


def test_basics_cpu_memory_and_monitor():
    a = argv({"name": "web", "memory": 2048, "cores": 2, "sockets": 2, "vcpus": 3, "cpu": "host", "kvm": 1})
    assert pairs(a, "-name") == ["web,debug-threads=on"]
    assert pairs(a, "-m") == ["2048"]
    assert pairs(a, "-smp") == ["3,sockets=2,cores=2,maxcpus=4"]
    assert pairs(a, "-cpu") == ["host"] and pairs(a, "-accel") == ["kvm"]
    assert "-daemonize" in a and pairs(a, "-pidfile") == ["/run/100.pid"]
    assert pairs(a, "-chardev")[0] == "socket,id=qmp,path=/run/100.qmp,server=on,wait=off"
    assert "virtio-balloon-pci,id=balloon0" in pairs(a, "-device")
    assert "virtio-balloon-pci,id=balloon0" not in pairs(argv({"balloon": 0}), "-device")


def test_kvm_off_uses_tcg_and_host_cpu_needs_kvm():
    a = argv({"kvm": 0})
    assert pairs(a, "-accel") == ["tcg"] and pairs(a, "-cpu") == ["qemu64"]
    with pytest.raises(StartError, match="requires KVM"):
        argv({"kvm": 0, "cpu": "host"})
    with pytest.raises(StartError, match="KVM virtualisation configured, but not available"):
        argv({}, HostFacts(kvm_available=False))
    with pytest.raises(StartError, match="vcpus"):
        argv({"cores": 1, "vcpus": 2})


def test_disks_on_every_bus_with_boot_order_cache_and_cdrom():
    conf = {"scsihw": "virtio-scsi-single", "scsi0": "local:100/vm-100-disk-0.qcow2,size=32G,cache=writeback",
            "virtio1": "local:100/vm-100-disk-1.raw,size=1G", "sata2": "local:100/vm-100-disk-2.qcow2",
            "ide2": "local:iso/debian.iso,media=cdrom", "ide0": "none,media=cdrom",
            "boot": "order=ide2;scsi0;net0", "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0"}
    a = argv(conf)
    drives, devices = pairs(a, "-drive"), pairs(a, "-device")
    assert "virtio-scsi-pci,id=scsihw0,addr=0x5" in devices and "ahci,id=ahci0,addr=0x7" in devices
    scsi = next(d for d in drives if "drive-scsi0" in d)
    assert "file=/images/vm-100-disk-0.qcow2" in scsi and "format=qcow2" in scsi and "cache=writeback" in scsi
    assert any(d.startswith("scsi-hd,bus=scsihw0.0") and "bootindex=101" in d for d in devices)
    assert any(d.startswith("virtio-blk-pci,drive=drive-virtio1") for d in devices)
    assert any(d.startswith("ide-hd,bus=ahci0.2") for d in devices)
    assert any(d.startswith("ide-cd,bus=ide.1,unit=0,drive=drive-ide2") and "bootindex=100" in d for d in devices)
    assert any("drive-ide0" in d and "media=cdrom" in d and "file=" not in d for d in drives)
    net = next(d for d in devices if d.startswith("virtio-net-pci"))
    assert "mac=BC:24:11:00:00:01" in net and "bootindex=102" in net
    assert "tap,id=net0,ifname=tap100i0" in pairs(a, "-netdev")[0]


def test_network_without_bridge_is_user_mode_and_a_missing_bridge_is_an_error():
    a = argv({"net0": "e1000=BC:24:11:00:00:02", "net1": "model=rtl8139"})
    assert pairs(a, "-netdev") == ["user,id=net0", "user,id=net1"]
    assert any(d.startswith("e1000,netdev=net0") for d in pairs(a, "-device"))
    with pytest.raises(StartError, match="bridge 'vmbr9' does not exist"):
        argv({"net0": "virtio,bridge=vmbr9"})
    script = tap_script("virtio=BC:24:11:00:00:01,bridge=vmbr0,tag=5,rate=10")
    assert "master vmbr0" in script and "vid 5" in script and "tbf rate" in script


def test_serial_vga_smbios_vmgenid_agent_ostype_and_args():
    a = argv({"serial0": "socket", "vga": "serial0", "smbios1": "uuid=0e5f7a0c-0000-4000-8000-000000000001",
              "vmgenid": "1e5f7a0c-0000-4000-8000-000000000001", "agent": "1", "ostype": "win11",
              "args": "-kernel /k -append 'console=ttyS0 quiet'", "bios": "seabios", "machine": "pc-q35-8.1",
              "onboot": 1, "tags": "a;b", "description": "x"})
    chardevs = pairs(a, "-chardev")
    assert any(c.startswith("socket,id=serial0,path=/run/100.serial0") and "logfile=/run/100.serial0.log" in c
               for c in chardevs)
    assert "isa-serial,chardev=serial0" in pairs(a, "-device")
    assert pairs(a, "-vga") == ["none"] and pairs(a, "-machine") == ["type=q35"]
    assert pairs(a, "-smbios") == ["type=1,uuid=0e5f7a0c-0000-4000-8000-000000000001"]
    assert "vmgenid,guid=1e5f7a0c-0000-4000-8000-000000000001" in pairs(a, "-device")
    assert any("name=org.qemu.guest_agent.0" in d for d in pairs(a, "-device"))
    assert pairs(a, "-rtc") == ["base=localtime"]
    assert a[-4:] == ["-kernel", "/k", "-append", "console=ttyS0 quiet"]


def test_agent_channel_virtio_or_isa_after_the_serial_ports():
    """qemu-server's config_to_command: a socket chardev `qga0` in the run dir, and a virtio-serial port named
    org.qemu.guest_agent.0 (type virtio, the default) or an ISA serial port that comes after the serialN ones."""
    for value in ("1", "enabled=1", "enabled=yes,fstrim_cloned_disks=1", "1,type=virtio"):
        a = argv({"agent": value})
        assert "socket,path=/run/100.qga,server=on,wait=off,id=qga0" in pairs(a, "-chardev")
        devices = pairs(a, "-device")
        assert "virtio-serial,id=qga0,addr=0x8" in devices
        assert "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0" in devices
    a = argv({"agent": "enabled=1,type=isa", "serial0": "socket"})
    devices = pairs(a, "-device")
    assert devices.index("isa-serial,chardev=serial0") < devices.index("isa-serial,chardev=qga0")
    assert not any(d.startswith("virtserialport") for d in devices)
    for value in ("0", "enabled=0,type=isa", "type=virtio", "1,type=pci", "maybe"):
        a = argv({"agent": value})
        assert not any("qga0" in x for x in a), value


def test_loadvm_for_a_snapshot_with_state():
    assert pairs(build_argv(100, {}, resolve, HOST, PATHS, loadvm="snap1"), "-loadvm") == ["snap1"]


def test_migration_target_waits_for_the_state_and_may_stay_paused():
    a = build_argv(100, {}, resolve, HOST, PATHS, incoming="tcp:127.0.0.1:4000")
    assert pairs(a, "-incoming") == ["tcp:127.0.0.1:4000"] and "-S" not in a
    assert "-S" in build_argv(100, {}, resolve, HOST, PATHS, incoming="tcp:127.0.0.1:4000", paused=True)


def test_hot_pluggable_devices_sit_at_fixed_pci_slots_and_lsi_disks_at_their_scsi_id():
    """A device hot-plugged later gets the slot a cold start gives it, so a migration target lays out as its source
    (qemu-server's PCI address map); LSI addresses disks by SCSI id, virtio-scsi by LUN (print_drivedevice_full)."""
    devices = pairs(argv({"virtio1": "local:100/vm-100-disk-1.raw", "net2": "virtio=BC:24:11:00:00:03",
                          "scsi0": "local:100/vm-100-disk-0.qcow2", "scsi2": "local:100/vm-100-disk-2.qcow2"}),
                    "-device")
    assert "virtio-blk-pci,drive=drive-virtio1,id=virtio1,addr=0xb" in devices
    assert any(d.startswith("virtio-net-pci,netdev=net2,id=net2,mac=BC:24:11:00:00:03,addr=0x14") for d in devices)
    assert "lsi,id=scsihw0,addr=0x5" in devices
    assert any(d.startswith("scsi-hd,bus=scsihw0.0,scsi-id=2,drive=drive-scsi2,id=scsi2") for d in devices)
    single = pairs(argv({"scsihw": "virtio-scsi-pci", "scsi2": "local:100/vm-100-disk-2.qcow2"}), "-device")
    assert any(d.startswith("scsi-hd,bus=scsihw0.0,channel=0,scsi-id=0,lun=2,drive=drive-scsi2") for d in single)


@pytest.mark.parametrize("efidisk,machine,code,template", [
    ("local:100/vm-100-disk-0.qcow2,efitype=4m,size=528K", "pc", "OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"),
    ("local:100/vm-100-disk-0.qcow2,efitype=4m,pre-enrolled-keys=1", "pc", "OVMF_CODE_4M.fd", "OVMF_VARS_4M.ms.fd"),
    ("local:100/vm-100-disk-0.qcow2,efitype=4m,pre-enrolled-keys=1", "q35", "OVMF_CODE_4M.secboot.fd",
     "OVMF_VARS_4M.ms.fd"),  # q35 has SMM: the Secure Boot build
    ("local:100/vm-100-disk-0.qcow2", "pc", "OVMF_CODE.fd", "OVMF_VARS.fd"),  # efitype 2m, the default
    ("local:100/vm-100-disk-0.qcow2,efitype=2m,pre-enrolled-keys=1", "q35", "OVMF_CODE.fd", "OVMF_VARS.fd"),
])
def test_ovmf_runs_its_code_read_only_and_the_efidisk_as_vars_flash(efidisk, machine, code, template):
    conf = {"bios": "ovmf", "efidisk0": efidisk, "machine": machine}
    a = argv(conf)
    assert pairs(a, "-drive")[:2] == [f"if=pflash,unit=0,format=raw,readonly=on,file=/usr/share/OVMF/{code}",
                                      "if=pflash,unit=1,id=drive-efidisk0,format=qcow2,file=/images/vm-100-disk-0.qcow2"]
    assert "-bios" not in a and ovmf_files(conf, drive_props(efidisk))[1] == f"/usr/share/OVMF/{template}"
    assert start_warnings(conf) == [] and not any("efidisk0" in d for d in pairs(argv({"efidisk0": efidisk}), "-drive"))


def test_ovmf_without_efidisk_gets_a_temporary_vars_copy_and_a_warning():
    conf = {"bios": "ovmf"}
    assert pairs(argv(conf), "-drive") == ["if=pflash,unit=0,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE.fd",
                                           "if=pflash,unit=1,id=drive-efidisk0,format=raw,file=/run/100-ovmf.fd"]
    assert start_warnings(conf) == ["no efidisk configured! Using temporary efivars disk."]
    assert start_warnings({"bios": "seabios"}) == [] and start_warnings({}) == []
    with pytest.raises(StartError, match="efidisk format must be specified"):
        argv({"bios": "ovmf", "efidisk0": "/dev/vg/efi,efitype=4m"})
    a = argv({"bios": "ovmf", "efidisk0": "/dev/vg/efi,efitype=4m,format=raw"})
    assert "if=pflash,unit=1,id=drive-efidisk0,format=raw,file=/dev/vg/efi" in pairs(a, "-drive")


def test_rng0_is_a_virtio_rng_device_on_the_hosts_source_with_proxmoxs_rate_limit():
    """qemu-server's RNG.pm: an rng-random backend on the source, 1024 bytes per 1000 ms unless told otherwise,
    no limit with max_bytes=0; an invalid or missing source refuses the start."""
    assert pairs(argv({"rng0": "source=/dev/urandom"}), "-object") == ["rng-random,filename=/dev/urandom,id=rng0"]
    assert "virtio-rng-pci,rng=rng0,max-bytes=1024,period=1000" in pairs(argv({"rng0": "/dev/urandom"}), "-device")
    assert "virtio-rng-pci,rng=rng0,max-bytes=2048,period=500" in \
        pairs(argv({"rng0": "/dev/random,max_bytes=2048,period=500"}), "-device")
    assert "virtio-rng-pci,rng=rng0" in pairs(argv({"rng0": "source=/dev/urandom,max_bytes=0"}), "-device")
    assert not any("rng" in a for a in argv({}))
    with pytest.raises(StartError, match="invalid source '/dev/zero'"):
        argv({"rng0": "source=/dev/zero"})
