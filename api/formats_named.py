"""Proxmox's named property-string formats that its API schema names but does not spell out.

Proxmox's published API schema expands a format written inline in a parameter (`net[n]`, disks, `agent`, ...:
those are generated into api/formats_pve.py), but gives only the name of a format registered on its own
(`format => 'pve-qm-ipconfig'`). These are transcribed here from qemu-server, with the keys Proxmox VE 9.1
documents for them (its schema's `typetext`); the shape is pve-common's format hashes, as in formats_pve.
Checks that are code rather than a schema (`validate_vm_cpu_conf`) live in api/propstrings.py.

Sources: qemu-server `PVE/QemuServer/Network.pm` (`$ipconfig_fmt`), `PVE/QemuServer.pm` (`$boot_fmt`,
`$smbios1_fmt`, `$watchdog_fmt`, `$cicustom_fmt`), `PVE/QemuServer/CPUConfig.pm` (`$cpu_fmt`, `$sev_fmt`,
`$tdx_fmt`, the CPU model list), `PVE/QemuServer/PCI.pm` (`$hostpci_fmt`), `PVE/QemuServer/RNG.pm` (`$rng_fmt`).
"""

from __future__ import annotations

_BASE64 = r"[A-Za-z0-9+\/]+={0,2}"
_PCI = r"(?:[a-f0-9]{4,}:)?[a-f0-9]{2}:[a-f0-9]{2}(?:\.[a-f0-9])?"
_HEX_ID = r"^0x[0-9a-fA-F]{4}$"
_VOLUME = {"type": "string", "optional": 1, "format": "pve-volume-id", "format_description": "volume"}

# CPU models a VM may name (CPUConfig.pm's list when QEMU ships none, both architectures, plus the host's)
CPU_MODELS = (
    "486", "pentium", "pentium2", "pentium3", "coreduo", "core2duo", "Conroe", "Penryn", "Nehalem", "Nehalem-IBRS",
    "Westmere", "Westmere-IBRS", "SandyBridge", "SandyBridge-IBRS", "IvyBridge", "IvyBridge-IBRS", "Haswell",
    "Haswell-IBRS", "Haswell-noTSX", "Haswell-noTSX-IBRS", "Broadwell", "Broadwell-IBRS", "Broadwell-noTSX",
    "Broadwell-noTSX-IBRS", "Skylake-Client", "Skylake-Client-IBRS", "Skylake-Client-noTSX-IBRS",
    "Skylake-Client-v4", "Skylake-Server", "Skylake-Server-IBRS", "Skylake-Server-noTSX-IBRS", "Skylake-Server-v4",
    "Skylake-Server-v5", "Cascadelake-Server", "Cascadelake-Server-v2", "Cascadelake-Server-noTSX",
    "Cascadelake-Server-v4", "Cascadelake-Server-v5", "Cooperlake", "Cooperlake-v2", "KnightsMill",
    "Icelake-Client", "Icelake-Client-noTSX", "Icelake-Server", "Icelake-Server-noTSX", "Icelake-Server-v3",
    "Icelake-Server-v4", "Icelake-Server-v5", "Icelake-Server-v6", "Icelake-Server-v7", "SapphireRapids",
    "SapphireRapids-v2", "SapphireRapids-v3", "SapphireRapids-v4", "GraniteRapids", "GraniteRapids-v2",
    "GraniteRapids-v3", "SierraForest", "SierraForest-v2", "SierraForest-v3", "ClearwaterForest", "athlon",
    "phenom", "Opteron_G1", "Opteron_G2", "Opteron_G3", "Opteron_G4", "Opteron_G5", "EPYC", "EPYC-IBPB", "EPYC-v3",
    "EPYC-v4", "EPYC-v5", "EPYC-Rome", "EPYC-Rome-v2", "EPYC-Rome-v3", "EPYC-Rome-v4", "EPYC-Rome-v5",
    "EPYC-Milan", "EPYC-Milan-v2", "EPYC-Milan-v3", "EPYC-Genoa", "EPYC-Genoa-v2", "EPYC-Turin", "kvm32", "kvm64",
    "qemu32", "qemu64", "max", "host", "a64fx", "cortex-a35", "cortex-a53", "cortex-a55", "cortex-a57",
    "cortex-a710", "cortex-a72", "cortex-a76", "neoverse-n1", "neoverse-n2", "neoverse-v1",
)
BUILTIN_CPU_MODELS = ("x86-64-v2", "x86-64-v2-AES", "x86-64-v3", "x86-64-v4")
# CPUFlags.pm: the flags a VM's own config may set (custom models may set any)
VM_CPU_FLAGS = ("nested-virt", "md-clear", "pcid", "spec-ctrl", "ssbd", "ibpb", "virt-ssbd", "amd-ssbd", "amd-no-ssb",
                "pdpe1gb", "hv-tlbflush", "hv-evmcs", "aes")
CPU_FLAG_ANY = r"([+-])([a-zA-Z0-9\-_\.]+)"

