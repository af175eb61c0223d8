"""Pure helpers about disks in a guest config: which need allocating, which volumes a guest owns."""

from __future__ import annotations

import re

DISK_KEY = re.compile(r"(ide|sata|scsi|virtio|efidisk|tpmstate)\d+")
ALLOC_SPEC = re.compile(r"([a-z][a-z0-9\-_.]*[a-z0-9]):(\d+(?:\.\d+)?)")


def is_disk_key(key: str) -> bool:
    return bool(DISK_KEY.fullmatch(key)) or key.startswith("unused")


def volume_of(value: str) -> str:
    return str(value).split(",", 1)[0]


def alloc_requests(conf: dict) -> dict[str, tuple[str, float]]:
    """Disk keys whose value is `STORAGE:SIZE_GiB` (a volume to allocate), as {key: (storage, GiB)}."""
    out = {}
    for key, value in conf.items():
        if DISK_KEY.fullmatch(key) and "media=cdrom" not in str(value):
            m = ALLOC_SPEC.fullmatch(volume_of(value))
            if m:
                out[key] = (m.group(1), float(m.group(2)))
    return out


def owned_volumes(vmid: int, conf: dict) -> list[str]:
    """Volumes of this guest referenced by its config (its own images, not ISOs or other guests' bases)."""
    out = []
    for key, value in conf.items():
        if is_disk_key(key) and "media=cdrom" not in str(value):
            volid = volume_of(value)
            if re.search(rf"(^|/)(vm|base)-{vmid}-disk-\d+\.\w+$", volid):
                out.append(volid)
    return out
