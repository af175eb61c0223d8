"""Reading one guest: unary gRPC `GuestService.Get` against REST `GET …/status/current`, on one node, 1 and 32
concurrent clients, in the same run (the guest is stopped, so both measure the API's path, not QMP)."""

from __future__ import annotations

import os

import requests
from proxmoxer.tools import Tasks

from api.rpc.pb import guest_pb2, guest_pb2_grpc
from bench.writes import measure
from tests.grpc_client import channel
from tests.harness import Cluster

CLIENTS = (1, 32)
SECONDS = 5.0
WARM_UP = 20  # requests per client before measuring


def run(base: str) -> list[tuple]:
    cluster = Cluster(os.path.join(base, "gpve-grpc"), 1).start()
    rows = [("API", "clients", "requests/s", "p50 ms", "p99 ms")]
    try:
        node = cluster.nodes[0]
        px = node.api(timeout=60)
        vmid = int(px.cluster.nextid.get())
        Tasks.blocking_status(px, px.nodes("n1").qemu.create(vmid=vmid, name="bench", memory=256))
        secret = px.access.users("root@pam").token("bench").post(privsep=0)["value"]
        auth = f"PVEAPIToken=root@pam!bench={secret}"
        url = node.url + f"/nodes/n1/qemu/{vmid}/status/current"
        request, metadata = guest_pb2.GetGuestRequest(vmid=vmid), [("authorization", auth)]
        for clients in CLIENTS:
            sessions = []
            for _ in range(clients):
                s = requests.Session()
                s.verify, s.trust_env = False, False
                s.headers["Authorization"] = auth
                sessions.append(s)

            def rest(c: int, i: int, sessions=sessions) -> None:
                r = sessions[c].get(url, timeout=10)
                r.raise_for_status()

            stubs = [guest_pb2_grpc.GuestServiceStub(channel(node)) for _ in range(clients)]

            def grpc_get(c: int, i: int, stubs=stubs) -> None:
                stubs[c].Get(request, metadata=metadata, timeout=10)

            for name, op in (("REST GET …/status/current (HTTPS/1.1)", rest), ("gRPC GuestService.Get (HTTP/2)",
                                                                                grpc_get)):
                for c in range(clients):
                    for i in range(WARM_UP):
                        op(c, i)
                ops, p50, p99 = measure(op, clients, SECONDS)
                rows.append((name, clients, f"{ops:.0f}", f"{p50:.1f}", f"{p99:.1f}"))
    finally:
        cluster.stop()
    return rows
