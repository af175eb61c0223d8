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


ISOLINUX = ("/usr/lib/ISOLINUX/isolinux.bin", "/usr/lib/syslinux/modules/bios/ldlinux.c32")  # Debian's isolinux
ISOLINUX_CFG = """SERIAL 0 115200
DEFAULT gpve
PROMPT 0
TIMEOUT 1
LABEL gpve
  KERNEL /vmlinuz
  INITRD /initrd.img
  APPEND console=ttyS0 loglevel=3
"""


def iso_missing() -> str | None:
    if shutil.which("xorriso") is None:
        return "xorriso is not installed on this machine"
    missing = [f for f in ISOLINUX if not os.path.exists(f)]
    return f"{missing[0]} is missing (Debian's isolinux, syslinux-common)" if missing else None


def build_guest_iso(guest_dir: str, out: str) -> str:
    """The test guest as a bootable ISO 9660 image (El Torito, isolinux: kernel and initramfs, console on the first
    serial port), made with xorriso; returns `out`."""
    root = os.path.join(os.path.dirname(out), "iso-root")
    os.makedirs(os.path.join(root, "isolinux"), exist_ok=True)
    for name in ("vmlinuz", "initrd.img"):
        shutil.copy(os.path.join(guest_dir, name), os.path.join(root, name))
    for path in ISOLINUX:
        shutil.copy(path, os.path.join(root, "isolinux", os.path.basename(path)))
    with open(os.path.join(root, "isolinux", "isolinux.cfg"), "w") as f:
        f.write(ISOLINUX_CFG)
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-o", out, "-V", "GPVE_GUEST", "-b", "isolinux/isolinux.bin",
                    "-c", "isolinux/boot.cat", "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table", root],
                   check=True, capture_output=True)
    shutil.rmtree(root)
    return out


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
