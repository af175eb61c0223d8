"""Every property-string parameter of a guest config: parsed and checked against its declared format, stored as
Proxmox stores it, refused with Proxmox's message for that key (api/propstrings.py). The pure tables run
through the real declarations (`POST /nodes/{node}/qemu/{vmid}/config`); the last test sends some of them to a
real node with proxmoxer."""

from __future__ import annotations

import base64
import urllib.parse

import pytest
from proxmoxer import ResourceException
from proxmoxer.tools import Tasks

from api import formats_pve, propstrings
from api.compat.qemu_options import CONFIG_PARAMS
from api.registry import load_endpoints
from api.schema import ParamErrors

CONFIG = next(ep for ep in load_endpoints().endpoints
              if ep.method == "POST" and ep.path == "/nodes/{node}/qemu/{vmid}/config")
PROPERTY_PARAMS = sorted(p.name for p in CONFIG_PARAMS if propstrings.knows(p.format))
MODELS = ("e1000, e1000-82540em, e1000-82544gc, e1000-82545em, e1000e, i82551, i82557b, i82559er, ne2k_isa, ne2k_pci, "
          "pcnet, rtl8139, virtio, vmxnet3")
VGA_TYPES = "cirrus, qxl, qxl2, qxl3, qxl4, none, serial0, serial1, serial2, serial3, std, virtio, virtio-gl, vmware"
CPU_FLAGS = ("aes, amd-no-ssb, amd-ssbd, hv-evmcs, hv-tlbflush, ibpb, md-clear, nested-virt, pcid, pdpe1gb, "
             "spec-ctrl, ssbd, virt-ssbd")
VOL = "local:100/vm-100-disk-0.qcow2"


def _ssh_key(kind: str = "ssh-ed25519", key: bytes = bytes(range(32))) -> str:
    blob = b"".join(len(part).to_bytes(4, "big") + part for part in (kind.encode(), key))
    return f"{kind} {base64.b64encode(blob).decode()} me@host"


SSH_KEYS = urllib.parse.quote(_ssh_key() + "\n\n" + _ssh_key(key=b"\x01" * 32), safe="")


def stored(key: str, value: str) -> str:
    """What the declaration makes of `key=value` (ParamErrors when it refuses it)."""
    return CONFIG.validate({"node": "n1", "vmid": "100", key: value})[key]


def refusal(key: str, value: str) -> str:
    with pytest.raises(ParamErrors) as exc:
        stored(key, value)
    assert set(exc.value.errors) == {key}
    return exc.value.errors[key]


def _format_error(*errors: str) -> str:
    return "invalid format - format error\n" + "\n".join(errors)


