"""Growing a cluster through the API, as operators do with Proxmox: create, join, remove, liveness."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import requests
from proxmoxer import ResourceException

from tests.harness import REPO, Cluster, wait_for

pytestmark = pytest.mark.slow


def members(node) -> list[str]:
    return sorted(r["name"] for r in node.api().cluster.status.get() if r["type"] == "node")


@pytest.fixture
def five(tmp_path):
    cluster = Cluster(str(tmp_path), 5, standalone=True).start()
    yield cluster
    cluster.stop()


def test_create_join_four_nodes_remove_one_and_watch_liveness(five):
    n1, *joiners = five.nodes
    px1 = n1.api()
    px1.cluster.config.post(clustername="prod")
    info = px1.cluster.config.join.get()
    fingerprint = info["nodelist"][0]["pve_fp"]
    assert len(fingerprint.split(":")) == 32
    for i, joiner in enumerate(joiners):
        if i == 3:  # the last one joins with the CLI, which calls the same API
            out = subprocess.run([sys.executable, "-m", "api.cli", "cluster", "--api-port", str(joiner.api_port),
                                  "--data-dir", joiner.data_dir, "join", f"127.0.0.1:{n1.api_port}",
                                  "--fingerprint", fingerprint, "--member-password-file",
                                  f"{n1.data_dir}/root-password"], cwd=REPO, capture_output=True, text=True)
            assert out.returncode == 0, out.stderr
        else:
            with pytest.raises(ResourceException) as exc:
                joiner.api().cluster.config.join.post(hostname=f"127.0.0.1:{n1.api_port}", password=n1.password,
                                                      fingerprint="AA:" * 31 + "AA")
            assert exc.value.status_code == 400 and "fingerprint" in str(exc.value.errors)
            joiner.api().cluster.config.join.post(hostname=f"127.0.0.1:{n1.api_port}", password=n1.password,
                                                  fingerprint=fingerprint)
        expected = sorted(n.name for n in five.nodes[: i + 2])
        for node in five.nodes[: i + 2]:
            wait_for(lambda node=node, expected=expected: members(node) == expected)
        joiner.wait_serving_own_certificate()
    for node in five.nodes:
        status = node.api().cluster.status.get()
        assert status[0]["name"] == "prod" and status[0]["nodes"] == 5 and status[0]["quorate"] == 1
        assert all(r["online"] == 1 for r in status[1:])
    # a ticket from node 1 works on node 5, and the joiners serve certificates of the cluster CA
    login = requests.post(n1.url + "/access/ticket", data={"username": "root@pam", "password": n1.password},
                          verify=False).json()["data"]
    n5 = five.nodes[4]
    r = requests.get(n5.url + "/cluster/config/nodes", cookies={"PVEAuthCookie": login["ticket"]}, verify=False)
    assert sorted(n["name"] for n in r.json()["data"]) == ["n1", "n2", "n3", "n4", "n5"]
    nodes = {n["name"]: n for n in px1.cluster.config.join.get()["nodelist"]}
    cli = subprocess.run([sys.executable, "-m", "api.cli", "cluster", "--api-port", str(n1.api_port), "--data-dir",
                          n1.data_dir, "nodes"], cwd=REPO, capture_output=True, text=True)
    assert all(name in cli.stdout for name in nodes)
    # a node that owns a guest cannot be removed; once it owns none, it can
    vmid = int(px1.cluster.nextid.get())
    px1.nodes("n5").qemu.create(vmid=vmid, name="pinned")
    with pytest.raises(ResourceException) as exc:
        px1.cluster.config.nodes("n5").delete()
    assert exc.value.status_code == 409 and "owns guests" in exc.value.content
    px1.nodes("n5").qemu(vmid).delete()
    wait_for(lambda: vmid not in {g["vmid"] for g in px1.cluster.resources.get(type="vm")})
    px1.cluster.config.nodes("n5").delete()
    n5.stop()
    for node in five.nodes[:4]:
        wait_for(lambda node=node: members(node) == ["n1", "n2", "n3", "n4"])
    assert px1.cluster.status.get()[0]["quorate"] == 1
    # a node that stops answering is shown offline, and its guests as unknown
    vmid = int(px1.cluster.nextid.get())
    px1.nodes("n4").qemu.create(vmid=vmid, name="on-n4")
    five.nodes[3].kill()
    started = time.monotonic()
    wait_for(lambda: {r["name"]: r["online"] for r in px1.cluster.status.get()[1:]}["n4"] == 0, timeout=10,
             interval=0.1)
    assert time.monotonic() - started < 6  # the documented bound: 5 s
    resources = {r["vmid"]: r["status"] for r in px1.cluster.resources.get(type="vm")}
    assert resources[vmid] == "unknown"
    # three of four members remain: still quorate, writes go on
    assert px1.cluster.status.get()[0]["quorate"] == 1
    px1.nodes("n1").qemu.create(vmid=int(px1.cluster.nextid.get()), name="after")
