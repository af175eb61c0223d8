"""The test guest (built by scripts/build_test_guest.py) and helpers to read its serial console."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_guest() -> str:
    """Build the guest once (cached), return its directory."""
    out = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "build_test_guest.py")], check=True,
                         capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def qemu_missing() -> str | None:
    for tool in ("qemu-system-x86_64", "qemu-img"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed on this machine"
    return None


def kernel_args(guest_dir: str, cmdline: str = "") -> str:
    return f'-kernel {guest_dir}/vmlinuz -initrd {guest_dir}/initrd.img -append "console=ttyS0 loglevel=3 {cmdline}"'


def serial_path(node, vmid: int) -> str:
    return os.path.join(node.data_dir, "run", "qemu", f"{vmid}.serial0.log")


def serial_text(node, vmid: int) -> str:
    try:
        with open(serial_path(node, vmid), errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def wait_serial(node, vmid: int, pattern: str, timeout: float = 60.0) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(pattern, serial_text(node, vmid))
        if m:
            return m
        time.sleep(0.2)
    raise AssertionError(f"'{pattern}' not on VM {vmid}'s console within {timeout}s:\n{serial_text(node, vmid)[-500:]}")


def ticks(node, vmid: int) -> list[tuple[int, str]]:
    return [(int(n), disk) for n, disk in re.findall(r"GPVE-TICK (\d+) disk=(\S*)", serial_text(node, vmid))]