# parameter -> ([(given, stored)], [(given, Proxmox's message)])
TABLE: dict[str, tuple[list[tuple[str, str]], list[tuple[str, str]]]] = {
    "net[n]": ([
        ("virtio=BC:24:11:00:00:01,bridge=vmbr0", "virtio=BC:24:11:00:00:01,bridge=vmbr0"),
        ("virtio,bridge=vmbr0", "virtio,bridge=vmbr0"),  # no MAC yet: the service assigns one on create
        ("model=rtl8139", "rtl8139"),
        ("tag=5,firewall=yes,bridge=vmbr0,macaddr=bc:24:11:aa:bb:cc,model=e1000,link_down=off",
         "e1000=bc:24:11:aa:bb:cc,bridge=vmbr0,firewall=1,link_down=0,tag=5"),
        ("virtio,queues=4,rate=12.5,mtu=1,trunks=10;20-30", "virtio,mtu=1,queues=4,rate=12.5,trunks=10;20-30"),
    ], [
        ("virtio=A3:00:00:00:00:01,bridge=vmbr0",  # the I/G bit: a multicast address
         _format_error("net0.macaddr: invalid format - value does not look like a valid unicast MAC address")),
        ("fastnic,bridge=vmbr0", _format_error(
            f"net0.model: value 'fastnic' does not have a value in the enumeration '{MODELS}'")),
        ("bridge=vmbr0", _format_error("net0.model: property is missing and it is not optional")),
        ("virtio,bridge=vm br0", _format_error("net0.bridge: invalid format - invalid bridge ID 'vm br0'")),
        ("virtio,tag=4095,mtu=x", _format_error("net0.mtu: type check ('integer') failed - got 'x'",
                                                "net0.tag: value must have a maximum value of 4094")),
        ("virtio,speed=10", "invalid format - invalid key in comma-separated list property: speed"),
        ("virtio=BC:24:11:00:00:01,macaddr=BC:24:11:00:00:02",
         "invalid format - duplicate key in comma-separated list property: macaddr"),
        ("virtio,e1000", "invalid format - duplicate key in comma-separated list property: model"),
        ("virtio,bridge=", "invalid format - missing key in comma-separated list property"),
    ]),
    "ipconfig[n]": ([
        ("ip=192.0.2.3/24,gw=192.0.2.1", "ip=192.0.2.3/24,gw=192.0.2.1"),  # Proxmox keeps what the client wrote
        ("ip=dhcp,ip6=auto", "ip=dhcp,ip6=auto"),
        ("ip6=2001:db8::2/64,gw6=2001:db8::1", "ip6=2001:db8::2/64,gw6=2001:db8::1"),
    ], [
        ("ip=192.0.2.3", _format_error(
            "ipconfig0.ip: invalid format - value does not look like a valid ipv4 network configuration")),
        ("ip=999.1.1.1/24", _format_error(
            "ipconfig0.ip: invalid format - value does not look like a valid ipv4 network configuration")),
        ("ip=192.0.2.3/24,gateway=192.0.2.1",
         "invalid format - invalid key in comma-separated list property: gateway"),
        ("gw=192.0.2.1", _format_error("ipconfig0.ip: missing property required by 'ipconfig0.gw'")),
        ("ip=dhcp,gw=192.0.2.256",
         _format_error("ipconfig0.gw: invalid format - value does not look like a valid IPv4 address")),
        ("ip6=2001:db8::2", _format_error(
            "ipconfig0.ip6: invalid format - value does not look like a valid ipv6 network configuration")),
        ("192.0.2.3/24", "invalid format - value without key, but schema does not define a default key"),
    ]),
    **{disk: ([
        ("local:8", "local:8"),
        ("local:cloudinit", "local:cloudinit"),
        ("local:0,import-from=local:iso/debian.img", "local:0,import-from=local:iso/debian.img"),
        (f"size=32768M,cache=writeback,volume={VOL},backup=no", f"{VOL},backup=0,cache=writeback,size=32G"),
        ("local:1,bps=10485760,iops_rd=100", "local:1,iops_rd=100,mbps=10.000"),
        *([("none", "none,media=cdrom"),  # cleanup_drive_path
           ("cdrom,media=cdrom", "cdrom,media=cdrom")] if disk != "virtio" else []),
    ], [
        *([("cdrom,media=cdrom", "unable to parse drive options")] if disk == "virtio" else []),  # no virtio CD-ROM
        ("local:8,cache=bogus", _format_error(
            f"{disk}0.cache: value 'bogus' does not have a value in the enumeration "
            "'none, writethrough, writeback, unsafe, directsync'")),
        ("local:8,ssd=maybe", "invalid format - invalid key in comma-separated list property: ssd")
        if disk == "virtio" else ("local:8,ssd=maybe", _format_error(
            f"{disk}0.ssd: type check ('boolean') failed - got 'maybe'")),
        ("local:8,size=lots", _format_error(
            f"{disk}0.size: invalid format - value does not look like a valid disk size: lots")),
        ("etc/shadow", _format_error(f"{disk}0.file: invalid format - unable to parse volume ID 'etc/shadow'")),
        ("cache=none", _format_error(f"{disk}0.file: property is missing and it is not optional")),
        ("local:8,mbps=5,bps=1", "unable to parse drive options"),
        ("local:8,iops=10,iops_rd=5", "unable to parse drive options"),
        ("local:8,mbps_max=20", "unable to parse drive options"),  # needs mbps
        ("local:iso/x.iso,media=cdrom,format=raw", "unable to parse drive options"),
        ("local:8,import-from=local:iso/debian.img",
         "'import-from' requires special syntax - use <storage ID>:0,import-from=<source>"),
        (f"{VOL},volume={VOL}", "invalid format - key 'file' is already defined (via alias)"),
        (f"file={VOL},file={VOL}", "invalid format - duplicate key in comma-separated list property: file"),
    ]) for disk in ("ide", "sata", "scsi", "virtio")},
    "efidisk0": ([
        ("local:1,efitype=4m,pre-enrolled-keys=1", "local:1,efitype=4m,pre-enrolled-keys=1"),
        ("ms-cert=2023k,efitype=4m,volume=local:100/vm-100-disk-1.raw,size=528K",
         "local:100/vm-100-disk-1.raw,efitype=4m,ms-cert=2023k,size=528K"),
        ("local:0,import-from=local:100/vm-100-disk-9.raw,efitype=4m,pre-enrolled-keys=0",
         "local:0,efitype=4m,import-from=local:100/vm-100-disk-9.raw,pre-enrolled-keys=0"),
    ], [
        ("local:1,efitype=8m", _format_error(
            "efidisk0.efitype: value '8m' does not have a value in the enumeration '2m, 4m'")),
        ("local:1,cache=none", "invalid format - invalid key in comma-separated list property: cache"),
        ("local:0,import-from=local:100/vm-100-disk-9.raw",
         "need to specify 'efitype' when using 'import-from'"),
    ]),
    "tpmstate0": ([
        ("local:1,version=v2.0", "local:1,version=v2.0"),
    ], [
        ("local:1,version=v3", _format_error(
            "tpmstate0.version: value 'v3' does not have a value in the enumeration 'v1.2, v2.0'")),
        ("local:1,format=qed", _format_error(
            "tpmstate0.format: value 'qed' does not have a value in the enumeration 'raw, qcow2, vmdk'")),
        ("local:0,import-from=local:100/vm-100-disk-9.raw", "need to specify 'version' when using 'import-from'"),
    ]),
    "unused[n]": ([
        ("local:101/vm-101-disk-1.raw", "local:101/vm-101-disk-1.raw"),
    ], [
        ("/dev/sdb", _format_error("unused0.file: invalid format - unable to parse volume ID '/dev/sdb'")),
        ("local:101/vm-101-disk-1.raw,size=1G", "invalid format - invalid key in comma-separated list property: size"),
    ]),
    "cdrom": ([
        ("local:iso/debian.iso", "local:iso/debian.iso"),
        ("none", "none"),
    ], [
        ("local:iso/debian.iso,import-from=local:iso/x.img",
         "invalid format - invalid key in comma-separated list property: import-from"),
    ]),
    "agent": ([
        ("1", "1"),
        ("enabled=yes,fstrim_cloned_disks=1,type=isa", "enabled=yes,fstrim_cloned_disks=1,type=isa"),
        ("1,freeze-fs-on-backup=0", "1,freeze-fs-on-backup=0"),
    ], [
        ("maybe", _format_error("agent.enabled: type check ('boolean') failed - got 'maybe'")),
        ("type=serial", _format_error(
            "agent.enabled: property is missing and it is not optional",
            "agent.type: value 'serial' does not have a value in the enumeration 'virtio, isa'")),
        ("1,freeze-fs=1,guest-fsfreeze=0", "invalid format - key 'freeze-fs' is already defined (via alias)"),
    ]),
    "smbios1": ([
        ("uuid=0b0e1c8e-6c8f-4c5e-8e8e-0e8e8e8e8e8e,base64=1,manufacturer=UHJveG1veA==",
         "uuid=0b0e1c8e-6c8f-4c5e-8e8e-0e8e8e8e8e8e,base64=1,manufacturer=UHJveG1veA=="),
    ], [
        ("uuid=not-a-uuid", _format_error("smbios1.uuid: value does not match the regex pattern")),
        ("vendor=x", "invalid format - invalid key in comma-separated list property: vendor"),
        ("family=" + "QUFB" * 130, "value may only be 512 characters long"),
    ]),
    "vga": ([
        ("qxl,memory=32", "qxl,memory=32"),
        ("type=virtio,clipboard=vnc", "type=virtio,clipboard=vnc"),
    ], [
        ("svga", _format_error(f"vga.type: value 'svga' does not have a value in the enumeration '{VGA_TYPES}'")),
        ("std,memory=1024", _format_error("vga.memory: value must have a maximum value of 512")),
    ]),
    "serial[n]": ([("socket", "socket"), ("/dev/ttyS0", "/dev/ttyS0")],
                  [("ttyS0", "value does not match the regex pattern")]),
    "parallel[n]": ([("/dev/parport0", "/dev/parport0")], [("/dev/lp0", "value does not match the regex pattern")]),
    "usb[n]": ([
        ("spice", "spice"), ("host=1234:5678,usb3=1", "host=1234:5678,usb3=1"), ("mapping=stick", "mapping=stick"),
    ], [
        ("host=usbstick", _format_error("usb0.host: value does not match the regex pattern")),
        ("mapping=9x", _format_error("usb0.mapping: invalid format - invalid configuration ID '9x'")),
    ]),
    "hostpci[n]": ([
        ("0000:01:00.0,pcie=1,x-vga=on", "0000:01:00.0,pcie=1,x-vga=on"),
        ("mapping=gpu,vendor-id=0x10de", "mapping=gpu,vendor-id=0x10de"),
    ], [
        ("01:00.0,driver=nouveau", _format_error(
            "hostpci0.driver: value 'nouveau' does not have a value in the enumeration 'vfio, keep'")),
        ("01:00.0,device-id=10de", _format_error("hostpci0.device-id: value does not match the regex pattern")),
    ]),
    "numa[n]": ([
        ("cpus=0-3,memory=2048,hostnodes=0,policy=bind", "cpus=0-3,memory=2048,hostnodes=0,policy=bind"),
    ], [
        ("memory=2048", _format_error("numa0.cpus: property is missing and it is not optional")),
        ("cpus=0-3,policy=strict", _format_error(
            "numa0.policy: value 'strict' does not have a value in the enumeration 'preferred, bind, interleave'")),
    ]),
    "rng0": ([
        ("/dev/urandom", "/dev/urandom"), ("source=/dev/hwrng,max_bytes=2048,period=500",
                                           "source=/dev/hwrng,max_bytes=2048,period=500"),
    ], [
        ("/dev/zero", _format_error("rng0.source: value '/dev/zero' does not have a value in the enumeration "
                                    "'/dev/urandom, /dev/random, /dev/hwrng'")),
        ("/dev/random,period=fast", _format_error("rng0.period: type check ('integer') failed - got 'fast'")),
    ]),
    "audio0": ([("device=ich9-intel-hda,driver=none", "device=ich9-intel-hda,driver=none")], [
        ("driver=spice", _format_error("audio0.device: property is missing and it is not optional")),
        ("device=sb16", _format_error(
            "audio0.device: value 'sb16' does not have a value in the enumeration 'ich9-intel-hda, intel-hda, AC97'")),
    ]),
    "watchdog": ([("i6300esb,action=reset", "i6300esb,action=reset"), ("model=ib700", "model=ib700")], [
        ("i6300esb,action=explode", _format_error(
            "watchdog.action: value 'explode' does not have a value in the enumeration "
            "'reset, shutdown, poweroff, pause, debug, none'")),
    ]),
    "startup": ([("order=1,up=30,down=60", "order=1,up=30,down=60"), ("2", "2")], [
        ("order=first", "invalid format - unable to parse startup options"),
        ("0", "invalid format - unable to parse startup options"),  # pve_parse_startup_order: a false value
    ]),
    "boot": ([
        ("order=scsi0;net0;ide2", "order=scsi0;net0;ide2"),
        ("legacy=cdn,order=virtio0 net0", "order=virtio0;net0"),  # print_bootorder
        ("cdn", "cdn"),
    ], [
        ("order=floppy0", _format_error("boot.order: invalid format - invalid boot device 'floppy0'")),
        ("order=efidisk0", _format_error("boot.order: invalid format - invalid boot device 'efidisk0'")),
        ("cdx", _format_error("boot.legacy: value does not match the regex pattern")),
    ]),
    "bootdisk": ([("scsi0", "scsi0")], [
        ("scsi31", "invalid format - invalid boot disk 'scsi31'"),
        ("efidisk0", "value does not match the regex pattern"),  # a drive, but not one the pattern allows
    ]),
    "memory": ([("2048", "2048"), ("current=1024", "current=1024")], [
        ("8", _format_error("memory.current: value must have a minimum value of 16")),
        ("lots", _format_error("memory.current: type check ('integer') failed - got 'lots'")),
        ("current=1024,max=4096", "invalid format - invalid key in comma-separated list property: max"),
    ]),
    "cpu": ([
        ("host", "host"), ("x86-64-v2-AES,flags=+aes;-pcid", "x86-64-v2-AES,flags=+aes;-pcid"),
        ("cputype=EPYC-Rome,hidden=1,phys-bits=host", "cputype=EPYC-Rome,hidden=1,phys-bits=host"),
    ], [
        ("pentium5", "invalid format - Built-in cputype 'pentium5' is not defined (missing 'custom-' prefix?)"),
        ("host,flags=+avx2", f"invalid format - VM-specific CPU flags must be a subset of: {CPU_FLAGS}"),
        ("flags=+aes", "invalid format - CPU is missing cputype"),
        ("host,reported-model=kvm64",
         "invalid format - Property 'reported-model' not allowed in VM-specific CPU config."),
        ("host,phys-bits=99", _format_error(
            "cpu.phys-bits: invalid format - value must be an integer between 8 and 64 or 'host'")),
    ]),
    "spice_enhancements": ([("videostreaming=all,foldersharing=1", "videostreaming=all,foldersharing=1")], [
        ("videostreaming=some", _format_error("spice_enhancements.videostreaming: value 'some' does not have a "
                                              "value in the enumeration 'off, all, filter'")),
    ]),
    "sshkeys": ([(SSH_KEYS, SSH_KEYS)], [
        ("ssh-ed25519 AAAA", "invalid format - invalid urlencoded string: ssh-ed25519 AAAA"),
        (urllib.parse.quote("not a key", safe=""), "SSH public key validation error"),
        (urllib.parse.quote(_ssh_key().replace("ssh-ed25519", "ssh-rsa", 1), safe=""),
         "SSH public key validation error"),  # the key itself says it is an ed25519 key
    ]),
    "tags": ([("Web;db,web prod", "db;prod;web"), ("", "")], [("web:1", "invalid format - invalid characters in tag")]),
    "ivshmem": ([("size=32,name=shared", "size=32,name=shared")], [
        ("name=shared", _format_error("ivshmem.size: property is missing and it is not optional")),
        ("size=0", _format_error("ivshmem.size: value must have a minimum value of 1")),
    ]),
    "amd-sev": ([("snp,allow-smt=0,kernel-hashes=1", "snp,allow-smt=0,kernel-hashes=1")], [
        ("sev", _format_error("amd-sev.type: value 'sev' does not have a value in the enumeration 'std, es, snp'")),
    ]),
    "intel-tdx": ([("tdx,attestation=1,vsock-port=4050", "tdx,attestation=1,vsock-port=4050")], [
        ("tdx", _format_error("intel-tdx.attestation: property is missing and it is not optional")),
        ("tdx,attestation=1,vsock-cid=1", _format_error("intel-tdx.vsock-cid: value must have a minimum value of 2")),
    ]),
    "virtiofs[n]": ([("share1,cache=never,expose-acl=1", "share1,cache=never,expose-acl=1")], [
        ("cache=never", _format_error("virtiofs0.dirid: property is missing and it is not optional")),
        ("1share", _format_error("virtiofs0.dirid: invalid format - invalid configuration ID '1share'")),
    ]),
    "cicustom": ([("user=local:snippets/user.yaml,network=local:snippets/net.yaml",
                   "user=local:snippets/user.yaml,network=local:snippets/net.yaml")], [
        ("user=/etc/shadow", _format_error("cicustom.user: invalid format - unable to parse volume ID '/etc/shadow'")),
        ("userdata=local:snippets/u.yaml", "invalid format - invalid key in comma-separated list property: userdata"),
    ]),
    "affinity": ([("0,5,8-11", "0,5,8-11")], [("3-1", "invalid format - unable to parse cpuset option")]),
    "hotplug": ([("network,disk,usb", "network,disk,usb"), ("0", "0")], [
        ("network,gpu", "invalid format - invalid hotplug feature 'gpu'")]),
    "nameserver": ([("192.0.2.53 2001:db8::53", "192.0.2.53 2001:db8::53")], [
        ("192.0.2.53 dns_server", "invalid format - value does not look like a valid address: dns_server")]),
    "hookscript": ([("local:snippets/hook.sh", "local:snippets/hook.sh")], [
        ("hook.sh", "invalid format - unable to parse volume ID 'hook.sh'")]),
    "machine": ([("q35,viommu=virtio", "q35,viommu=virtio"), ("pc-i440fx-9.2+pve1", "pc-i440fx-9.2+pve1")], [
        ("isapc", _format_error("machine.type: value does not match the regex pattern")),
        ("q35,aw-bits=16", _format_error("machine.aw-bits: value must have a minimum value of 32")),
    ]),
}
FAMILY_KEYS = {"net[n]": "net0", "ipconfig[n]": "ipconfig0", "unused[n]": "unused0", "serial[n]": "serial0",
               "parallel[n]": "parallel0", "usb[n]": "usb0", "hostpci[n]": "hostpci0", "numa[n]": "numa0",
               "virtiofs[n]": "virtiofs0", "ide": "ide0", "sata": "sata0", "scsi": "scsi0", "virtio": "virtio0"}
