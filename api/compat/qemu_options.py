# ruff: noqa: E741 - one-letter type names keep the table readable
"""The guest config keys Proxmox's `qemu-server` accepts, with their types and limits.

Property strings (`net0`, `scsi0`, ...) name their format: validation checks them against it and hands
on the value as Proxmox stores it (api/propstrings.py); the hypervisor layer parses them when it builds a
QEMU command line.
"""

from __future__ import annotations

from api.schema import Param

S, I, N, B = "string", "integer", "number", "boolean"
OSTYPES = ("other", "wxp", "w2k", "w2k3", "w2k8", "wvista", "win7", "win8", "win10", "win11", "l24", "l26", "solaris")
SCSIHW = ("lsi", "lsi53c810", "virtio-scsi-pci", "virtio-scsi-single", "megasas", "pvscsi")
KEYBOARDS = ("de", "de-ch", "da", "en-gb", "en-us", "es", "fi", "fr", "fr-be", "fr-ca", "fr-ch", "hu", "is", "it",
             "ja", "lt", "mk", "nl", "no", "pl", "pt", "pt-br", "sv", "sl", "tr")
LOCKS = ("backup", "clone", "create", "migrate", "rollback", "snapshot", "snapshot-delete", "suspending",
         "suspended")

CONFIG_PARAMS: list[Param] = [
    Param("acpi", B), Param("allow-ksm", B), Param("arch", S, enum=("x86_64", "aarch64")), Param("args", S),
    Param("autostart", B), Param("balloon", I, minimum=0), Param("bios", S, enum=("seabios", "ovmf")),
    Param("bootdisk", S, pattern=r"(ide|sata|scsi|virtio)\d+", format="pve-qm-bootdisk"),
    Param("cipassword", S), Param("citype", S, enum=("configdrive2", "nocloud", "opennebula")),
    Param("ciupgrade", B), Param("ciuser", S), Param("cores", I, minimum=1),
    Param("cpulimit", N, minimum=0, maximum=128), Param("cpuunits", I, minimum=1, maximum=262144),
    Param("description", S, max_length=8192), Param("freeze", B), Param("hugepages", S, enum=("any", "2", "1024")),
    Param("keephugepages", B), Param("keyboard", S, enum=KEYBOARDS), Param("kvm", B), Param("localtime", B),
    Param("lock", S, enum=LOCKS), Param("migrate_downtime", N, minimum=0), Param("migrate_speed", I, minimum=0),
    Param("name", S, format="dns-name"), Param("numa", B), Param("onboot", B), Param("ostype", S, enum=OSTYPES),
    Param("parallel[n]", S, max_index=2, pattern=r"/dev/parport\d+|/dev/usb/lp\d+"), Param("protection", B),
    Param("reboot", B), Param("scsihw", S, enum=SCSIHW), Param("searchdomain", S),
    Param("serial[n]", S, max_index=3, pattern=r"(/dev/.+|socket)"), Param("shares", I, minimum=0, maximum=50000),
    Param("smp", I, minimum=1), Param("sockets", I, minimum=1),
    Param("startdate", S, pattern=r"(now|\d{4}-\d{1,2}-\d{1,2}(T\d{1,2}:\d{1,2}:\d{1,2})?)"),
    Param("tablet", B), Param("tdf", B), Param("template", B), Param("vcpus", I, minimum=1),
    Param("vmgenid", S, pattern=r"(?:[a-fA-F0-9]{8}(?:-[a-fA-F0-9]{4}){3}-[a-fA-F0-9]{12}|[01])"),
    Param("vmstatestorage", S, format="pve-storage-id"),
    # property strings and the other named formats Proxmox checks (api/propstrings.py)
    Param("affinity", S, format="pve-cpuset"), Param("agent", S, format="pve-qm-agent"),
    Param("amd-sev", S, format="pve-qemu-sev-fmt"), Param("audio0", S, format="pve-qm-audio"),
    Param("boot", S, format="pve-qm-boot"), Param("cdrom", S, format="pve-qm-ide"),
    Param("cicustom", S, format="pve-qm-cicustom"), Param("cpu", S, format="pve-vm-cpu-conf"),
    Param("efidisk0", S, format="pve-qm-efidisk-with-alloc"), Param("hookscript", S, format="pve-volume-id"),
    Param("hostpci[n]", S, max_index=15, format="pve-qm-hostpci"), Param("hotplug", S, format="pve-hotplug-features"),
    Param("ide[n]", S, max_index=3, format="pve-qm-ide-with-alloc"), Param("intel-tdx", S, format="pve-qemu-tdx-fmt"),
    Param("ipconfig[n]", S, max_index=31, format="pve-qm-ipconfig"), Param("ivshmem", S, format="pve-qm-ivshmem"),
    Param("machine", S, format="pve-qemu-machine-fmt"),
    Param("memory", S, pattern=r"(current=)?\d{1,7}", format="pve-qm-memory"),  # gpve's bound: at most 7 digits
    Param("nameserver", S, format="address-list"), Param("net[n]", S, max_index=31, format="pve-qm-net"),
    Param("numa[n]", S, max_index=7, format="pve-qm-numanode"), Param("rng0", S, format="pve-qm-rng"),
    Param("sata[n]", S, max_index=5, format="pve-qm-sata-with-alloc"),
    Param("scsi[n]", S, max_index=30, format="pve-qm-scsi-with-alloc"),
    Param("smbios1", S, max_length=512, format="pve-qm-smbios1"),
    Param("spice_enhancements", S, format="pve-qm-spice-enhancements"),
    Param("sshkeys", S, format="urlencoded"), Param("startup", S, format="pve-startup-order"),
    Param("tags", S, format="pve-tag-list"), Param("tpmstate0", S, format="pve-qm-tpmstate-with-alloc"),
    Param("unused[n]", S, max_index=255, format="pve-qm-unused"), Param("usb[n]", S, max_index=14, format="pve-qm-usb"),
    Param("vga", S, format="pve-qm-vga"), Param("virtio[n]", S, max_index=15, format="pve-qm-virtio-with-alloc"),
    Param("virtiofs[n]", S, max_index=9, format="pve-qm-virtiofs"), Param("watchdog", S, format="pve-qm-watchdog"),
]

# Parameters of the create call that are not config keys.
CREATE_ONLY_PARAMS: list[Param] = [
    Param("start", B, default=0), Param("pool", S, format="pve-poolid"), Param("storage", S, format="pve-storage-id"),
    Param("archive", S, max_length=255), Param("force", B), Param("unique", B), Param("live-restore", B),
    Param("bwlimit", I, minimum=0), Param("import-working-storage", S, format="pve-storage-id"),
    Param("ha-managed", B),
]
CREATE_ONLY = {p.name for p in CREATE_ONLY_PARAMS}
