"""Guest config -> QEMU command line, as one pure function (no file system, no processes).

Follows how Proxmox's qemu-server lays out a guest: a QMP monitor socket, `-daemonize` with a
pid file so the guest outlives the daemon, one controller per disk bus, `bootindex` from `boot`.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass

from engine.volumes import DISK_KEY, drive_props, is_host_path, volume_of
from hypervisor import propstr

DISK_BUSES = ("ide", "sata", "scsi", "virtio")
NET_DEVICES = {"virtio": "virtio-net-pci", "e1000": "e1000", "e1000e": "e1000e", "rtl8139": "rtl8139",
               "vmxnet3": "vmxnet3", "i82551": "i82551", "i82557b": "i82557b", "i82559er": "i82559er",
               "ne2k_pci": "ne2k_pci", "pcnet": "pcnet", "e1000-82540em": "e1000-82540em",
               "e1000-82544gc": "e1000-82544gc", "e1000-82545em": "e1000-82545em"}
SCSI_CONTROLLERS = {"lsi": "lsi", "lsi53c810": "lsi53c810", "virtio-scsi-pci": "virtio-scsi-pci",
                    "virtio-scsi-single": "virtio-scsi-pci", "megasas": "megasas", "pvscsi": "pvscsi"}
VGA_TYPES = {"std": "std", "cirrus": "cirrus", "vmware": "vmware", "qxl": "qxl", "virtio": "virtio", "none": "none"}
CACHE_MODES = ("none", "writethrough", "writeback", "unsafe", "directsync")
AGENT_TYPES = ("virtio", "isa")
BOOLEAN_WORDS = {"1": True, "yes": True, "on": True, "true": True, "0": False, "no": False, "off": False,
                 "false": False}
OVMF_DIR = "/usr/share/OVMF"  # Debian's `ovmf` package (Proxmox: /usr/share/pve-edk2-firmware, the same builds)
NO_EFIDISK = "no efidisk configured! Using temporary efivars disk."


class StartError(Exception):
    """A config that cannot start; the message is what the start task reports."""


@dataclass(frozen=True)
class HostFacts:
    bridges: frozenset[str] = frozenset()
    kvm_available: bool = False


@dataclass(frozen=True)
class Spice:
    """Where a SPICE guest's display listens (a `tls-port` on localhost, reached through Proxmox's SPICE proxy), and
    the node's TLS files for it (None: a plain `port`)."""

    port: int
    cert: str | None = None
    key: str | None = None
    ca: str | None = None


@dataclass(frozen=True)
class RunPaths:
    qmp: str
    pidfile: str
    run_dir: str  # serial sockets and their logs, guest agent socket


VolumeResolver = Callable[[str], tuple[str, str]]  # volid -> (path, format)


def disk_keys(conf: dict) -> list[str]:
    keys = [k for k in conf if re.fullmatch(r"(ide|sata|scsi|virtio)\d+", k)]
    return sorted(keys, key=lambda k: (DISK_BUSES.index(re.match(r"[a-z]+", k).group()), int(re.sub(r"\D", "", k))))


def net_keys(conf: dict) -> list[str]:
    return sorted((k for k in conf if re.fullmatch(r"net\d+", k)), key=lambda k: int(k[3:]))


def volume_keys(conf: dict) -> list[str]:
    """The disks (`disk_keys`) and the EFI vars and TPM state volumes: what clones, snapshots and templates cover."""
    return disk_keys(conf) + [k for k in ("efidisk0", "tpmstate0") if k in conf and DISK_KEY.fullmatch(k)]


def is_true(value: str | None) -> bool:
    return BOOLEAN_WORDS.get(str(value).lower(), False)


def ovmf_files(conf: dict, efidisk: dict | None) -> tuple[str, str]:
    """(OVMF code, OVMF vars template) for a guest and its `efidisk0` properties (qemu-server's `get_ovmf_files`,
    x86_64): `efitype=4m` takes the 4 MiB builds, the Secure Boot one on q35 (which has SMM), and the vars with
    Microsoft's and the distribution's keys enrolled when `pre-enrolled-keys`; otherwise the legacy 2 MiB builds."""
    if efidisk is not None and efidisk.get("efitype") == "4m":
        code = "OVMF_CODE_4M.secboot.fd" if machine_type(conf) == "q35" else "OVMF_CODE_4M.fd"
        template = "OVMF_VARS_4M.ms.fd" if is_true(efidisk.get("pre-enrolled-keys")) else "OVMF_VARS_4M.fd"
    else:
        code, template = "OVMF_CODE.fd", "OVMF_VARS.fd"
    return f"{OVMF_DIR}/{code}", f"{OVMF_DIR}/{template}"


