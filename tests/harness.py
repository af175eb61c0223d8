"""Real `gpve serve` processes on loopback, for integration tests."""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import requests
import urllib3
from proxmoxer import ProxmoxAPI
from proxmoxer.tools import Tasks

urllib3.disable_warnings()
GPVE = [sys.executable, "-m", "api.cli"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.2):
    """Poll until `predicate()` is truthy (exceptions count as not yet: a node may be restarting)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s: {last!r}")


def free_ports(count: int) -> list[int]:
    socks, ports = [], []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def write_cluster_key(path: str) -> str:
    """A new random Raft key for a static cluster, in a 0600 file; returns its path."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return path


@dataclass
class NodeProcess:
    name: str
    data_dir: str
    api_port: int
    raft_port: int
    peers: str | None = None
    rate_limits: str | None = "off"  # the suite's own load would trip the defaults; tests of limits set them
    raft_bind: str | None = None
    cluster_key_file: str | None = None  # the static cluster's Raft key (every member the same)
    grpc_port: int = 0  # 0: a free port, picked here
    extra_args: list[str] = field(default_factory=list)  # more `gpve serve` options (e.g. `--rrd-interval`)
    prefix: list[str] = field(default_factory=list)  # runs the node under this command (`ip netns exec NS`)
    proc: subprocess.Popen | None = None
    log_path: str = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = os.path.join(os.path.dirname(self.data_dir), f"{self.name}.log")
        self.grpc_port = self.grpc_port or free_ports(1)[0]

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}/api2/json"

    @property
    def password(self) -> str:
        with open(os.path.join(self.data_dir, "root-password")) as f:
            return f.read().strip()

    def start(self) -> None:
        args = GPVE + ["serve", "--name", self.name, "--data-dir", self.data_dir, "--listen", "127.0.0.1",
                       "--api-port", str(self.api_port), "--raft-port", str(self.raft_port),
                       "--grpc-port", str(self.grpc_port)]
        if self.peers:
            args += ["--peers", self.peers]
        if self.rate_limits is not None:
            args += ["--rate-limits", self.rate_limits]
        if self.raft_bind:
            args += ["--raft-bind", self.raft_bind]
        if self.cluster_key_file:
            args += ["--cluster-key-file", self.cluster_key_file]
        args += self.extra_args
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.prefix + args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def wait_serving_own_certificate(self, timeout: float = 30.0) -> None:
        """Until the API serves the certificate in the node's `ssl/pve-ssl.pem`: a joiner restarts its API with the
        cluster's certificate just after its join answers, and a request in that window is refused or dropped."""
        def serving() -> bool:
            with open(os.path.join(self.data_dir, "ssl", "pve-ssl.pem")) as f:
                on_disk = ssl.PEM_cert_to_DER_cert(f.read())
            try:
                served = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", self.api_port), timeout=5))
            except OSError:
                return False
            return served == on_disk
        wait_for(serving, timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until this node answers and its own registration has been committed."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if os.path.exists(os.path.join(self.data_dir, "root-password")):
                    api = self.api(timeout=3)
                    names = [row["name"] for row in api.cluster.status.get() if row["type"] == "node"]
                    if self.name in names:
                        return
            except Exception as exc:  # not up yet
                last = exc
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} not ready: {last!r}; see {self.log_path}")

    def api(self, timeout: float = 10, password: str | None = None) -> ProxmoxAPI:
        return ProxmoxAPI("127.0.0.1", port=self.api_port, user="root@pam", password=password or self.password,
                          verify_ssl=False, timeout=timeout)

    def session(self) -> requests.Session:
        """A plain requests session logged in with a ticket (cookie + CSRF header)."""
        s = requests.Session()
        s.verify = False
        s.trust_env = False  # a CA bundle in the environment would override verify=False
        s.mount("https://", requests.adapters.HTTPAdapter(pool_maxsize=32))
        r = s.post(self.url + "/access/ticket", data={"username": "root@pam", "password": self.password},
                   timeout=10)
        r.raise_for_status()
        data = r.json()["data"]
        s.cookies.set("PVEAuthCookie", data["ticket"])
        s.headers["CSRFPreventionToken"] = data["CSRFPreventionToken"]
        return s

    def raft(self, session: requests.Session | None = None) -> dict:
        s = session or self.session()
        return s.get(f"https://127.0.0.1:{self.api_port}/v1/cluster/raft", timeout=5).json()


