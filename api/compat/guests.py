"""How a guest shows in lists: the fields Proxmox reports for a guest, derived from its config."""

from __future__ import annotations

import re

DISK_KEYS = re.compile(r"(scsi|virtio|sata|ide)\d+")
SIZE_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def memory_mib(conf: dict) -> int:
    value = str(conf.get("memory", "512")).removeprefix("current=").split(",")[0]
    return int(value) if value.isdigit() else 512


def cpus(conf: dict) -> int:
    return int(conf.get("vcpus") or int(conf.get("cores", 1)) * int(conf.get("sockets", 1)))


def disk_bytes(conf: dict) -> int:
    """The boot disk's size: the first disk that has a `size=`, in Proxmox's bus order."""
    for key in sorted((k for k in conf if DISK_KEYS.fullmatch(k)), key=_bus_order):
        value = str(conf[key])
        if "media=cdrom" in value:
            continue
        m = re.search(r"(?:^|,)size=(\d+(?:\.\d+)?)([KMGT]?)", value)
        if m:
            return int(float(m.group(1)) * SIZE_UNITS.get(m.group(2), 1))
    return 0


def _bus_order(key: str) -> tuple[int, int]:
    bus, idx = re.fullmatch(r"([a-z]+)(\d+)", key).groups()  # type: ignore[union-attr]
    return ["scsi", "virtio", "sata", "ide"].index(bus), int(idx)


def guest_maxima(conf: dict) -> dict:
    """What a guest's config allows it: `maxcpu` (vCPUs), `maxmem` and `maxdisk` (its boot disk) in bytes."""
    return {"maxcpu": cpus(conf), "maxmem": memory_mib(conf) * (1 << 20), "maxdisk": disk_bytes(conf)}


def sampled(sampler, guest: dict) -> dict:
    """A guest's live `cpu`, `mem`, `netin`, `netout`, `diskread`, `diskwrite`, `uptime` from this node's sampler
    (hypervisor/sampler.py), if it runs here; else nothing (its row keeps zeros)."""
    if sampler is None or guest.get("status") != "running" or guest["node"] != sampler.node.name:
        return {}
    return sampler.guest(guest["vmid"])


def guest_summary(guest: dict) -> dict:
    conf = guest["conf"]
    row = {
        "vmid": guest["vmid"], "name": conf.get("name", f"VM {guest['vmid']}"),
        "status": guest.get("status", "stopped"),
        "mem": 0, "maxmem": memory_mib(conf) * (1 << 20), "cpu": 0, "cpus": cpus(conf), "maxdisk": disk_bytes(conf),
        "disk": 0, "uptime": 0, "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
    }
    if conf.get("template"):
        row["template"] = 1
    if conf.get("lock"):
        row["lock"] = conf["lock"]
    if conf.get("tags"):
        row["tags"] = conf["tags"]
    return row
