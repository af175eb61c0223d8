"""The API's requests/s and p50/p99 on one node at 100 and 10,000 guests (100,000 with `--huge`), load from
another process against the node's; beside each row the framework's floor (bench/peer_server.py: Quart + hypercorn
+ TLS answering the same bytes, no rules), measured in the same run.

Endpoints: `GET /cluster/resources` (as root@pam, 4 clients and 1; and as a user whose only grant is PVEAuditor on a
pool holding every tenth guest), `GET /nodes/N/qemu`, `GET …/config`, `GET …/status/current`, `POST …/qemu` (a
config-only guest), `PUT …/config` (`description`).

GETs are driven by wrk (C, one thread, keep-alive connections; Debian's `wrk`) where it is installed: Python clients
spend more CPU per request than the node does, so they measured themselves. Without wrk, and for the writes (each
needs its own parameters), threads of this process with a logged-in requests session each. Beside the latencies,
the node's (and the floor's) CPU time per request: on a machine shared with other work the figure that moves least.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from functools import partial

import requests

from bench.fill import FIRST_VMID, fill
from bench.writes import measure
from tests.harness import Cluster, free_ports, wait_for

CLIENTS = 4
POOL_USER, POOL_PASSWORD, POOL = "bench@pve", "bench-password-1", "bench"


def _session(node) -> requests.Session:
    return _login(node.url, "root@pam", node.password)


def _login(url: str, user: str, password: str) -> requests.Session:
    """A logged-in session; patient: a node just filled with 100,000 guests is busy for a while (first samples)."""
    s = requests.Session()
    s.verify, s.trust_env = False, False
    s.mount("https://", requests.adapters.HTTPAdapter(pool_maxsize=4))
    r = s.post(url + "/access/ticket", data={"username": user, "password": password}, timeout=120)
    r.raise_for_status()
    data = r.json()["data"]
    s.cookies.set("PVEAuthCookie", data["ticket"])
    s.headers["CSRFPreventionToken"] = data["CSRFPreventionToken"]
    return s


def _pool_user(node, root: requests.Session, size: int, first: int) -> None:
    """A user with PVEAuditor on pool `bench` only; the pool holds every tenth guest of `first`…`size - 1`."""
    url = node.url
    if first == 0:
        for path, data in (("/access/users", {"userid": POOL_USER, "password": POOL_PASSWORD}),
                           ("/pools", {"poolid": POOL}),
                           ("/access/acl", {"path": f"/pool/{POOL}", "roles": "PVEAuditor", "users": POOL_USER})):
            method = root.put if path == "/access/acl" else root.post
            method(url + path, data=data, timeout=60).raise_for_status()
    vms = [str(FIRST_VMID + i) for i in range(first, size) if i % 10 == 0]
    for start in range(0, len(vms), 2000):
        root.put(url + f"/pools/{POOL}", data={"vms": ",".join(vms[start:start + 2000])},
                 timeout=120).raise_for_status()


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


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process `pid` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def costed(pid: int, measure_once, seconds: float) -> tuple[float, float, float, float]:
    """`measure_once()`'s (requests/s, p50, p99) and the process's CPU ms per request over it."""
    before = cpu_seconds(pid)
    ops, p50, p99 = measure_once()
    return ops, p50, p99, (cpu_seconds(pid) - before) * 1000 / max(1.0, ops * seconds)  # none done: all of it


def wrk(url: str, ticket: str | None, clients: int, seconds: float) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) of GET `url` from wrk with `clients` connections; raises on any error answer."""
    args = ["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--timeout", "60s", "--latency"]
    if ticket:
        args += ["-H", f"Cookie: PVEAuthCookie={ticket}"]
    out = subprocess.run(args + [url], capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors: {out}")

    def ms(percent: int) -> float:
        m = re.search(rf"{percent}%\s+([\d.]+)(us|ms|s)\b", out)
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), ms(50), ms(99)


