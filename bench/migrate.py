"""Downtime of a live migration of the test guest: through gpve, and by hand over QMP (the peer)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time

from proxmoxer.tools import Tasks

from tests.guest import build_guest, kernel_args, wait_serial
from tests.harness import Cluster, free_ports


def _qmp(path: str, *commands: tuple[str, dict]) -> list:
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    f = s.makefile("rw")
    f.readline()
    answers = []
    for name, args in (("qmp_capabilities", {}),) + commands:
        f.write(json.dumps({"execute": name, "arguments": args}) + "\n")
        f.flush()
        while True:
            line = json.loads(f.readline())
            if "return" in line or "error" in line:
                answers.append(line)
                break
    s.close()
    return answers[1:]


def _raw_qemu_migration(base: str, guest_dir: str) -> float:
    """Two QEMUs on this machine, one migrating to the other over TCP: QEMU's own downtime."""
    [port] = free_ports(1)
    procs, sockets = [], []
    for role in ("src", "dst"):
        qmp = os.path.join(base, f"raw-{role}.qmp")
        argv = ["qemu-system-x86_64", "-accel", "tcg", "-cpu", "qemu64", "-m", "256", "-nodefaults",
                "-display", "none", "-serial", f"file:{base}/raw-{role}.serial", "-kernel", f"{guest_dir}/vmlinuz",
                "-initrd", f"{guest_dir}/initrd.img", "-append", "console=ttyS0 loglevel=3",
                "-qmp", f"unix:{qmp},server=on,wait=off"]
        if role == "dst":
            argv += ["-incoming", f"tcp:127.0.0.1:{port}"]
        procs.append(subprocess.Popen(argv))
        sockets.append(qmp)
    try:
        time.sleep(8)
        _qmp(sockets[0], ("migrate", {"uri": f"tcp:127.0.0.1:{port}"}))
        while True:
            [state] = _qmp(sockets[0], ("query-migrate", {}))
            if state["return"].get("status") in ("completed", "failed"):
                return float(state["return"].get("downtime", -1))
            time.sleep(0.1)
    finally:
        for p in procs:
            p.kill()
            p.wait()


def run(base: str) -> list[tuple]:
    guest_dir = build_guest()
    rows = [("system", "downtime ms", "total s")]
    cluster = Cluster(os.path.join(base, "gpve-migrate"), 3).start()
    try:
        n1, n2, _ = cluster.nodes
        px = n1.api(timeout=60)
        vmid = int(px.cluster.nextid.get())
        Tasks.blocking_status(px, px.nodes("n2").qemu.create(vmid=vmid, memory=256, kvm=0, serial0="socket",
                                                            args=kernel_args(guest_dir)))
        Tasks.blocking_status(px, px.nodes("n2").qemu(vmid).status.start.post())
        wait_serial(n2, vmid, r"GPVE-TICK 2 ")
        started = time.monotonic()
        upid = px.nodes("n2").qemu(vmid).migrate.post(target="n3", online=1)
        Tasks.blocking_status(px, upid, polling_interval=0.1)
        total = time.monotonic() - started
        log = " ".join(line["t"] for line in px.nodes("n2").tasks(upid).log.get())
        downtime = re.search(r"downtime (\d+) ms", log)
        rows.append(("gpve (task, QMP, ownership switch)", downtime.group(1) if downtime else "?", f"{total:.2f}"))
        Tasks.blocking_status(px, px.nodes("n3").qemu(vmid).status.stop.post())
    finally:
        cluster.stop()
    rows.append(("QEMU by hand over QMP", f"{_raw_qemu_migration(base, guest_dir):.0f}", "-"))
    return rows