class Cluster:
    """`size` node processes: one static cluster (`--peers`), or standalone nodes that join through the API."""

    def __init__(self, base_dir: str, size: int, standalone: bool = False, proxied: bool = False) -> None:
        """With `proxied`, each node's Raft id is a proxy port and it binds another (see tests/faultproxy.py)."""
        ports = free_ports(3 * size)
        names = [f"n{i + 1}" for i in range(size)]
        peers = ",".join(f"{n}=127.0.0.1:{ports[size + i]}" for i, n in enumerate(names)) \
            if size > 1 and not standalone else None
        self.key_file = write_cluster_key(os.path.join(base_dir, "cluster.key")) if peers else None
        self.nodes = [NodeProcess(n, os.path.join(base_dir, n), ports[i], ports[size + i], peers,
                                  raft_bind=f"127.0.0.1:{ports[2 * size + i]}" if proxied else None,
                                  cluster_key_file=self.key_file)
                      for i, n in enumerate(names)]
        self.proxy_routes = {f"127.0.0.1:{ports[size + i]}": ports[2 * size + i] for i in range(size)}

    def start(self) -> Cluster:
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            node.wait_ready()
        return self

    def node(self, name: str) -> NodeProcess:
        return next(n for n in self.nodes if n.name == name)

    def leader(self, timeout: float = 15.0) -> NodeProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.proc and node.proc.poll() is None:
                    try:
                        name = node.raft().get("leader")
                    except Exception:
                        continue
                    if name:
                        return self.node(name)
            time.sleep(0.2)
        raise TimeoutError("no leader")

    def stop(self) -> None:
        """Stop the daemons, then the guests they leave running (guests outlive a daemon, as in Proxmox)."""
        for node in self.nodes:
            node.stop()
        for node in self.nodes:
            kill_guests(node.data_dir)

    def kill_all(self) -> None:
        procs = [n.proc for n in self.nodes if n.proc and n.proc.poll() is None]
        for p in procs:
            p.send_signal(signal.SIGKILL)
        for p in procs:
            p.wait(10)


@contextlib.contextmanager
def node_in(prefix: list[str], base: str) -> Iterator[NodeProcess]:
    """Node n1 of its own cluster, run with `prefix` (a network namespace's `ip netns exec`), ready; stopped and its
    guests killed afterwards."""
    api_port, raft_port, grpc_port = free_ports(3)
    proc = NodeProcess("n1", os.path.join(base, "n1"), api_port, raft_port, grpc_port=grpc_port, prefix=prefix)
    proc.start()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()
        kill_guests(proc.data_dir)


def kill_guests(data_dir: str) -> None:
    """Kill the QEMU processes whose pidfiles lie under `data_dir` (checked against their command line)."""
    for pidfile in glob.glob(os.path.join(data_dir, "**", "*.pid"), recursive=True):
        try:
            with open(pidfile) as f:
                pid = int(f.read().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if pidfile.encode() not in f.read():
                    continue
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            continue


def done(px, upid: str, timeout: float = 120) -> dict:
    """A task's final status (proxmoxer `Tasks.blocking_status`), asserting it ended."""
    status = Tasks.blocking_status(px, upid, timeout=timeout, polling_interval=0.2)
    assert status is not None, f"task {upid} did not end"
    return status


def ok(px, upid: str, timeout: float = 120) -> dict:
    """As `done`, asserting the task ended OK (its log in the message when not)."""
    status = done(px, upid, timeout)
    assert status["exitstatus"] == "OK", (status, px.nodes(upid.split(":")[1]).tasks(upid).log.get())
    return status
