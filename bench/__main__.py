"""`python -m bench [suite …] [--quick] [--huge] [--json FILE] [--plot DIR]`: gpve beside a peer, each figure measured
in this run; one table per suite (no suite named: all of them); `--plot` draws them (bench/plot.py).

- api:     requests/s, p50/p99 of the hot REST requests (listings, one guest's config and status, create, config
           update) at 100 and 10,000 guests (`--huge`: also 100,000), beside the framework's floor (a bare
           Quart/hypercorn endpoint answering the same bytes).
- scale:   RSS per guest and cold restart at 10,000 guests (`--huge`: also 100,000).
- log:     replicated commits, 3 and 5 members on loopback, 1-256 writers: the engine's log (fsynced journal, group
           commit) against etcd (fsync on) and bare pysyncobj (its defaults), the same payload.
- writes:  replicated writes through each system's API on a 3-node loopback cluster (gpve: creating a guest
           through /api2/json; etcd: a put through its v3 HTTP gateway), 1 and 64 clients.
- join:    the time for the Nth node to join a cluster holding 10,000 guests (etcd: 10,000 keys; `--huge`: also
           100,000) and catch up.
- guest:   start-to-running, a disk snapshot, a snapshot with RAM and stop-to-stopped through the API, against
           the same QEMU command line driven by hand over QMP (`guests`: the same).
- grpc:    reading one guest by unary gRPC (GuestService.Get) against REST (GET …/status/current), 1 and 32
           clients.
- events:  a change made through node 1 seen by a client of node 3: WebSocket stream against polling every
           second; node 3's CPU for 100 stream consumers against 10 pollers; the sustained stream rate.
- sim:     simulated seconds per wall second of `python -m sim`, 3 and 5 nodes, without and with faults (peer:
           real time, one second per second).
- soak:    64 clients updating guest configs on one node for 30 minutes (--quick: 2, --soak-minutes N): the
           node's RSS every 10 s, through journal compactions and a minute idle after, beside one etcd member
           under the same load.
- migrate: downtime of a live migration of the test guest (peer: the same QEMU migration driven by
           hand over QMP, without gpve).

`--quick` shortens the suites that take it (api, scale, log, sim, soak) and skips `--huge` sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile

from bench import api, events, grpc_get, guest_ops, join, log, migrate, scale, simrate, soak, writes

SUITES = {
    "api": ("REST API on one node (4 clients; floor: bare Quart/hypercorn with TLS, same bytes)", api.run, True),
    "scale": ("What guests cost a node (configs only)", scale.run, True),
    "log": ("Replicated commits on loopback: the engine's log, etcd, bare pysyncobj", log.run, True),
    "writes": ("Replicated writes, 3 nodes on loopback", writes.run, False),
    "join": ("Joining a node to a cluster with 10,000 guests / keys (--huge: also 100,000)", join.run, True),
    "guest": ("Guest operations, test guest under software emulation (median of 5)", guest_ops.run, False),
    "grpc": ("Reading one guest: gRPC against REST, one node on loopback", grpc_get.run, False),
    "events": ("Events: WebSocket stream against polling, 3 nodes on loopback", events.run, False),
    "migrate": ("Live migration of the test guest (software emulation, 256 MiB)", migrate.run, False),
    "sim": ("The simulator: simulated seconds per wall second (peer: real time)", simrate.run, True),
    "soak": ("Memory under a write soak, one node, 64 clients (peer: one etcd member, same load)", soak.run, True),
}

ALIASES = {"guests": "guest"}
EXTRAS = {"log": log.extra, "guest": guest_ops.extra}  # what --plot draws beyond the rows (latency distributions)


def table(title: str, rows: list[tuple]) -> None:
    print(f"\n{title}", flush=True)
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for j, row in enumerate(rows):
        print("  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
        if j == 0:
            print("  " + "  ".join("-" * w for w in widths))
    sys.stdout.flush()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suites", nargs="*", choices=[*SUITES, *ALIASES, "all"], metavar="suite")
    parser.add_argument("--quick", action="store_true", help="shorter windows, no --huge sizes")
    parser.add_argument("--huge", action="store_true", help="also 100,000 guests (api, scale, join)")
    parser.add_argument("--json", metavar="FILE", help="write every table's rows to FILE")
    parser.add_argument("--plot", metavar="DIR", help="write PNG charts of the results to DIR (bench/plot.py)")
    parser.add_argument("--soak-minutes", type=float, metavar="N", help="the soak's length (default 30; --quick 2)")
    args = parser.parse_args(argv)
    wanted = {ALIASES.get(n, n) for n in args.suites}
    names = [n for n in SUITES if n in wanted or not wanted or "all" in wanted]
    results = {"machine": {"python": platform.python_version(), "platform": platform.platform(),
                           "cpus": os.cpu_count()}, "suites": {}}
    with tempfile.TemporaryDirectory(prefix="gpve-bench-") as base:
        for name in names:
            title, run, sized = SUITES[name]
            extra = {"minutes": args.soak_minutes} if name == "soak" else {}
            rows = run(base, quick=args.quick, huge=args.huge, **extra) if sized else run(base)
            table(title, rows)
            results["suites"][name] = {"title": title, "columns": list(rows[0]), "rows": [list(r) for r in rows[1:]]}
            if name in EXTRAS:
                results["suites"][name]["extra"] = EXTRAS[name]()
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(results, f, indent=1, ensure_ascii=False)
    if args.plot:
        from bench.plot import plot
        for path in plot(results, args.plot):
            print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
