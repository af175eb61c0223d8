"""PNG charts of a bench run, from the rows the tables print (and the latency percentiles kept beside them):
`python -m bench … --plot DIR`, or again later from the JSON: `python -m bench.plot results.json DIR`.

- latency distributions: `log` (the commit latency CDF of each system at each writer count), `guest` (every round)
- throughput against concurrency: `log`, `writes`, `grpc`
- cost against guest count: `api` (p50 by request), `scale` (RSS, cold restart); against cluster size: `log`, `sim`
- memory over time: `soak`
"""

from __future__ import annotations

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend


def num(cell) -> float:
    """A table cell as a number: "10,000" -> 10000, "2.5×" -> 2.5, "" -> nan."""
    text = str(cell).replace(",", "").rstrip("×").strip()
    try:
        return float(text)
    except ValueError:
        return float("nan")


def _rows(suite: dict) -> list[dict]:
    return [dict(zip(suite["columns"], row, strict=True)) for row in suite["rows"]]


def _save(fig, directory: str, name: str) -> str:
    path = os.path.join(directory, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _log(suite: dict, directory: str) -> list[str]:
    rows = _rows(suite)
    systems = ("gpve", "etcd", "pysyncobj")
    sizes = sorted({int(r["nodes"]) for r in rows})
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for system, color in zip(systems, ("C0", "C1", "C2"), strict=True):
        for size, style in zip(sizes, ("-", "--", ":"), strict=False):
            mine = [r for r in rows if int(r["nodes"]) == size]
            ax.plot([int(r["writers"]) for r in mine], [num(r[f"{system} commits/s"]) for r in mine], style,
                    color=color, marker="o", label=f"{system}, {size} nodes")
    ax.set(xscale="log", yscale="log", xlabel="writers", ylabel="commits/s", title="Replicated commits against writers")
    ax.legend(fontsize=8)
    paths = [_save(fig, directory, "log-throughput.png")]
    latencies = suite.get("extra", {}).get("latency percentiles ms", {})
    writers = sorted({int(r["writers"]) for r in rows})
    if latencies:
        for size in sizes:
            cols = min(3, len(writers))
            rows_ = -(-len(writers) // cols)
            fig, axes = plt.subplots(rows_, cols, figsize=(4.3 * cols, 3.6 * rows_), squeeze=False)
            for ax in axes.flat[len(writers):]:
                ax.set_visible(False)
            for ax, w in zip(axes.flat, writers, strict=False):
                for system, color in zip(systems, ("C0", "C1", "C2"), strict=True):
                    pct = latencies.get(f"{system} {size} {w}")
                    if pct:
                        ax.plot(pct, [i / (len(pct) - 1) for i in range(len(pct))], color=color, label=system)
                ax.set(xscale="log", xlabel="commit latency ms", ylabel="fraction", title=f"{w} writers, {size} nodes")
                ax.legend(fontsize=8)
            paths.append(_save(fig, directory, f"log-latency-{size}-nodes.png"))
    return paths


def _by_column(suite: dict, directory: str, name: str, group: str, x: str, y: str, title: str, *, logx: bool = True,
               logy: bool = False) -> list[str]:
    """One line per value of `group`: `y` against `x`."""
    rows = _rows(suite)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for value in dict.fromkeys(r[group] for r in rows):
        mine = [r for r in rows if r[group] == value and num(r[x]) == num(r[x]) and num(r[y]) == num(r[y])]
        if mine:
            ax.plot([num(r[x]) for r in mine], [num(r[y]) for r in mine], marker="o", label=str(value))
    ax.set(xlabel=x, ylabel=y, title=title)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    return [_save(fig, directory, name)]


def _scale(suite: dict, directory: str) -> list[str]:
    rows = [r for r in _rows(suite) if num(r["guests"]) > 0]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    guests = [num(r["guests"]) for r in rows]
    left.plot(guests, [num(r["RSS MiB sampled"]) for r in rows], marker="o")
    left.set(xlabel="guests", ylabel="RSS MiB", title="Node memory against guests", xscale="log")
    right.plot(guests, [num(r["cold restart s"]) for r in rows], marker="o", color="C1")
    right.set(xlabel="guests", ylabel="s", title="Cold restart against guests", xscale="log")
    return [_save(fig, directory, "scale.png")]


def _soak(suite: dict, directory: str) -> list[str]:
    rows = _rows(suite)
    t = [num(r["t s"]) / 60 for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    top.plot(t, [num(r["gpve RSS MiB"]) for r in rows], label="gpve node RSS")
    top.plot(t, [num(r["etcd RSS MiB"]) for r in rows], label="etcd member RSS")
    top.set(ylabel="MiB", title="Memory under a write soak (64 clients)")
    top.legend(fontsize=8)
    bottom.plot(t, [num(r["gpve journal MiB"]) for r in rows], label="gpve journal + snapshot")
    bottom.set(xlabel="minutes", ylabel="gpve MiB on disk (drops: compactions)")
    theirs = bottom.twinx()  # etcd's WAL preallocates 64 MiB files: its own scale
    theirs.plot(t, [num(r["etcd data MiB"]) for r in rows], color="C1", label="etcd data dir")
    theirs.set(ylabel="etcd MiB on disk")
    bottom.legend(fontsize=8, loc="upper left")
    theirs.legend(fontsize=8, loc="upper right")
    return [_save(fig, directory, "soak.png")]


def _guest(suite: dict, directory: str) -> list[str]:
    rows = _rows(suite)
    times = suite.get("extra", {}).get("seconds", {})
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ops = [r["operation"] for r in rows]
    for k, (system, color) in enumerate((("gpve", "C0"), ("QEMU by hand", "C1"))):
        xs = [i + (k - 0.5) * 0.35 for i in range(len(ops))]
        column = "through gpve ms" if system == "gpve" else "QEMU by hand ms"
        ax.bar(xs, [num(r[column]) for r in rows], width=0.35, color=color, label=f"{system} (median)")
        for x, op in zip(xs, ops, strict=True):
            points = [s * 1000 for s in times.get(system, {}).get(op, [])]
            ax.plot([x] * len(points), points, "k.", markersize=4)
    ax.set_xticks(range(len(ops)), ops, fontsize=8)
    ax.set(ylabel="ms", title="Guest operations: gpve against QEMU by hand (dots: each round)")
    ax.legend(fontsize=8)
    return [_save(fig, directory, "guest.png")]


def _sim(suite: dict, directory: str) -> list[str]:
    rows = _rows(suite)
    fig, ax = plt.subplots(figsize=(7, 4))
    labels = [f"{r['nodes']} nodes, faults {r['faults']}" for r in rows]
    ax.bar(labels, [num(r["sim s / wall s"]) for r in rows])
    ax.axhline(1.0, color="k", linestyle="--", label="real time")
    ax.set(ylabel="simulated s per wall s", title="Simulator speed against cluster size")
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    return [_save(fig, directory, "sim.png")]


PLOTS = {
    "log": _log,
    "writes": lambda s, d: _by_column(s, d, "writes.png", "system", "clients", "writes/s",
                                      "Replicated writes through each API against clients"),
    "grpc": lambda s, d: _by_column(s, d, "grpc.png", "API", "clients", "requests/s", "Reading one guest"),
    "api": lambda s, d: _by_column(s, d, "api.png", "request", "guests", "p50 ms", "REST p50 against guests",
                                   logy=True),
    "scale": _scale,
    "soak": _soak,
    "guest": _guest,
    "sim": _sim,
}


def plot(results: dict, directory: str) -> list[str]:
    """Write the charts of every suite in `results` (bench's --json shape) that has one; return their paths."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    for name, suite in results["suites"].items():
        if name in PLOTS:
            paths += PLOTS[name](suite, directory)
    return paths


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        for written in plot(json.load(f), sys.argv[2]):
            print(written)