def temporary_vars(paths: RunPaths, vmid: int) -> str:
    """Where a guest with `bios: ovmf` and no `efidisk0` keeps a copy of the vars template while it runs."""
    return f"{paths.run_dir}/{vmid}-ovmf.fd"


def start_warnings(conf: dict) -> list[str]:
    """What a start logs as warnings (qemu-server's `log_warn` while building the command line)."""
    return [NO_EFIDISK] if conf.get("bios") == "ovmf" and not conf.get("efidisk0") else []


def _ovmf(vmid: int, conf: dict, resolve: VolumeResolver, paths: RunPaths) -> list[str]:
    """The OVMF code as read-only pflash and the guest's EFI vars (its `efidisk0`, or a temporary copy of the
    template) as writable pflash (qemu-server's `print_ovmf_drive_commandlines`)."""
    efidisk = drive_props(str(conf["efidisk0"])) if conf.get("efidisk0") else None
    code, _ = ovmf_files(conf, efidisk)
    vars_drive = "if=pflash,unit=1,id=drive-efidisk0"
    if efidisk is not None:
        volume = efidisk.get("file", "")
        if is_host_path(volume):
            if "format" not in efidisk:
                raise StartError("efidisk format must be specified")
            path, fmt = volume, efidisk["format"]
        else:
            path, fmt = resolve(volume)
        vars_drive += f",format={efidisk.get('format', fmt)},file={path}"
    else:
        vars_drive += f",format=raw,file={temporary_vars(paths, vmid)}"
    return ["-drive", f"if=pflash,unit=0,format=raw,readonly=on,file={code}", "-drive", vars_drive]


def boot_order(conf: dict) -> list[str]:
    boot = str(conf.get("boot", ""))
    props = propstr.parse(boot, default_key="legacy")
    if "order" in props:
        return [d for d in props["order"].split(";") if d]
    if conf.get("bootdisk"):
        return [str(conf["bootdisk"])]
    return [k for k in disk_keys(conf) if "media=cdrom" not in str(conf[k])][:1] + \
        [k for k in sorted(conf) if re.fullmatch(r"net\d+", k)][:1]


def _vcpus(conf: dict) -> tuple[int, int, int]:
    cores, sockets = int(conf.get("cores", 1)), int(conf.get("sockets", 1))
    total = cores * sockets
    vcpus = int(conf.get("vcpus") or total)
    if vcpus > total:
        raise StartError(f"MAX {total} vcpus allowed per VM on this node")
    return vcpus, sockets, cores


def machine_type(conf: dict) -> str:
    """Proxmox's versioned machine names map to this QEMU's `pc` and `q35`."""
    machine = str(conf.get("machine", "")).split(",")[0] or "pc"
    if machine.startswith("pc-q35") or machine == "q35":
        return "q35"
    return "pc" if machine.startswith("pc") else machine


def memory_mib(conf: dict) -> int:
    value = str(conf.get("memory", "512"))
    return int(propstr.parse(value, default_key="current").get("current", "512"))


# Fixed PCI slots on the root bus for the devices gpve hot-plugs (a subset of qemu-server's PCI address map): a
# device plugged into a running guest gets the slot a cold start gives it, so its migration target (started from
# the config) lays its devices out as the source does. Others take the first free slot, as QEMU chooses.
PCI_SLOTS = {"scsihw0": 5, "ahci0": 7, "qga0": 8, **{f"virtio{i}": 10 + i for i in range(6)},
             **{f"net{i}": 18 + i for i in range(6)}}


def _addr(device_id: str) -> str:
    slot = PCI_SLOTS.get(device_id)
    return "" if slot is None else f",addr={slot:#x}"


def rng_options(value: str) -> list[str]:
    """`rng0` (`[source=]/dev/urandom|/dev/random|/dev/hwrng[,max_bytes=N][,period=MS]`) as qemu-server's
    `PVE/QemuServer/RNG.pm` starts it: an `rng-random` backend on the host's source and a `virtio-rng-pci` device
    that may read `max_bytes` (default 1024, 0: no limit) per `period` ms (default 1000)."""
    props = propstr.parse(value, default_key="source")
    source = props.get("source", "")
    if source not in ("/dev/urandom", "/dev/random", "/dev/hwrng"):
        raise StartError(f"rng0: invalid source '{source}'")
    if source == "/dev/hwrng" and not os.path.exists(source):
        raise StartError(f"Cannot start VM with passed-through RNG device: '{source}' does not exist!")
    max_bytes = int(props.get("max_bytes", 1024))
    limit = f",max-bytes={max_bytes},period={int(props.get('period', 1000))}" if max_bytes else ""
    return ["-object", f"rng-random,filename={source},id=rng0", "-device", f"virtio-rng-pci,rng=rng0{limit}"]


