"""A network namespace of a test's own, so that what a node configures never touches the host's network.

The node runs inside it (`NodeProcess(prefix=ns.prefix)`: `ip netns exec`, which also gives it the namespace's
/sys); the test's thread joins it (`with ns.joined():`) while it talks to the node over the namespace's loopback,
and the namespace's interfaces are read with `ip -n`. Needs root (the suite runs as root).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import subprocess
import time

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def unavailable() -> str | None:
    """Why network namespaces cannot be used here, or None."""
    if shutil.which("ip") is None:
        return "iproute2 is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    return None


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class Netns:
    def __init__(self) -> None:
        self.name = f"gpve-test-{secrets.token_hex(4)}"

    def __enter__(self) -> Netns:
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.ip("link", "set", "lo", "up")
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def ip(self, *args: str) -> str:
        """`ip -n NS ARGS` (iproute2 inside the namespace); its output."""
        return subprocess.run(["ip", "-n", self.name, *args], check=True, capture_output=True, text=True).stdout

    def bridge(self, name: str, cidr: str | None = None) -> None:
        """A Linux bridge `name`, up, carrying `cidr` (the host's side of the guests' network) when given."""
        self.ip("link", "add", name, "type", "bridge")
        if cidr:
            self.ip("addr", "add", cidr, "dev", name)
        self.ip("link", "set", name, "up")

    def links(self) -> dict[str, dict]:
        """`ip -j -d link show` inside the namespace, by name."""
        return {link["ifname"]: link for link in json.loads(self.ip("-j", "-d", "link", "show"))}

    def addresses(self, iface: str) -> list[str]:
        out = json.loads(self.ip("-j", "addr", "show", "dev", iface))
        return [f"{a['local']}/{a['prefixlen']}" for entry in out for a in entry.get("addr_info", [])]

    @contextlib.contextmanager
    def joined(self):
        """This thread inside the namespace (sockets it opens belong to it), back where it was afterwards."""
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        there = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            _setns(there)
            yield self
        finally:
            _setns(home)
            os.close(there)
            os.close(home)

    def close(self) -> None:
        """End what still runs inside (a guest's QEMU), then remove the namespace and what it holds."""
        out = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True).stdout
        for pid in (int(p) for p in out.split()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True).stdout.strip() \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        subprocess.run(["ip", "netns", "del", self.name], check=False)
