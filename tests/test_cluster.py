"""Three real `gpve serve` processes on loopback: replication, failover, durability, quorum."""

from __future__ import annotations

import itertools
import json
import random
import threading
import time

import pytest
import requests
from proxmoxer import ResourceException

from tests.faultproxy import FaultProxy
from tests.harness import Cluster, wait_for

pytestmark = pytest.mark.slow


def guests_seen_by(node) -> dict[int, str]:
    return {r["vmid"]: r["name"] for r in node.api().cluster.resources.get(type="vm")}


def test_nextid_never_offers_a_vmid_just_taken_through_another_node(three_nodes):
    n1, n2, n3 = (node.session() for node in three_nodes.nodes)
    url = {name: node.url for name, node in zip(("n1", "n2", "n3"), three_nodes.nodes, strict=True)}
    taken: set[int] = set()
    for _ in range(50):
        vmid = int(n1.get(url["n1"] + "/cluster/nextid").json()["data"])
        assert vmid not in taken
        r = n2.post(url["n2"] + "/nodes/n2/qemu", data={"vmid": vmid})  # acknowledged through node 2
        assert r.status_code == 200, r.text
        taken.add(vmid)
        assert int(n1.get(url["n1"] + "/cluster/nextid").json()["data"]) not in taken
        r = n3.get(url["n3"] + "/cluster/nextid", params={"vmid": vmid})
        assert r.status_code == 400 and r.json()["errors"] == {"vmid": f"VM {vmid} already exists"}


def test_proxmoxer_against_every_node(three_nodes):
    cluster = three_nodes
    created = {}
    for node in cluster.nodes:
        px = node.api()
        for target in ("n1", "n2", "n3"):
            vmid = int(px.cluster.nextid.get())
            px.nodes(target).qemu.create(vmid=vmid, name=f"from-{node.name}-on-{target}", memory=512)
            created[vmid] = (target, f"from-{node.name}-on-{target}")
    assert len(created) == 9
    for node in cluster.nodes:
        px = node.api()
        status = px.cluster.status.get()
        assert status[0]["nodes"] == 3 and status[0]["quorate"] == 1
        assert sorted(r["name"] for r in status if r["type"] == "node") == ["n1", "n2", "n3"]
        assert all(r["online"] == 1 for r in status if r["type"] == "node")
        wait_for(lambda px=px: {v: (g["node"], g["name"]) for v, g in
                                ((r["vmid"], r) for r in px.cluster.resources.get(type="vm"))} == created)
        for vmid, (target, name) in created.items():
            assert px.nodes(target).qemu(vmid).config.get()["name"] == name
            assert vmid in {g["vmid"] for g in px.nodes(target).qemu.get()}
    # a ticket issued by one node is accepted by every other
    session = cluster.nodes[0].session()
    for node in cluster.nodes[1:]:
        r = session.get(node.url + "/cluster/nextid", timeout=5)
        assert r.status_code == 200 and r.json()["data"].isdigit()
    # an answer from the node a request is about comes back as it gave it, with one X-Request-ID (the caller's);
    # a body over the parameter limit is refused as the node itself refuses it
    n1 = cluster.nodes[0]
    r = session.get(f"{n1.url}/nodes/n2/status", headers={"X-Request-ID": "fwd-1"}, timeout=10)
    assert r.status_code == 200 and r.raw.headers.getlist("X-Request-ID") == ["fwd-1"]
    on_n2 = next(vmid for vmid, (target, _) in created.items() if target == "n2")
    r = session.put(f"{n1.url}/nodes/n2/qemu/{on_n2}/config", data={"description": "x" * 600_000}, timeout=10)
    assert (r.status_code, r.reason) == (413, "request body too large - the limit is 524288 bytes")
    assert len(r.raw.headers.getlist("X-Request-ID")) == 1
    assert session.get(f"{n1.url}/nodes/n2/qemu/{on_n2}/config", timeout=10).json()["data"]["name"] == \
        created[on_n2][1]