def drive_option(key: str, value: str, resolve: VolumeResolver) -> str:
    """The `-drive` value of disk `key` (also what HMP `drive_add` takes to hot-plug it)."""
    props = propstr.parse(value, default_key="file")
    volume = volume_of(value)  # the same file every check looked at (engine/volumes.py)
    cdrom = props.get("media") == "cdrom"
    drive = [f"if=none,id=drive-{key}"]
    if cdrom and volume in ("none", "cdrom", ""):
        drive.append("media=cdrom")
    else:
        path, fmt = resolve(volume) if not volume.startswith("/") else (volume, props.get("format", "raw"))
        drive.append(f"file={path}")
        drive.append(f"format={props.get('format', fmt)}")
        if cdrom:
            drive.append("media=cdrom,readonly=on")
    cache = props.get("cache")
    if cache:
        if cache not in CACHE_MODES:
            raise StartError(f"{key}: unknown cache mode '{cache}'")
        drive.append(f"cache={cache}")
    return ",".join(drive)


def drive_device(key: str, value: str, bootindex: dict[str, int], scsihw: str | None = None) -> str:
    """The `-device` value of disk `key` (also what `device_add` takes); SCSI disks address their controller
    (`scsihw`) as qemu-server's print_drivedevice_full does: LSI and PVSCSI by SCSI id, the others by LUN."""
    bus = re.match(r"[a-z]+", key).group()  # type: ignore[union-attr]
    index = int(key[len(bus):])
    cdrom = propstr.parse(value, default_key="file").get("media") == "cdrom"
    boot = f",bootindex={bootindex[key]}" if key in bootindex else ""
    ide_kind = "ide-cd" if cdrom else "ide-hd"
    if bus == "virtio":
        return f"virtio-blk-pci,drive=drive-{key},id={key}{_addr(key)}{boot}"
    if bus == "scsi":
        kind = "scsi-cd" if cdrom else "scsi-hd"
        if str(scsihw or "lsi").startswith("lsi") or scsihw == "pvscsi":
            return f"{kind},bus=scsihw0.0,scsi-id={index},drive=drive-{key},id={key}{boot}"
        return f"{kind},bus=scsihw0.0,channel=0,scsi-id=0,lun={index},drive=drive-{key},id={key}{boot}"
    if bus == "sata":
        return f"{ide_kind},bus=ahci0.{index},drive=drive-{key},id={key}{boot}"
    return f"{ide_kind},bus=ide.{index // 2},unit={index % 2},drive=drive-{key},id={key}{boot}"


def scsi_controller(conf: dict) -> str:
    """The `-device` value of the SCSI controller `scsihw0` (qemu-server's `scsihw`, default `lsi`)."""
    controller = SCSI_CONTROLLERS.get(str(conf.get("scsihw", "lsi")))
    if controller is None:
        raise StartError(f"scsihw: unknown controller '{conf.get('scsihw')}'")
    return f"{controller},id=scsihw0{_addr('scsihw0')}"


def net_options(key: str, value: str, host: HostFacts, vmid: int, bootindex: dict[str, int],
                run_dir: str) -> tuple[str, str]:
    """The `-netdev` and `-device` values of NIC `key` (also what `netdev_add` and `device_add` take)."""
    props = propstr.parse(value)
    model = next((m for m in props if m in NET_DEVICES), props.get("model"))
    if model not in NET_DEVICES:
        raise StartError(f"{key}: unknown network model '{model}'")
    mac = props.get(model) if props.get(model) not in (None, "1") else props.get("macaddr")
    index = int(key[3:])
    bridge = props.get("bridge")
    if bridge:
        if bridge not in host.bridges:
            raise StartError(f"bridge '{bridge}' does not exist")
        ifname = f"tap{vmid}i{index}"
        netdev = f"tap,id={key},ifname={ifname},script={run_dir}/{ifname}.up,downscript=no"
    else:
        netdev = f"user,id={key}"
    device = f"{NET_DEVICES[model]},netdev={key},id={key}"
    if mac:
        device += f",mac={mac}"
    device += _addr(key)
    if key in bootindex:
        device += f",bootindex={bootindex[key]}"
    return netdev, device


def boot_indexes(conf: dict) -> dict[str, int]:
    return {dev: 100 + i for i, dev in enumerate(boot_order(conf))}


