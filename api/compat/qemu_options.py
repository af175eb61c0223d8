# ruff: noqa: E741 - one-letter type names keep the table readable
"""The guest config keys Proxmox's `qemu-server` accepts, with their types and limits.

Property strings (`net0`, `scsi0`, ...) are checked as strings here; the hypervisor layer parses
them when it builds a QEMU command line.
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
    Param("acpi", B), Param("affinity", S), Param("agent", S), Param("allow-ksm", B), Param("amd-sev", S),
    Param("arch", S, enum=("x86_64", "aarch64")), Param("args", S), Param("audio0", S), Param("autostart", B),
    Param("balloon", I, minimum=0), Param("bios", S, enum=("seabios", "ovmf")), Param("boot", S),
    Param("bootdisk", S, pattern=r"(ide|sata|scsi|virtio)\d+"), Param("cdrom", S), Param("cicustom", S),
    Param("cipassword", S), Param("citype", S, enum=("configdrive2", "nocloud", "opennebula")),
    Param("ciupgrade", B), Param("ciuser", S), Param("cores", I, minimum=1), Param("cpu", S),
    Param("cpulimit", N, minimum=0, maximum=128), Param("cpuunits", I, minimum=1, maximum=262144),
    Param("description", S, max_length=8192), Param("efidisk0", S), Param("freeze", B),
    Param("hookscript", S), Param("hostpci[n]", S, max_index=15), Param("hotplug", S),
    Param("hugepages", S, enum=("any", "2", "1024")), Param("ide[n]", S, max_index=3), Param("intel-tdx", S),
    Param("ipconfig[n]", S, max_index=31), Param("ivshmem", S), Param("keephugepages", B),
    Param("keyboard", S, enum=KEYBOARDS), Param("kvm", B), Param("localtime", B), Param("lock", S, enum=LOCKS),
    Param("machine", S), Param("memory", S, pattern=r"(current=)?\d{1,7}"), Param("migrate_downtime", N, minimum=0),
    Param("migrate_speed", I, minimum=0), Param("name", S, format="dns-name"), Param("nameserver", S),
    Param("net[n]", S, max_index=31), Param("numa", B), Param("numa[n]", S, max_index=7), Param("onboot", B),
    Param("ostype", S, enum=OSTYPES), Param("parallel[n]", S, max_index=2, pattern=r"/dev/parport\d+|/dev/usb/lp\d+"),
    Param("protection", B), Param("reboot", B), Param("rng0", S), Param("sata[n]", S, max_index=5),
    Param("scsi[n]", S, max_index=30), Param("scsihw", S, enum=SCSIHW), Param("searchdomain", S),
    Param("serial[n]", S, max_index=3, pattern=r"(/dev/.+|socket)"), Param("shares", I, minimum=0, maximum=50000),
    Param("smbios1", S, max_length=512), Param("smp", I, minimum=1), Param("sockets", I, minimum=1),
    Param("spice_enhancements", S), Param("sshkeys", S),
    Param("startdate", S, pattern=r"(now|\d{4}-\d{1,2}-\d{1,2}(T\d{1,2}:\d{1,2}:\d{1,2})?)"),
    Param("startup", S), Param("tablet", B), Param("tags", S, format="pve-tag-list"), Param("tdf", B),
    Param("template", B), Param("tpmstate0", S), Param("unused[n]", S, max_index=255), Param("usb[n]", S, max_index=14),
    Param("vcpus", I, minimum=1), Param("vga", S), Param("virtio[n]", S, max_index=15),
    Param("virtiofs[n]", S, max_index=9),
    Param("vmgenid", S, pattern=r"(?:[a-fA-F0-9]{8}(?:-[a-fA-F0-9]{4}){3}-[a-fA-F0-9]{12}|[01])"),
    Param("vmstatestorage", S, format="pve-storage-id"), Param("watchdog", S),
]

# Parameters of the create call that are not config keys.
CREATE_ONLY_PARAMS: list[Param] = [
    Param("start", B, default=0), Param("pool", S, format="pve-poolid"), Param("storage", S, format="pve-storage-id"),
    Param("archive", S, max_length=255), Param("force", B), Param("unique", B), Param("live-restore", B),
    Param("bwlimit", I, minimum=0), Param("import-working-storage", S, format="pve-storage-id"),
    Param("ha-managed", B),
]
CREATE_ONLY = {p.name for p in CREATE_ONLY_PARAMS}