class CreateLoad:
    """Racing clients: each takes a VMID from /cluster/nextid and creates with it on a random node.

    A client that loses its connection or gets 502/503 retries on another node with the same request id,
    as real clients do (a retry that lands after the first attempt did answers with the first result);
    the answer it finally gets is recorded.
    """

    def __init__(self, cluster: Cluster, total: int, workers: int) -> None:
        self.cluster, self.total, self.workers = cluster, total, workers
        self.attempts = itertools.count()
        self.lock = threading.Lock()
        self.outcomes: list[tuple[int, int, int, str]] = []  # attempt, vmid, status, message
        self.acked: dict[int, str] = {}  # vmid -> name
        self.sessions = {n.name: n.session() for n in cluster.nodes}

    def _request(self, rng: random.Random, method: str, path: str, **kwargs) -> requests.Response:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            node = rng.choice(self.cluster.nodes)
            try:  # `{node}` in the path is the node we talk to: a retry may go to another one
                r = self.sessions[node.name].request(method, node.url + path.format(node=node.name), timeout=10,
                                                     **kwargs)
            except requests.RequestException:
                time.sleep(0.1)
                continue
            if r.status_code in (502, 503):  # the guest's node or the quorum is away: try again
                time.sleep(0.2)
                continue
            return r
        raise AssertionError(f"no answer for {method} {path} within 60 s")

    def worker(self, wid: int) -> None:
        rng = random.Random(wid)
        while (attempt := next(self.attempts)) < self.total:
            vmid = int(self._request(rng, "GET", "/cluster/nextid").json()["data"])
            name = f"load-{attempt}"
            r = self._request(rng, "POST", "/nodes/{node}/qemu", data={"vmid": vmid, "name": name},
                              headers={"X-Request-ID": f"load-{attempt}"})
            with self.lock:
                self.outcomes.append((attempt, vmid, r.status_code, r.json().get("message", "")))
                if r.status_code == 200:
                    assert vmid not in self.acked, f"VMID {vmid} acknowledged twice"
                    self.acked[vmid] = name

    def run(self, during=None) -> None:
        threads = [threading.Thread(target=self.worker, args=(i,)) for i in range(self.workers)]
        for t in threads:
            t.start()
        if during:
            during(self)
        for t in threads:
            t.join(120)
            assert not t.is_alive(), "a client hung"


def test_parallel_creates_survive_leader_kill_and_full_restart(three_nodes):
    cluster = three_nodes
    killed = {}

    def kill_leader_midway(load: CreateLoad) -> None:
        wait_for(lambda: len(load.outcomes) >= 70, timeout=60, interval=0.02)
        leader = cluster.leader()
        killed["term"] = leader.raft()["term"]
        leader.kill()
        killed["node"] = leader

    load = CreateLoad(cluster, total=200, workers=16)
    load.run(during=kill_leader_midway)

    assert len(load.outcomes) == 200
    statuses = {status for _, _, status, _ in load.outcomes}
    assert statuses <= {200, 409, 400}, statuses
    assert all("already exists" in msg for _, _, status, msg in load.outcomes if status == 409)
    assert len(load.acked) >= 10  # racing on one nextid, most clients lose with 409: that is the point
    survivors = [n for n in cluster.nodes if n is not killed["node"]]
    for node in survivors:
        seen = wait_for(lambda node=node: (lambda g: g if all(g.get(v) == n for v, n in load.acked.items()) else None)(
            guests_seen_by(node)))
        assert {v: seen[v] for v in load.acked} == load.acked
    assert guests_seen_by(survivors[0]) == guests_seen_by(survivors[1])
    new_leader = cluster.leader()
    term = new_leader.raft()["term"]
    assert term > killed["term"] and new_leader.raft()["leader"] == new_leader.name
    with open(new_leader.log_path) as f:  # each member logs the terms it sees and their leader: its own election
        logged = f.read()
    own = f"127.0.0.1:{new_leader.raft_port}"
    seen = [json.loads(line) for line in logged.splitlines() if '"raft leadership"' in line]
    assert {"node": new_leader.name, "term": term, "leader": own, "member": own} in [
        {k: e.get(k) for k in ("node", "term", "leader", "member")} for e in seen], seen

    # the killed leader comes back and catches up
    killed["node"].start()
    killed["node"].wait_ready()
    reference = guests_seen_by(survivors[0])
    wait_for(lambda: guests_seen_by(killed["node"]) == reference)

    # all three die at once; every acknowledged create is still there afterwards
    cluster.kill_all()
    for node in cluster.nodes:
        node.start()
    for node in cluster.nodes:
        node.wait_ready()
    for node in cluster.nodes:
        seen = wait_for(lambda node=node: guests_seen_by(node) == reference and reference)
        lost = {v: n for v, n in load.acked.items() if seen.get(v) != n}
        assert not lost, f"acknowledged creates lost: {lost}"