def agent_settings(conf: dict) -> dict[str, str]:
    """The `agent` property string as Proxmox's `parse_guest_agent` reads it: `{}` unless the agent is enabled,
    else `{"enabled": "1", "type": "virtio" | "isa", ...}` (`fstrim_cloned_disks`, `freeze-fs` as given). A value
    that does not parse counts as disabled, as in Proxmox (which warns)."""
    if conf.get("agent") is None:
        return {}
    props = propstr.parse(str(conf["agent"]), default_key="enabled")
    enabled = props.get("enabled", "0").lower()
    if enabled not in BOOLEAN_WORDS or not BOOLEAN_WORDS[enabled] or props.get("type", "virtio") not in AGENT_TYPES:
        return {}
    return {**props, "enabled": "1", "type": props.get("type", "virtio")}


def agent_socket(run_dir: str, vmid: int) -> str:
    """Where QEMU listens for the guest agent's host side (Proxmox: /var/run/qemu-server/VMID.qga)."""
    return f"{run_dir}/{vmid}.qga"


def vnc_socket(run_dir: str, vmid: int) -> str:
    """The guest's VNC display (Proxmox: /var/run/qemu-server/VMID.vnc); QEMU asks a password, set over QMP when a
    console connects (hypervisor/console.py)."""
    return f"{run_dir}/{vmid}.vnc"


def serial_socket(run_dir: str, vmid: int, key: str) -> str:
    """The host side of `serialN: socket` (Proxmox: /var/run/qemu-server/VMID.serialN); its output is also logged to
    the same path + `.log`."""
    return f"{run_dir}/{vmid}.{key}"


def has_display(conf: dict) -> bool:
    """Whether the guest gets a VNC display: a `vga` other than `none` and `serialN` (qemu-server's
    config_to_command)."""
    vga = propstr.parse(str(conf.get("vga", "std")), default_key="type").get("type", "std")
    return vga != "none" and not vga.startswith("serial")


def spice_heads(conf: dict) -> int:
    """0 unless the guest's `vga` is qxl (qemu-server's vga_conf_has_spice): then its number of heads (qxl2: 2)."""
    vga = propstr.parse(str(conf.get("vga", "std")), default_key="type").get("type", "std")
    m = re.fullmatch(r"qxl([234])?", vga)
    return int(m.group(1) or 1) if m else 0


def _spice(spice: Spice | None) -> list[str]:
    """The SPICE display and its agent channel (qemu-server's config_to_command for qxl)."""
    if spice is None:
        raise StartError("SPICE display needs a port")
    opts = f"port={spice.port},addr=127.0.0.1,seamless-migration=on"
    if spice.cert and spice.key:
        opts = (f"tls-port={spice.port},addr=127.0.0.1,tls-ciphers=HIGH,seamless-migration=on,"
                f"x509-cert-file={spice.cert},x509-key-file={spice.key}")
        if spice.ca:
            opts += f",x509-cacert-file={spice.ca}"
    return ["-device", "virtio-serial,id=spice", "-chardev", "spicevmc,id=vdagent,name=vdagent",
            "-device", "virtserialport,chardev=vdagent,name=com.redhat.spice.0", "-spice", opts]


def _agent(vmid: int, conf: dict, run_dir: str) -> list[str]:
    """The guest agent's channel (qemu-server's config_to_command): a socket chardev, and a virtio-serial port named
    `org.qemu.guest_agent.0` (type virtio) or an ISA serial port (type isa) for it."""
    agent = agent_settings(conf)
    if not agent:
        return []
    argv = ["-chardev", f"socket,path={agent_socket(run_dir, vmid)},server=on,wait=off,id=qga0"]
    if agent["type"] == "isa":
        return argv + ["-device", "isa-serial,chardev=qga0"]
    return argv + ["-device", f"virtio-serial,id=qga0{_addr('qga0')}", "-device",
                   "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0"]


def tap_script(value: str) -> str:
    """The ifup script QEMU runs for a bridged NIC: attach the tap, set VLAN tag and rate limit."""
    props = propstr.parse(value)
    bridge = props["bridge"]
    lines = ["#!/bin/sh", "set -e", f"ip link set \"$1\" master {shlex.quote(bridge)} up"]
    if props.get("tag"):
        lines.append(f"bridge vlan add dev \"$1\" vid {int(props['tag'])} pvid untagged")
    if props.get("rate"):
        kbit = int(float(props["rate"]) * 8 * 1024)  # rate is MB/s
        lines.append(f"tc qdisc replace dev \"$1\" root tbf rate {kbit}kbit burst 256kb latency 50ms")
    return "\n".join(lines) + "\n"


