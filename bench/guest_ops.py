"""What the stack adds to guest operations on the test guest (scripts/build_test_guest.py, `kvm: 0`, 256 MiB, a 1 GiB
qcow2 disk): start-to-running, a disk snapshot, a snapshot with the RAM state, and stop-to-stopped through the API,
against the very QEMU command line gpve ran (read from /proc) driven by hand over QMP (the peer), in the same run.

By hand: start the argv, poll `query-status` until running; `blockdev-snapshot-internal-sync` on the disk; HMP
`savevm`; `quit`, until the process is gone. These are the QMP commands gpve's handlers send (hypervisor/operations.py).
"""

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
OPERATIONS = ("start -> running", "disk snapshot (running)", "snapshot with RAM state", "stop -> stopped")
TIMES: dict[str, dict[str, list[float]]] = {}  # "gpve" / "by hand" -> operation -> seconds, for --plot


def _qmp(path: str, command: str, arguments: dict | None = None) -> dict:
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    f = s.makefile("rw")
    f.readline()
    for name, args in (("qmp_capabilities", None), (command, arguments)):
        f.write(json.dumps({"execute": name, **({"arguments": args} if args else {})}) + "\n")
        f.flush()
        while True:
            line = json.loads(f.readline())
            if "return" in line or "error" in line:
                break
    s.close()
    if "error" in line:
        raise RuntimeError(f"{command}: {line['error']}")
    return line


def _timed(times: list[float], action) -> None:
    t = time.perf_counter()
    action()
    times.append(time.perf_counter() - t)


def _by_hand(argv: list[str], pidfile: str, qmp: str, n: int, times: dict[str, list[float]]) -> None:
    """One round by hand: start, disk snapshot, snapshot with RAM, quit; each timed into `times`."""
    def start() -> None:
        subprocess.run(argv, check=True)
        while _qmp(qmp, "query-status").get("return", {}).get("status") != "running":
            time.sleep(0.005)

    def quit_() -> None:
        with open(pidfile) as f:
            pid = int(f.read())
        _qmp(qmp, "quit")
        while os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().split(") ")[1][0] != "Z":
            time.sleep(0.005)

    _timed(times[OPERATIONS[0]], start)
    _timed(times[OPERATIONS[1]], lambda: _qmp(qmp, "blockdev-snapshot-internal-sync",
                                              {"device": "drive-scsi0", "name": f"hand{n}"}))
    _timed(times[OPERATIONS[2]], lambda: _qmp(qmp, "human-monitor-command", {"command-line": f"savevm handvm{n}"}))
    _timed(times[OPERATIONS[3]], quit_)


def extra() -> dict:
    """Beside the table, for --plot: every round's seconds."""
    return {"seconds": TIMES}


def run(base: str) -> list[tuple]:
    guest_dir = build_guest()
    cluster = Cluster(os.path.join(base, "gpve-ops"), 1).start()
    ours: dict[str, list[float]] = {op: [] for op in OPERATIONS}
    hand: dict[str, list[float]] = {op: [] for op in OPERATIONS}
    try:
        node = cluster.nodes[0]
        px = node.api(timeout=120)
        vmid = int(px.cluster.nextid.get())
        Tasks.blocking_status(px, px.nodes("n1").qemu.create(vmid=vmid, memory=256, kvm=0, scsi0="local:1",
                                                             args=kernel_args(guest_dir)))
        vm = px.nodes("n1").qemu(vmid)

        def task(upid: str) -> None:
            status = Tasks.blocking_status(px, upid, polling_interval=0.01, timeout=120)
            if status is None or status.get("exitstatus") != "OK":
                raise RuntimeError(f"task {upid}: {status}")

        run_dir = os.path.join(node.data_dir, "run", "qemu")
        pidfile, qmp = os.path.join(run_dir, f"{vmid}.pid"), os.path.join(run_dir, f"{vmid}.qmp")
        argv: list[str] = []
        for n in range(ROUNDS):
            _timed(ours[OPERATIONS[0]], lambda: task(vm.status.start.post()))
            if not argv:
                with open(pidfile) as f, open(f"/proc/{int(f.read())}/cmdline", "rb") as cmdline:
                    argv = [a.decode() for a in cmdline.read().split(b"\0")[:-1]]
            _timed(ours[OPERATIONS[1]], lambda n=n: task(vm.snapshot.post(snapname=f"disk{n}")))
            _timed(ours[OPERATIONS[2]], lambda n=n: task(vm.snapshot.post(snapname=f"ram{n}", vmstate=1)))
            _timed(ours[OPERATIONS[3]], lambda: task(vm.status.stop.post()))
    finally:
        cluster.stop()
    for n in range(ROUNDS):
        for stale in (qmp, pidfile):
            if os.path.exists(stale):
                os.unlink(stale)
        _by_hand(argv, pidfile, qmp, n, hand)
    TIMES.update({"gpve": ours, "QEMU by hand": hand})
    med = statistics.median
    rows = [("operation", "through gpve ms", "QEMU by hand ms", "added ms", "gpve / by hand")]
    for op in OPERATIONS:
        rows.append((op, f"{med(ours[op]) * 1000:.0f}", f"{med(hand[op]) * 1000:.0f}",
                     f"{(med(ours[op]) - med(hand[op])) * 1000:.0f}", f"{med(ours[op]) / med(hand[op]):.2f}×"))
    return rows