CASES = [(name, FAMILY_KEYS.get(name, name), given, want, ok) for name, (valid, invalid) in TABLE.items()
         for ok, rows in ((True, valid), (False, invalid)) for given, want in rows]


def test_the_table_covers_every_property_string_parameter():
    families = {"ide[n]": "ide", "sata[n]": "sata", "scsi[n]": "scsi", "virtio[n]": "virtio"}
    assert {families.get(name, name) for name in PROPERTY_PARAMS} <= set(TABLE)


def test_the_declarations_name_the_formats_proxmox_declares():
    """Every config parameter Proxmox's schema gives a format has that format in CONFIG_PARAMS (the generated
    api/formats_pve.py is the schema's word), and every format a property string's key names can be checked."""
    declared = {p.name: p.format for p in CONFIG_PARAMS}
    for name, fmt in formats_pve.PARAMS.items():
        if name in declared:
            assert declared[name] == fmt, name
    for fmt in propstrings.FORMATS.values():
        for schema in fmt.values():
            sub = schema.get("format")
            assert sub is None or sub in propstrings.FORMATS or propstrings.formats_scalar.checker(sub), sub


@pytest.mark.parametrize("name,key,given,want,ok", CASES, ids=[f"{k}={g[:40]}" for _, k, g, _, _ in CASES])
def test_each_value_is_stored_as_proxmox_stores_it_or_refused_with_its_message(name, key, given, want, ok):
    if ok:
        assert stored(key, given) == want
        assert stored(key, want) == want  # the stored form is a fixed point
    else:
        assert refusal(key, given) == want


