"""`python -m bench [suite …] [--quick] [--huge] [--json FILE]`: gpve beside a peer, each figure measured in this
run; one table per suite (no suite named: all of them).

- api:     requests/s, p50/p99 of the hot REST requests (listings, one guest's config and status, create, config
           update) at 100 and 10,000 guests (`--huge`: also 100,000), beside the framework's floor (a bare
           Quart/hypercorn endpoint answering the same bytes).
- scale:   RSS per guest and cold restart at 10,000 guests (`--huge`: also 100,000).
- writes:  replicated writes through each system's API on a 3-node loopback cluster (gpve: creating a guest
           through /api2/json; etcd: a put through its v3 HTTP gateway), 1 and 64 clients.
- join:    the time for the Nth node to join a cluster holding 10,000 guests (etcd: 10,000 keys) and
           catch up.
- guests:  start-to-running and stop-to-stopped through the API, against the same QEMU command line run
           by hand.
- grpc:    reading one guest by unary gRPC (GuestService.Get) against REST (GET …/status/current), 1 and 32
           clients.
- events:  a change made through node 1 seen by a client of node 3: WebSocket stream against polling every
           second; node 3's CPU for 100 stream consumers against 10 pollers; the sustained stream rate.
- migrate: downtime of a live migration of the test guest (peer: the same QEMU migration driven by
           hand over QMP, without gpve).

`--quick` shortens the measuring windows of the suites that take it (api, scale) and skips `--huge` sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile

from bench import api, events, grpc_get, guest_ops, join, migrate, scale, writes

SUITES = {
    "api": ("REST API on one node (4 clients; floor: bare Quart/hypercorn with TLS, same bytes)", api.run, True),
    "scale": ("What guests cost a node (configs only)", scale.run, True),
    "writes": ("Replicated writes, 3 nodes on loopback", writes.run, False),
    "join": ("Joining a node to a cluster with 10,000 guests / keys", join.run, False),
    "guests": ("Guest operations, test guest under software emulation (median of 5)", guest_ops.run, False),
    "grpc": ("Reading one guest: gRPC against REST, one node on loopback", grpc_get.run, False),
    "events": ("Events: WebSocket stream against polling, 3 nodes on loopback", events.run, False),
    "migrate": ("Live migration of the test guest (software emulation, 256 MiB)", migrate.run, False),
}


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
    parser.add_argument("suites", nargs="*", choices=[*SUITES, "all"], metavar="suite")
    parser.add_argument("--quick", action="store_true", help="shorter windows, no --huge sizes")
    parser.add_argument("--huge", action="store_true", help="also 100,000 guests (api, scale)")
    parser.add_argument("--json", metavar="FILE", help="write every table's rows to FILE")
    args = parser.parse_args(argv)
    names = [n for n in SUITES if n in args.suites or not args.suites or "all" in args.suites]
    results = {"machine": {"python": platform.python_version(), "platform": platform.platform(),
                           "cpus": os.cpu_count()}, "suites": {}}
    with tempfile.TemporaryDirectory(prefix="gpve-bench-") as base:
        for name in names:
            title, run, sized = SUITES[name]
            rows = run(base, quick=args.quick, huge=args.huge) if sized else run(base)
            table(title, rows)
            results["suites"][name] = {"title": title, "columns": list(rows[0]), "rows": [list(r) for r in rows[1:]]}
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(results, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main(sys.argv[1:])
