"""What this host tells of itself, read from /proc and /sys the way Proxmox's `PVE::ProcFSTools` reads it
(`read_proc_stat`, `read_meminfo`, `read_cpuinfo`, `read_loadavg`, `read_proc_uptime`) and `PVE::API2::Nodes`
(`current-kernel`, `boot-info`). A file that cannot be read gives zeros, never an error.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

PHYSICAL = "/sys/class/net/{}/device"  # a network device backed by hardware (Proxmox: `ip_link_is_physical`)


@dataclass(frozen=True)
class CpuTimes:
    """Jiffies of all CPUs together since boot: busy (`used`: user, nice, system, irq, softirq, steal), waiting
    for I/O, and all (`total`, idle included)."""

    used: int = 0
    iowait: int = 0
    total: int = 0


def cpu_times() -> CpuTimes:
    try:
        with open("/proc/stat") as f:
            line = f.readline()
    except OSError:
        return CpuTimes()
    fields = [int(x) for x in line.split()[1:]]
    if len(fields) < 8:
        return CpuTimes()
    user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]  # user and nice include guest time
    used = user + nice + system + irq + softirq + steal
    return CpuTimes(used, iowait, used + idle + iowait)


def cpu_usage(before: CpuTimes, after: CpuTimes) -> tuple[float, float]:
    """(cpu, iowait) as fractions 0..1 of all CPUs' time between two readings (Proxmox's `cpu` and `wait`)."""
    total = after.total - before.total
    if total <= 0:
        return 0.0, 0.0
    used = min(max(after.used - before.used, 0), total)
    wait = min(max(after.iowait - before.iowait, 0), total)
    return used / total, wait / total


def meminfo() -> dict[str, int]:
    """Bytes: `memtotal`, `memfree`, `memavailable`, `memused` (total less available, as Proxmox counts it),
    `swaptotal`, `swapfree`, `swapused`, `memshared` (pages KSM merged)."""
    raw: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                parts = value.split()
                if parts and parts[0].isdigit():
                    raw[key.lower()] = int(parts[0]) * 1024
    except OSError:
        pass
    total = raw.get("memtotal", 0)
    available = raw.get("memavailable", raw.get("memfree", 0))
    swaptotal, swapfree = raw.get("swaptotal", 0), raw.get("swapfree", 0)
    try:
        with open("/sys/kernel/mm/ksm/pages_sharing") as f:
            shared = int(f.read().strip() or 0) * 4096
    except (OSError, ValueError):
        shared = 0
    return {"memtotal": total, "memfree": raw.get("memfree", 0), "memavailable": available,
            "memused": total - available, "swaptotal": swaptotal, "swapfree": swapfree,
            "swapused": swaptotal - swapfree, "memshared": shared}


def loadavg() -> list[str]:
    """The 1, 5 and 15 minute load averages, as the strings /proc/loadavg holds (Proxmox answers strings)."""
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[:3]
    except OSError:
        return ["0.00", "0.00", "0.00"]


def uptime() -> int:
    try:
        with open("/proc/uptime") as f:
            return int(float(f.read().split()[0]))
    except (OSError, ValueError, IndexError):
        return 0


@functools.cache
def cpuinfo() -> dict:
    """`cpus` (threads), `cores` (physical, all sockets), `sockets`, `model`, `mhz`, `hvm`, `flags`, `user_hz`."""
    out = {"user_hz": os.sysconf("SC_CLK_TCK"), "model": "unknown", "mhz": "0", "cpus": 0, "sockets": 1,
           "cores": 1, "flags": "", "hvm": 0}
    cores: dict[str, int] = {}
    physical = "0"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = (x.strip() for x in line.partition(":"))
                if key == "processor":
                    out["cpus"] += 1
                elif key == "model name" and out["model"] == "unknown":
                    out["model"] = value
                elif key == "cpu MHz" and out["mhz"] == "0":
                    out["mhz"] = value
                elif key == "flags" and not out["flags"]:
                    out["flags"] = value
                elif key == "physical id":
                    physical = value
                    cores.setdefault(value, 1)
                elif key == "cpu cores" and value.isdigit():
                    cores[physical] = int(value)
    except OSError:
        pass
    out["cpus"] = out["cpus"] or os.cpu_count() or 1
    out["sockets"] = len(cores) or 1
    out["cores"] = sum(cores.values()) or out["cpus"]
    out["hvm"] = int(bool({"vmx", "svm"} & set(str(out["flags"]).split())))
    return out


def filesystem(path: str) -> dict[str, int]:
    """Bytes of the filesystem holding `path`: `total`, `used` (all not free), `free`, `avail` (to users)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return {"total": 0, "used": 0, "free": 0, "avail": 0}
    total = st.f_blocks * st.f_frsize
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    return {"total": total, "used": used, "free": total - used, "avail": st.f_bavail * st.f_frsize}


def net_totals() -> tuple[int, int]:
    """Bytes received and sent by the physical network devices since boot (Proxmox's node `netin`/`netout`)."""
    rx = tx = 0
    try:
        with open("/proc/net/dev") as f:
            lines = f.readlines()[2:]
    except OSError:
        return 0, 0
    for line in lines:
        name, _, counters = line.partition(":")
        name = name.strip()
        fields = counters.split()
        if len(fields) >= 9 and os.path.exists(PHYSICAL.format(name)):
            rx += int(fields[0])
            tx += int(fields[8])
    return rx, tx


def io_counters() -> dict[str, int]:
    """Counters since boot for the spec's node metrics: the physical NICs' `rx_bytes`, `tx_bytes`,
    `rx_packets`, `tx_packets`, and the whole block devices' (not partitions, loop or RAM disks, from
    /proc/diskstats) `read_bytes`, `write_bytes`, `reads`, `writes`."""
    out = dict.fromkeys(("rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "read_bytes", "write_bytes", "reads",
                         "writes"), 0)
    try:
        with open("/proc/net/dev") as f:
            for line in f.readlines()[2:]:
                name, _, counters = line.partition(":")
                fields = counters.split()
                if len(fields) >= 10 and os.path.exists(PHYSICAL.format(name.strip())):
                    for key, i in (("rx_bytes", 0), ("rx_packets", 1), ("tx_bytes", 8), ("tx_packets", 9)):
                        out[key] += int(fields[i])
        with open("/proc/diskstats") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 10 or fields[2].startswith(("loop", "ram", "zram")) or \
                        not os.path.exists(f"/sys/block/{fields[2]}"):
                    continue
                out["reads"] += int(fields[3])
                out["read_bytes"] += int(fields[5]) * 512
                out["writes"] += int(fields[7])
                out["write_bytes"] += int(fields[9]) * 512
    except (OSError, ValueError):
        pass
    return out


def kernel() -> dict[str, str]:
    """`sysname`, `release`, `version`, `machine` of the running kernel (Proxmox's `current-kernel`)."""
    u = os.uname()
    return {"sysname": u.sysname, "release": u.release, "version": u.version, "machine": u.machine}


@functools.cache
def boot_info() -> dict:
    """`mode` (`efi` or `legacy-bios`) and, booted by EFI, `secureboot` (0/1), as Proxmox reads them."""
    if not os.path.isdir("/sys/firmware/efi"):
        return {"mode": "legacy-bios"}
    out: dict = {"mode": "efi"}
    try:
        with open("/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c", "rb") as f:
            data = f.read()
        out["secureboot"] = int(len(data) >= 5 and data[4] == 1)
    except OSError:
        pass
    return out