# one value for each key of each format, so that every key is parsed, checked and printed
SAMPLES = {
    "file": VOL, "volume": VOL, "import-from": "local:iso/debian.img", "size": "1G", "serial": "SN%2001",
    "model": "virtio", "wwn": "0x5000c500a1b2c3d4", "product": "Disk", "vendor": "ACME", "macaddr": "BC:24:11:00:00:01",
    "bridge": "vmbr0", "trunks": "10;20-30", "name": "shm", "cpus": "0-1", "hostnodes": "0", "host": "01:00.0",
    "mapping": "map1", "dirid": "share1", "type": "q35", "ip": "dhcp", "gw": "192.0.2.1", "ip6": "auto",
    "gw6": "2001:db8::1", "legacy": "cdn", "order": "scsi0;net0", "cputype": "host", "hv-vendor-id": "proxmox",
    "flags": "+aes", "phys-bits": "host", "uuid": "0b0e1c8e-6c8f-4c5e-8e8e-0e8e8e8e8e8e", "romfile": "rom.bin",
    "mdev": "nvidia-63", "meta": "local:snippets/m.yaml", "network": "local:snippets/n.yaml",
    "user": "local:snippets/u.yaml",
}
SAMPLES_IN = {("pve-qm-usb", "host"): "1-2.3", ("pve-qm-smbios1", "uuid"): SAMPLES["uuid"],
              ("pve-qm-cicustom", "vendor"): "local:snippets/v.yaml",
              **{("pve-qm-hostpci", key): "0x10de" for key in ("vendor-id", "device-id", "sub-vendor-id",
                                                              "sub-device-id")}}
