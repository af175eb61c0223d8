"""The API's requests/s and p50/p99 on one node at 100 and 10,000 guests (100,000 with `--huge`), load from this
process (threads, each with its own logged-in session) against the node's process; beside each row the
framework's floor (bench/peer_server.py: Quart + hypercorn + TLS answering the same bytes, no rules), measured in
the same run.

Endpoints: `GET /cluster/resources`, `GET /nodes/N/qemu`, `GET …/config`, `GET …/status/current`, `POST …/qemu`
(a config-only guest), `PUT …/config` (`description`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import requests

from bench.fill import FIRST_VMID, fill
from bench.writes import measure
from tests.harness import Cluster, free_ports, wait_for

CLIENTS = 4


def _session(node) -> requests.Session:
    s = node.session()
    s.mount("https://", requests.adapters.HTTPAdapter(pool_maxsize=4))
    return s


def _peer(base: str, node, bodies: dict[str, str]) -> tuple[subprocess.Popen, str]:
    path = os.path.join(base, "peer-bodies.json")
    with open(path, "w") as f:
        json.dump(bodies, f)
    ssl = os.path.join(node.data_dir, "ssl")
    port = free_ports(1)[0]
    proc = subprocess.Popen([sys.executable, "-m", "bench.peer_server", str(port), os.path.join(ssl, "pve-ssl.pem"),
                             os.path.join(ssl, "pve-ssl.key"), path], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"https://127.0.0.1:{port}/api2/json"
    probe = requests.Session()
    probe.verify, probe.trust_env = False, False
    wait_for(lambda: probe.get(url + "/cluster/resources", timeout=2).ok, timeout=30)
    return proc, url


def run(base: str, quick: bool = False, huge: bool = False) -> list[tuple]:
    seconds = 2.0 if quick else 5.0
    sizes = [100, 10_000] + ([100_000] if huge and not quick else [])
    rows = [("request", "guests", "clients", "req/s", "p50 ms", "p99 ms", "floor req/s", "floor p50 ms", "ratio")]
    cluster = Cluster(os.path.join(base, "gpve-api"), 1).start()
    node = cluster.nodes[0]
    have = 0
    next_vmid = iter(range(FIRST_VMID + 2_000_000, 10**9))  # the creates' guests
    try:
        for size in sizes:
            fill(node, size - have, first=have)
            have = size
            sessions = [_session(node) for _ in range(CLIENTS)]
            vmid = FIRST_VMID + size // 2
            gets = {"GET /cluster/resources": "/cluster/resources", "GET /nodes/N/qemu": f"/nodes/{node.name}/qemu",
                    "GET …/config": f"/nodes/{node.name}/qemu/{vmid}/config",
                    "GET …/status/current": f"/nodes/{node.name}/qemu/{vmid}/status/current"}
            bodies = {path: sessions[0].get(node.url + path, timeout=60).text for path in gets.values()}
            peer, peer_url = _peer(base, node, bodies)
            try:
                peer_sessions = [requests.Session() for _ in range(CLIENTS)]
                for s in peer_sessions:
                    s.verify, s.trust_env = False, False
                cases = [(name, "GET", path, None) for name, path in gets.items()]
                cases += [("POST /nodes/N/qemu", "POST", f"/nodes/{node.name}/qemu", lambda c, i, ids=next_vmid: {
                              "vmid": next(ids), "name": f"b{c}-{i}", "memory": 1024}),
                          ("PUT …/config", "PUT", f"/nodes/{node.name}/qemu/{{vmid}}/config",
                           lambda c, i: {"description": f"edit {i}"})]
                for name, method, path, data in cases:
                    figures = []
                    for target, ss in ((node.url, sessions), (peer_url, peer_sessions)):
                        def op(c: int, i: int, target=target, ss=ss, method=method, path=path, data=data) -> None:
                            url = target + path.replace("{vmid}", str(FIRST_VMID + c))
                            r = ss[c].request(method, url, data=data(c, i) if data else None, timeout=60)
                            r.raise_for_status()
                        for c in range(CLIENTS):
                            op(c, -1)  # warm the connection
                        figures.append(measure(op, CLIENTS, seconds))
                    (ops, p50, p99), (fops, fp50, _) = figures
                    rows.append((name, f"{size:,}", CLIENTS, f"{ops:.0f}", f"{p50:.1f}", f"{p99:.1f}", f"{fops:.0f}",
                                 f"{fp50:.1f}", f"{fops / ops:.1f}×"))
            finally:
                peer.terminate()
                peer.wait(10)
    finally:
        cluster.stop()
    return rows

