"""`python -m bench [writes|join|migrate|guests|grpc|events|all]`: gpve beside a peer, each figure measured in this run.

- writes:  replicated writes through each system's API on a 3-node loopback cluster (gpve: creating an
           access group through /api2/json; etcd: a put through its v3 HTTP gateway), 1 and 32 clients.
- join:    the time for the Nth node to join a cluster holding 10,000 guests (etcd: 10,000 keys) and
           catch up.
- migrate: downtime of a live migration of the test guest (peer: the same QEMU migration driven by
           hand over QMP, without gpve).
- guests:  start-to-running and stop-to-stopped through the API, against the same QEMU command line run
           by hand.
- events:  a change made through node 1 seen by a client of node 3: WebSocket stream against polling every
           second; node 3's CPU for 100 stream consumers against 10 pollers; the sustained stream rate.
- grpc:    reading one guest by unary gRPC (GuestService.Get) against REST (GET …/status/current), 1 and 32
           clients.
"""

from __future__ import annotations

import sys
import tempfile

from bench import events, grpc_get, guest_ops, join, migrate, writes


def table(title: str, rows: list[tuple]) -> None:
    print(f"\n{title}")
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for j, row in enumerate(rows):
        print("  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
        if j == 0:
            print("  " + "  ".join("-" * w for w in widths))


def main(argv: list[str]) -> None:
    which = argv[0] if argv else "all"
    if which not in ("writes", "join", "migrate", "guests", "grpc", "events", "all"):
        raise SystemExit(__doc__)
    with tempfile.TemporaryDirectory(prefix="gpve-bench-") as base:
        if which in ("writes", "all"):
            table("Replicated writes, 3 nodes on loopback", writes.run(base))
        if which in ("join", "all"):
            table("Joining a node to a cluster with 10,000 guests / keys", join.run(base))
        if which in ("guests", "all"):
            table("Guest operations, test guest under software emulation (median of 5)", guest_ops.run(base))
        if which in ("grpc", "all"):
            table("Reading one guest: gRPC against REST, one node on loopback", grpc_get.run(base))
        if which in ("events", "all"):
            table("Events: WebSocket stream against polling, 3 nodes on loopback", events.run(base))
        if which in ("migrate", "all"):
            table("Live migration of the test guest (software emulation, 256 MiB)", migrate.run(base))


if __name__ == "__main__":
    main(sys.argv[1:])