REQUIRED = {"pve-qm-agent": {"enabled": "1"}, "pve-qm-audio": {"device": "AC97"}, "pve-qm-ivshmem": {"size": "1"},
            "pve-qm-memory": {"current": "512"}, "pve-qm-net": {"model": "virtio"}, "pve-qm-numanode": {"cpus": "0"},
            "pve-qm-rng": {"source": "/dev/urandom"}, "pve-qemu-sev-fmt": {"type": "std"},
            "pve-qemu-tdx-fmt": {"type": "tdx", "attestation": "1"}, "pve-qm-virtiofs": {"dirid": "share1"}}
NEEDS = {"gw": "ip", "gw6": "ip6", "bps_max_length": "mbps_max", "bps_rd_max_length": "mbps_rd_max",
         "bps_wr_max_length": "mbps_wr_max", "iops_max_length": "iops_max", "iops_rd_max_length": "iops_rd_max",
         "iops_wr_max_length": "iops_wr_max", "mbps_max": "mbps", "mbps_rd_max": "mbps_rd", "mbps_wr_max": "mbps_wr"}


def _sample(name: str, key: str) -> str:
    fmt = propstrings.FORMATS[name]
    schema = fmt[key]
    if (name, key) in SAMPLES_IN:
        return SAMPLES_IN[name, key]
    if schema.get("enum"):
        return schema["enum"][-1]
    if schema.get("type") == "boolean":
        return "yes"
    if schema.get("type") in ("integer", "number"):
        return str(int(schema.get("minimum", 2)) + 1)
    if name == "pve-qm-smbios1":
        return "QUJD"
    return SAMPLES[key]


