"""What the stack adds to guest operations: start-to-running and stop-to-stopped through the API,
against the same QEMU command line run by hand (the peer), in the same run."""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import time

from proxmoxer.tools import Tasks

from tests.guest import build_guest, kernel_args
from tests.harness import Cluster

ROUNDS = 5


def _qmp(path: str, command: str) -> dict:
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    f = s.makefile("rw")
    f.readline()
    for name in ("qmp_capabilities", command):
        f.write(json.dumps({"execute": name}) + "\n")
        f.flush()
        while True:
            line = json.loads(f.readline())
            if "return" in line or "error" in line:
                break
    s.close()
    return line


def _by_hand(argv: list[str], pidfile: str, qmp: str) -> tuple[float, float]:
    """Start the very command line gpve used, wait until QMP says running; then `quit` until it is gone."""
    started = time.perf_counter()
    subprocess.run(argv, check=True)
    while _qmp(qmp, "query-status").get("return", {}).get("status") != "running":
        time.sleep(0.005)
    start_s = time.perf_counter() - started
    with open(pidfile) as f:
        pid = int(f.read())
    started = time.perf_counter()
    _qmp(qmp, "quit")
    while os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().split(") ")[1][0] != "Z":
        time.sleep(0.005)
    return start_s, time.perf_counter() - started


def run(base: str) -> list[tuple]:
    guest_dir = build_guest()
    cluster = Cluster(os.path.join(base, "gpve-ops"), 1).start()
    api_start, api_stop, hand_start, hand_stop = [], [], [], []
    try:
        node = cluster.nodes[0]
        px = node.api(timeout=60)
        vmid = int(px.cluster.nextid.get())
        Tasks.blocking_status(px, px.nodes("n1").qemu.create(vmid=vmid, memory=256, kvm=0,
                                                             args=kernel_args(guest_dir)))
        vm = px.nodes("n1").qemu(vmid)
        for _ in range(ROUNDS):
            t = time.perf_counter()
            Tasks.blocking_status(px, vm.status.start.post(), polling_interval=0.01)
            api_start.append(time.perf_counter() - t)
            t = time.perf_counter()
            Tasks.blocking_status(px, vm.status.stop.post(), polling_interval=0.01)
            api_stop.append(time.perf_counter() - t)
        run_dir = os.path.join(node.data_dir, "run", "qemu")
        pidfile, qmp = os.path.join(run_dir, f"{vmid}.pid"), os.path.join(run_dir, f"{vmid}.qmp")
    finally:
        cluster.stop()
    from hypervisor.qemu_argv import HostFacts, RunPaths, build_argv
    conf = {"memory": 256, "kvm": 0, "args": kernel_args(guest_dir)}
    argv = build_argv(vmid, conf, lambda v: ("", "raw"), HostFacts(), RunPaths(qmp, pidfile, run_dir))
    for _ in range(ROUNDS):
        for stale in (qmp, pidfile):
            if os.path.exists(stale):
                os.unlink(stale)
        s, q = _by_hand(argv, pidfile, qmp)
        hand_start.append(s)
        hand_stop.append(q)
    med = statistics.median
    return [("operation", "through gpve ms", "QEMU by hand ms", "added ms"),
            ("start -> running", f"{med(api_start) * 1000:.0f}", f"{med(hand_start) * 1000:.0f}",
             f"{(med(api_start) - med(hand_start)) * 1000:.0f}"),
            ("stop -> stopped", f"{med(api_stop) * 1000:.0f}", f"{med(hand_stop) * 1000:.0f}",
             f"{(med(api_stop) - med(hand_stop)) * 1000:.0f}")]