def build_argv(vmid: int, conf: dict, resolve: VolumeResolver, host: HostFacts, paths: RunPaths,
               qemu: str = "qemu-system-x86_64", loadvm: str | None = None, incoming: str | None = None,
               paused: bool = False, spice: Spice | None = None) -> list[str]:
    """The full QEMU command line for `conf`; raises StartError for configs that cannot run. `spice`: where a qxl
    guest's SPICE display listens (picked by the driver when it starts one)."""
    kvm = int(conf.get("kvm", 1))
    if kvm and not host.kvm_available:
        raise StartError("KVM virtualisation configured, but not available. Either disable in VM configuration "
                         "or enable in BIOS.")
    vcpus, sockets, cores = _vcpus(conf)
    memory = memory_mib(conf)
    name = str(conf.get("name", f"VM{vmid}"))
    argv = [qemu, "-name", f"{name},debug-threads=on", "-no-user-config", "-nodefaults",
            "-chardev", f"socket,id=qmp,path={paths.qmp},server=on,wait=off", "-mon", "chardev=qmp,mode=control",
            "-pidfile", paths.pidfile, "-daemonize", "-display", "none",
            "-accel", "kvm" if kvm else "tcg",
            "-smp", f"{vcpus},sockets={sockets},cores={cores},maxcpus={sockets * cores}",
            "-m", str(memory)]
    argv += ["-machine", f"type={machine_type(conf)}"]
    cpu = propstr.parse(str(conf.get("cpu", "")), default_key="cputype").get("cputype")
    if cpu:
        if cpu == "host" and not kvm:
            raise StartError("CPU type 'host' requires KVM")
        argv += ["-cpu", cpu]
    elif not kvm:
        argv += ["-cpu", "qemu64"]
    if conf.get("bios") == "ovmf":
        argv += _ovmf(vmid, conf, resolve, paths)
    vga = propstr.parse(str(conf.get("vga", "std")), default_key="type").get("type", "std")
    if vga.startswith("serial"):
        argv += ["-vga", "none"]
    elif vga in VGA_TYPES:
        argv += ["-vga", VGA_TYPES[vga]]
    else:
        raise StartError(f"vga: unknown type '{vga}'")
    if has_display(conf):
        argv += ["-vnc", f"unix:{vnc_socket(paths.run_dir, vmid)},password=on"]
    if spice_heads(conf):
        argv += _spice(spice)
    if conf.get("smbios1"):
        argv += ["-smbios", "type=1," + str(conf["smbios1"])]
    if conf.get("vmgenid") and conf["vmgenid"] != "0":
        argv += ["-device", f"vmgenid,guid={conf['vmgenid']}"]
    if str(conf.get("ostype", "")).startswith("w"):
        argv += ["-rtc", "base=localtime"]
    if int(conf.get("balloon", 1)) != 0:
        argv += ["-device", "virtio-balloon-pci,id=balloon0"]
    if conf.get("rng0"):
        argv += rng_options(str(conf["rng0"]))
    for key in sorted(k for k in conf if re.fullmatch(r"serial\d", k)):
        value = str(conf[key])
        if value == "socket":
            path = serial_socket(paths.run_dir, vmid, key)
            backend = f"socket,id={key},path={path},server=on,wait=off,logfile={path}.log"
        elif value.startswith("/dev/"):
            backend = f"tty,id={key},path={value}"
        else:
            raise StartError(f"{key}: invalid value '{value}'")
        argv += ["-chardev", backend, "-device", f"isa-serial,chardev={key}"]
    argv += _agent(vmid, conf, paths.run_dir)  # after the serial ports: an isa agent port comes after them
    bootindex = boot_indexes(conf)
    disks = disk_keys(conf)
    buses = {re.match(r"[a-z]+", k).group() for k in disks}  # type: ignore[union-attr]
    if "scsi" in buses:
        argv += ["-device", scsi_controller(conf)]
    if "sata" in buses:
        argv += ["-device", f"ahci,id=ahci0{_addr('ahci0')}"]
    for key in disks:
        argv += ["-drive", drive_option(key, str(conf[key]), resolve),
                 "-device", drive_device(key, str(conf[key]), bootindex, conf.get("scsihw"))]
    for key in net_keys(conf):
        netdev, device = net_options(key, str(conf[key]), host, vmid, bootindex, paths.run_dir)
        argv += ["-netdev", netdev, "-device", device]
    if loadvm:
        argv += ["-loadvm", loadvm]
    if incoming:  # the target of a live migration waits for the guest's state here
        argv += ["-incoming", incoming]
    if paused:  # ... and stays paused after it arrived, until told to go on
        argv += ["-S"]
    if conf.get("args"):
        argv += shlex.split(str(conf["args"]))
    return argv