def run(base: str, quick: bool = False, huge: bool = False) -> list[tuple]:
    seconds = 2.0 if quick else 5.0
    sizes = [100, 10_000] + ([100_000] if huge and not quick else [])
    load = "wrk" if shutil.which("wrk") else "requests"
    rows = [("request", "guests", "clients", "load", "req/s", "p50 ms", "p99 ms", "node CPU ms/req", "floor req/s",
             "floor p50 ms", "floor CPU ms/req", "floor / ours req/s")]
    cluster = Cluster(os.path.join(base, "gpve-api"), 1).start()
    node = cluster.nodes[0]
    have = 0
    next_vmid = iter(range(FIRST_VMID + 2_000_000, 10**9))  # the creates' guests
    try:
        for size in sizes:
            fill(node, size - have, first=have)
            root = _session(node)
            _pool_user(node, root, size, have)
            have = size
            sessions = [_session(node) for _ in range(CLIENTS)]
            pool_users = [_login(node.url, POOL_USER, POOL_PASSWORD) for _ in range(CLIENTS)]
            vmid = FIRST_VMID + size // 2
            # (row name, clients, node path, peer path, sessions)
            gets = [("GET /cluster/resources", CLIENTS, "/cluster/resources", "/cluster/resources", sessions),
                    ("GET /cluster/resources", 1, "/cluster/resources", "/cluster/resources", sessions),
                    ("GET /cluster/resources (pool user)", CLIENTS, "/cluster/resources", "/pool/resources",
                     pool_users),
                    ("GET /nodes/N/qemu", CLIENTS, f"/nodes/{node.name}/qemu", f"/nodes/{node.name}/qemu", sessions),
                    ("GET …/config", CLIENTS, f"/nodes/{node.name}/qemu/{vmid}/config",
                     f"/nodes/{node.name}/qemu/{vmid}/config", sessions),
                    ("GET …/status/current", CLIENTS, f"/nodes/{node.name}/qemu/{vmid}/status/current",
                     f"/nodes/{node.name}/qemu/{vmid}/status/current", sessions)]
            bodies = {peer: ss[0].get(node.url + path, timeout=120).text for _, _, path, peer, ss in gets}
            peer, peer_url = _peer(base, node, bodies)
            try:
                peer_sessions = [requests.Session() for _ in range(CLIENTS)]
                for s in peer_sessions:
                    s.verify, s.trust_env = False, False
                for name, clients, path, peer_path, ss in gets:
                    ours = costed(node.proc.pid, partial(_get, load, node.url + path, ss[0].cookies["PVEAuthCookie"],
                                                         ss, clients, seconds), seconds)
                    floor = costed(peer.pid, partial(_get, load, peer_url + peer_path, None, peer_sessions, clients,
                                                     seconds), seconds)
                    rows.append(_row(name, size, clients, load, ours, floor))
                writes = [("POST /nodes/N/qemu", "POST", f"/nodes/{node.name}/qemu", lambda c, i, ids=next_vmid: {
                              "vmid": next(ids), "name": f"b{c}-{i}", "memory": 1024}),
                          ("PUT …/config", "PUT", f"/nodes/{node.name}/qemu/{{vmid}}/config",
                           lambda c, i: {"description": f"edit {i}"})]
                for name, method, path, data in writes:
                    figures = []
                    for target, ss, pid in ((node.url, sessions, node.proc.pid), (peer_url, peer_sessions, peer.pid)):
                        def op(c: int, i: int, target=target, ss=ss, method=method, path=path, data=data) -> None:
                            url = target + path.replace("{vmid}", str(FIRST_VMID + c))
                            r = ss[c].request(method, url, data=data(c, i) if data else None, timeout=60)
                            r.raise_for_status()
                        for c in range(CLIENTS):
                            op(c, -1)  # warm the connection
                        figures.append(costed(pid, lambda op=op: measure(op, CLIENTS, seconds), seconds))
                    rows.append(_row(name, size, CLIENTS, "requests", *figures))
            finally:
                peer.terminate()
                peer.wait(10)
    finally:
        cluster.stop()
    return rows


def _get(load: str, url: str, ticket: str | None, sessions: list[requests.Session], clients: int,
         seconds: float) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) of GET `url` by `clients` clients: wrk's connections, or threads."""
    if load == "wrk":
        return wrk(url, ticket, clients, seconds)
    return measure(lambda c, i: sessions[c].get(url, timeout=60).raise_for_status(), clients, seconds)


def _row(name: str, size: int, clients: int, load: str, ours: tuple, floor: tuple) -> tuple:
    (ops, p50, p99, cpu), (fops, fp50, _, fcpu) = ours, floor
    return (name, f"{size:,}", clients, load, f"{ops:.0f}", f"{p50:.1f}", f"{p99:.1f}", f"{cpu:.2f}", f"{fops:.0f}",
            f"{fp50:.1f}", f"{fcpu:.2f}", f"{fops / ops:.1f}×" if ops else "–")
