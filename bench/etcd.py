"""An etcd cluster on loopback (Debian's etcd-server), the peer for write and join benchmarks."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time

import requests

from tests.harness import free_ports


class EtcdNode:
    def __init__(self, base: str, name: str, client_port: int, peer_port: int) -> None:
        self.name, self.client_port, self.peer_port = name, client_port, peer_port
        self.data_dir = os.path.join(base, name)
        self.proc: subprocess.Popen | None = None

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def start(self, initial_cluster: str, state: str = "new") -> None:
        os.makedirs(os.path.dirname(self.data_dir), exist_ok=True)
        log = open(self.data_dir + ".log", "ab")
        self.proc = subprocess.Popen(
            ["etcd", "--name", self.name, "--data-dir", self.data_dir, "--listen-client-urls", self.client_url,
             "--advertise-client-urls", self.client_url, "--listen-peer-urls", self.peer_url,
             "--initial-advertise-peer-urls", self.peer_url, "--initial-cluster", initial_cluster,
             "--initial-cluster-state", state, "--initial-cluster-token", "bench"],
            stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class EtcdCluster:
    def __init__(self, base: str, size: int) -> None:
        if shutil.which("etcd") is None:
            raise RuntimeError("etcd is not installed (Debian package etcd-server)")
        ports = free_ports(2 * 8)
        self.spare = iter(ports[2 * size:])
        self.nodes = [EtcdNode(base, f"e{i + 1}", ports[2 * i], ports[2 * i + 1]) for i in range(size)]
        self.base = base

    def initial(self, nodes) -> str:
        return ",".join(f"{n.name}={n.peer_url}" for n in nodes)

    def start(self) -> EtcdCluster:
        for node in self.nodes:
            node.start(self.initial(self.nodes))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(self.nodes[0].client_url + "/health", timeout=1).json().get("health") == "true":
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise TimeoutError("etcd did not become healthy")

    def put(self, session: requests.Session, key: str, value: str, node: int = 0) -> None:
        body = {"key": base64.b64encode(key.encode()).decode(), "value": base64.b64encode(value.encode()).decode()}
        r = session.post(self.nodes[node].client_url + "/v3/kv/put", json=body, timeout=10)
        r.raise_for_status()

    def revision(self, node: EtcdNode) -> int:
        r = requests.post(node.client_url + "/v3/kv/range", json={"key": base64.b64encode(b"\0").decode()}, timeout=5)
        return int(r.json()["header"]["revision"])

    def add_member(self) -> EtcdNode:
        name = f"e{len(self.nodes) + 1}"
        node = EtcdNode(self.base, name, next(self.spare), next(self.spare))
        deadline = time.monotonic() + 60
        while True:  # etcd refuses a new member until the last one has been healthy for a while
            r = requests.post(self.nodes[0].client_url + "/v3/cluster/member/add", json={"peerURLs": [node.peer_url]},
                              timeout=10)
            if r.status_code == 200 or time.monotonic() > deadline:
                r.raise_for_status()
                break
            time.sleep(0.2)
        self.nodes.append(node)
        node.start(self.initial(self.nodes), state="existing")
        return node

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