def test_without_quorum_writes_fail_fast_and_reads_work(three_nodes):
    cluster = three_nodes
    n1, n2, n3 = cluster.nodes
    px = n1.api()
    vmid = int(px.cluster.nextid.get())
    px.nodes("n1").qemu.create(vmid=vmid, name="before-outage")
    n2.kill()
    n3.kill()
    wait_for(lambda: px.cluster.status.get()[0]["quorate"] == 0, timeout=10)
    started = time.monotonic()
    with pytest.raises(ResourceException) as exc:
        px.nodes("n1").qemu.create(vmid=vmid + 1, name="during-outage")
    assert exc.value.status_code == 503
    assert time.monotonic() - started < 1.0
    assert px.nodes("n1").qemu(vmid).config.get()["name"] == "before-outage"
    assert vmid in {g["vmid"] for g in px.nodes("n1").qemu.get()}
    with pytest.raises(ResourceException) as exc:  # which VMIDs are free is a question for the majority
        px.cluster.nextid.get()
    assert exc.value.status_code == 503
    # quorum back: writes work again without manual steps
    n2.start()
    n2.wait_ready()
    wait_for(lambda: px.cluster.status.get()[0]["quorate"] == 1, timeout=15)
    wait_for(lambda: px.nodes("n1").qemu.create(vmid=vmid + 2, name="after-outage"), timeout=15)


def test_a_partitioned_minority_refuses_writes_serves_reads_and_catches_up(tmp_path):
    cluster = Cluster(str(tmp_path), 5, proxied=True)
    proxy = FaultProxy(cluster.proxy_routes, cluster.key_file)
    try:
        cluster.start()
        n1, n2, n3, n4, n5 = cluster.nodes
        px1, px4 = n1.api(), n4.api()
        vmid = int(px1.cluster.nextid.get())
        px1.nodes("n4").qemu.create(vmid=vmid, name="before")
        wait_for(lambda: vmid in {g["vmid"] for g in px4.nodes("n4").qemu.get()})
        ids = {n.name: f"127.0.0.1:{n.raft_port}" for n in cluster.nodes}
        proxy.partition([ids["n4"], ids["n5"]], [ids["n1"], ids["n2"], ids["n3"]])
        wait_for(lambda: px4.cluster.status.get()[0]["quorate"] == 0, timeout=15)
        # the minority: writes fail fast with 503, reads are served
        started = time.monotonic()
        with pytest.raises(ResourceException) as exc:
            px4.nodes("n4").qemu(vmid).config.put(description="during partition")
        assert exc.value.status_code == 503 and time.monotonic() - started < 1.0
        assert px4.nodes("n4").qemu(vmid).config.get()["name"] == "before"
        # the majority goes on writing
        written = []
        for i in range(5):
            new = int(px1.cluster.nextid.get())
            px1.nodes("n1").qemu.create(vmid=new, name=f"majority-{i}")
            written.append(new)
        assert px1.cluster.status.get()[0]["quorate"] == 1
        # the minority cannot know which VMIDs the majority took: nextid refuses instead of offering one
        with pytest.raises(ResourceException) as exc:
            px4.cluster.nextid.get()
        assert exc.value.status_code == 503
        # heal: the minority catches up by itself, nothing acknowledged is lost
        proxy.heal()
        for node in cluster.nodes:
            wait_for(lambda node=node: set(written) <= set(guests_seen_by(node)) and
                     node.api().cluster.status.get()[0]["quorate"] == 1, timeout=30)
        px4.nodes("n4").qemu(vmid).config.put(description="after heal")
        assert px1.nodes("n4").qemu(vmid).config.get()["description"] == "after heal"
    finally:
        cluster.stop()
        proxy.close()