FORMATS: dict[str, dict[str, dict]] = {
    "pve-qm-ipconfig": {
        "ip": {"type": "string", "format": "pve-ipv4-config", "format_description": "IPv4Format/CIDR",
               "optional": 1, "default": "dhcp"},
        "gw": {"type": "string", "format": "ipv4", "format_description": "GatewayIPv4", "optional": 1,
               "requires": "ip"},
        "ip6": {"type": "string", "format": "pve-ipv6-config", "format_description": "IPv6Format/CIDR",
                "optional": 1, "default": "dhcp"},
        "gw6": {"type": "string", "format": "ipv6", "format_description": "GatewayIPv6", "optional": 1,
                "requires": "ip6"},
    },
    "pve-qm-boot": {
        "legacy": {"type": "string", "optional": 1, "default_key": 1, "pattern": "[acdn]{1,4}",
                   "format_description": "[acdn]{1,4}", "default": "cdn"},
        "order": {"type": "string", "optional": 1, "format": "pve-qm-bootdev-list",
                  "format_description": "device[;device...]"},
    },
    "pve-vm-cpu-conf": {
        "cputype": {"type": "string", "format_description": "string", "default": "kvm64", "default_key": 1,
                    "optional": 1},
        "reported-model": {"type": "string", "enum": sorted(CPU_MODELS, key=str.lower), "default": "kvm64",
                           "optional": 1},
        "hidden": {"type": "boolean", "optional": 1, "default": 0},
        "hv-vendor-id": {"type": "string", "pattern": "[a-zA-Z0-9]{1,12}", "format_description": "vendor-id",
                         "optional": 1},
        "flags": {"type": "string", "pattern": f"{CPU_FLAG_ANY}(;{CPU_FLAG_ANY})*",
                  "format_description": "+FLAG[;-FLAG...]", "optional": 1},
        "guest-phys-bits": {"type": "integer", "minimum": 32, "maximum": 64, "optional": 1},
        "phys-bits": {"type": "string", "format": "pve-phys-bits", "format_description": "8-64|host", "optional": 1},
    },
    "pve-qm-smbios1": {
        "uuid": {"type": "string", "pattern": "[a-fA-F0-9]{8}(?:-[a-fA-F0-9]{4}){3}-[a-fA-F0-9]{12}",
                 "format_description": "UUID", "optional": 1},
        **{key: {"type": "string", "pattern": _BASE64, "format_description": "Base64 encoded string", "optional": 1}
           for key in ("version", "serial", "manufacturer", "product", "sku", "family")},
        "base64": {"type": "boolean", "optional": 1},
    },
    "pve-qm-hostpci": {
        "host": {"type": "string", "default_key": 1, "optional": 1, "pattern": f"{_PCI}(;{_PCI})*",
                 "format_description": "HOSTPCIID[;HOSTPCIID2...]"},
        "mapping": {"type": "string", "optional": 1, "format": "pve-configid", "format_description": "mapping-id"},
        "rombar": {"type": "boolean", "optional": 1, "default": 1},
        "romfile": {"type": "string", "pattern": "[^,;]+", "format_description": "string", "optional": 1},
        "pcie": {"type": "boolean", "optional": 1, "default": 0},
        "x-vga": {"type": "boolean", "optional": 1, "default": 0},
        "legacy-igd": {"type": "boolean", "optional": 1, "default": 0},
        "mdev": {"type": "string", "pattern": r"[^/\.:]+", "format_description": "string", "optional": 1},
        **{key: {"type": "string", "pattern": _HEX_ID, "format_description": "hex id", "optional": 1}
           for key in ("vendor-id", "device-id", "sub-vendor-id", "sub-device-id")},
        "driver": {"type": "string", "optional": 1, "default": "vfio", "enum": ["vfio", "keep"]},
    },
    "pve-qm-rng": {
        "source": {"type": "string", "enum": ["/dev/urandom", "/dev/random", "/dev/hwrng"], "default_key": 1},
        "max_bytes": {"type": "integer", "optional": 1, "default": 1024},
        "period": {"type": "integer", "optional": 1, "default": 1000},
    },
    "pve-qemu-sev-fmt": {
        "type": {"type": "string", "default_key": 1, "format_description": "sev-type", "enum": ["std", "es", "snp"],
                 "maxLength": 3},
        "no-debug": {"type": "boolean", "default": 0, "optional": 1},
        "no-key-sharing": {"type": "boolean", "default": 0, "optional": 1},
        "allow-smt": {"type": "boolean", "default": 1, "optional": 1},
        "kernel-hashes": {"type": "boolean", "default": 0, "optional": 1},
    },
    "pve-qemu-tdx-fmt": {
        "type": {"type": "string", "default_key": 1, "format_description": "tdx-type", "enum": ["tdx"]},
        "attestation": {"type": "boolean", "default": 1},
        "vsock-cid": {"type": "integer", "minimum": 2, "default": 2, "optional": 1},
        "vsock-port": {"type": "integer", "minimum": 0, "default": 4050, "optional": 1},
    },
    "pve-qm-cicustom": {key: dict(_VOLUME) for key in ("meta", "network", "user", "vendor")},
    "pve-qm-watchdog": {
        "model": {"type": "string", "default_key": 1, "enum": ["i6300esb", "ib700"], "default": "i6300esb",
                  "optional": 1},
        "action": {"type": "string", "enum": ["reset", "shutdown", "poweroff", "pause", "debug", "none"],
                   "optional": 1},
    },
}