FORMAT_KEYS = [(name, key) for name, fmt in sorted(propstrings.FORMATS.items()) for key in sorted(fmt)
               if not fmt[key].get("alias")]


@pytest.mark.parametrize("name,key", FORMAT_KEYS, ids=[f"{n}:{k}" for n, k in FORMAT_KEYS])
def test_every_key_of_every_format_parses_checks_and_prints(name, key):
    """`key=value` (with what the format requires and what the key requires) parses to its value, booleans as 1/0;
    printed, the default key comes first and bare, the rest sorted; the print parses back to the same."""
    fmt = propstrings.FORMATS[name]
    data = {**REQUIRED.get(name, {}), **({"file": VOL} if "file" in fmt else {})}
    for k in (key, NEEDS.get(key), NEEDS.get(NEEDS.get(key, ""))):
        if k and k in fmt:
            data[k] = _sample(name, k)
    given = ",".join(f"{k}={v}" for k, v in reversed(data.items()))
    parsed = propstrings.parse(name, given, "x")
    assert parsed[key] == {"yes": "1"}.get(data[key], data[key])
    printed = propstrings.print_(parsed, name)
    dkey, _ = propstrings.default_key(fmt)
    keys = [part.partition("=")[0] for part in printed.split(",")]
    if dkey in parsed:
        assert printed.split(",")[0] in (parsed[dkey], f"{parsed[dkey]}={parsed.get('macaddr')}")
        keys = keys[1:]
    required = sorted(k for k in keys if not fmt[k].get("optional"))
    assert keys == required + sorted(k for k in keys if k not in required)
    assert propstrings.parse(name, printed, "x") == parsed
    with pytest.raises(ValueError, match="invalid key in comma-separated list property: nosuchkey"):
        propstrings.parse(name, given + ",nosuchkey=1", "x")


