"""The simulator's speed: simulated seconds per wall second of `python -m sim` (the real engine, pysyncobj and task
handlers on a simulated clock, network, disk and QEMU; the `mixed` workload), 3 and 5 nodes, without faults and with
the default fault mix, each seed a process of its own (no self-check re-run).

The peer is real time: the same nodes on real hardware take one wall second per second of the workload, whatever the
machine, so the ratio is how many times faster than a real cluster the simulator explores the same schedule.
"""

from __future__ import annotations

import re
import subprocess
import sys

from tests.harness import REPO

SUMMARY = re.compile(r"(?P<sim>[\d.]+) simulated s in (?P<wall>[\d.]+) wall s .*?(?P<msgs>\d+) messages/s")
ANSWERS = re.compile(r"client answers (?P<answers>\d+)")


def simulate(seed: int, nodes: int, duration: float, faults: str) -> tuple[float, float, float, int]:
    """(simulated s, wall s, messages/s, client answers) of one run; raises when the run reports a violation."""
    out = subprocess.run([sys.executable, "-m", "sim", "--seed", str(seed), "--nodes", str(nodes), "--duration",
                          f"{duration:g}", "--faults", faults, "--no-self-check"], cwd=REPO, capture_output=True,
                         text=True, timeout=3600)
    summary, answers = SUMMARY.search(out.stdout), ANSWERS.search(out.stdout)
    if out.returncode != 0 or summary is None or answers is None:
        raise RuntimeError(f"python -m sim failed (exit {out.returncode}):\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return float(summary["sim"]), float(summary["wall"]), float(summary["msgs"]), int(answers["answers"])


def run(base: str, quick: bool = False, huge: bool = False) -> list[tuple]:
    seeds = (1,) if quick else (1, 2, 3)
    duration = 45.0 if quick else 120.0
    rows = [("nodes", "faults", "seeds", "simulated s", "wall s", "sim s / wall s", "messages/s", "client answers",
             "real time: sim s / wall s", "sim / real time")]
    for nodes in (3, 5):
        for faults in ("none", "default"):
            runs = [simulate(seed, nodes, duration, faults) for seed in seeds]
            sim_s, wall = sum(r[0] for r in runs), sum(r[1] for r in runs)
            msgs = sum(r[2] * r[1] for r in runs) / wall
            rows.append((nodes, faults, len(seeds), f"{sim_s:g}", f"{wall:.1f}", f"{sim_s / wall:.1f}", f"{msgs:.0f}",
                         sum(r[3] for r in runs), "1.0", f"{sim_s / wall:.1f}×"))
    return rows