def test_a_drive_the_service_changes_is_printed_as_proxmox_prints_it():
    drive = {"file": "local:100/vm-100-disk-0.raw", "ssd": "1", "size": 1 << 30, "cache": "none"}
    assert propstrings.print_drive("scsi0", drive) == "local:100/vm-100-disk-0.raw,cache=none,size=1G,ssd=1"
    assert propstrings.print_drive("efidisk0", {"file": "local:100/vm-100-disk-1.raw", "efitype": "4m",
                                                "size": "528K"}) == "local:100/vm-100-disk-1.raw,efitype=4m,size=528K"


def test_every_format_reads_as_proxmox_documents_it():
    """Each property-string format, the hand-transcribed named ones included, yields the type text Proxmox's
    schema documents for its parameter (`generate_typetext`: same keys, kinds, optionality, default key, order)."""
    checked = 0
    for name, fmt in formats_pve.PARAMS.items():
        if fmt in propstrings.FORMATS and name != "cdrom":  # cdrom's schema overrides it with `<volume>`
            assert propstrings.typetext(fmt) == formats_pve.TYPETEXT[name], name
            checked += 1
    assert checked == 28  # every property-string parameter but cdrom


def test_proxmoxer_gets_proxmoxs_answer_and_nothing_is_written(single_node):
    """On a real node: the issue's examples are refused with Proxmox's 400 and per-key message, on create and on
    update, and nothing is written; a valid create stores Proxmox's form."""
    px = single_node.api()
    vmid = int(px.cluster.nextid.get())
    upid = px.nodes("n1").qemu.create(vmid=vmid, name="props", memory=64, tags="Web;db,web",
                                      net0="bridge=vmbr0,firewall=yes,model=virtio", ide2="none",
                                      ipconfig0="ip=192.0.2.3/24,gw=192.0.2.1")
    assert Tasks.blocking_status(px, upid, timeout=10)["exitstatus"] == "OK"
    conf = px.nodes("n1").qemu(vmid).config.get()
    mac = conf["net0"].split(",")[0].partition("=")[2]
    assert conf["net0"] == f"virtio={mac},bridge=vmbr0,firewall=1" and mac.startswith("BC:24:11:")
    assert (conf["tags"], conf["ide2"], conf["ipconfig0"]) == ("db;web", "none,media=cdrom",
                                                               "ip=192.0.2.3/24,gw=192.0.2.1")
    bad = {
        "net0": ("virtio=A3:00:00:00:00:01,bridge=vmbr0", TABLE["net[n]"][1][0][1]),
        "net1": ("fastnic,bridge=vmbr0", TABLE["net[n]"][1][1][1].replace("net0.", "net1.")),
        "ipconfig0": ("ip=192.0.2.3", TABLE["ipconfig[n]"][1][0][1]),
        "ipconfig1": ("ip=999.1.1.1/24", TABLE["ipconfig[n]"][1][1][1].replace("ipconfig0.", "ipconfig1.")),
        "ipconfig2": ("ip=192.0.2.3/24,gateway=192.0.2.1", TABLE["ipconfig[n]"][1][2][1]),
    }
    guest = px.nodes("n1").qemu(vmid).config
    for key, (value, message) in bad.items():
        for call, extra in ((guest.put, {}), (guest.post, {}), (px.nodes("n1").qemu.create, {"vmid": vmid + 1})):
            with pytest.raises(ResourceException) as exc:
                call(**extra, **{key: value})
            assert exc.value.status_code == 400, key
            assert exc.value.errors == {key: message}
    assert px.nodes("n1").qemu(vmid).config.get() == conf
    assert vmid + 1 not in {g["vmid"] for g in px.nodes("n1").qemu.get()}
