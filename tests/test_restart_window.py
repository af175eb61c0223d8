"""A restarted node answers only from a state that includes its own committed log (issue 10, item 9a)."""

from __future__ import annotations

import time

import pytest
import requests

from engine import commands as cmd
from tests.faultproxy import FaultProxy
from tests.harness import Cluster, wait_for
from tests.logfill import append_commands

pytestmark = pytest.mark.slow
FILL = 19_000  # below the compaction threshold (20,000 entries): the restart replays them all


def test_killed_node_never_serves_a_deleted_token_or_hides_a_guest_while_replaying(tmp_path):
    cluster = Cluster(str(tmp_path), 1).start()
    node = cluster.nodes[0]
    try:
        root = node.session()
        api = node.url
        r = root.post(api + "/access/users", data={"userid": "ci@pve"})
        assert r.status_code == 200, r.text
        root.put(api + "/access/acl", data={"path": "/", "roles": "PVEAuditor", "users": "ci@pve"}).raise_for_status()
        r = root.post(api + "/access/users/ci@pve/token/t1", data={"privsep": 0})
        token = f"PVEAPIToken=ci@pve!t1={r.json()['data']['value']}"
        vmid = int(root.get(api + "/cluster/nextid").json()["data"])
        root.post(api + "/nodes/n1/qemu", data={"vmid": vmid, "name": "base"}).raise_for_status()
        wait_for(lambda: root.get(api + f"/nodes/n1/qemu/{vmid}/config").json()["data"].get("lock") is None)

        node.stop()
        append_commands(node.data_dir, f"127.0.0.1:{node.raft_port}", [
            cmd.UpdateGuestConfig(request_id=f"fill-{i}", ts=time.time(), node="n1", vmid=vmid,
                                  set={"description": f"edit {i}"}) for i in range(FILL)])
        node.start()
        node.wait_ready(60)
        root = node.session()
        assert root.get(api + f"/nodes/n1/qemu/{vmid}/config").json()["data"]["description"] == f"edit {FILL - 1}"
        anon = requests.Session()
        anon.verify, anon.trust_env = False, False
        assert anon.get(api + "/cluster/resources", headers={"Authorization": token}).status_code == 200

        # the last two acknowledged writes before the kill: a new guest, and the token revoked
        canary = vmid + 1
        root.post(api + "/nodes/n1/qemu", data={"vmid": canary, "name": "canary"}).raise_for_status()
        root.delete(api + "/access/users/ci@pve/token/t1").raise_for_status()
        node.kill()
        node.start()

        seen: dict[str, list[int]] = {"token": [], "guest": []}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (401 in seen["token"] and 200 in seen["guest"]):
            try:
                seen["token"].append(anon.get(api + "/cluster/resources", headers={"Authorization": token},
                                              timeout=15).status_code)
                seen["guest"].append(root.get(api + f"/nodes/n1/qemu/{canary}/status/current",
                                              timeout=15).status_code)
            except requests.ConnectionError:
                time.sleep(0.02)  # not listening yet
        assert 200 not in seen["token"], seen
        assert 404 not in seen["guest"], seen
        assert 401 in seen["token"] and 200 in seen["guest"], seen
    finally:
        cluster.stop()


def test_a_follower_that_missed_a_revocation_never_accepts_the_revoked_token_after_a_restart(tmp_path):
    cluster = Cluster(str(tmp_path), 3, proxied=True)
    proxy = FaultProxy(cluster.proxy_routes, cluster.key_file)
    try:
        cluster.start()
        n1, n2, n3 = cluster.nodes
        root = n1.session()
        root.post(n1.url + "/access/users", data={"userid": "ci@pve"}).raise_for_status()
        root.put(n1.url + "/access/acl", data={"path": "/", "roles": "PVEAuditor", "users": "ci@pve"})
        value = root.post(n1.url + "/access/users/ci@pve/token/t1", data={"privsep": 0}).json()["data"]["value"]
        token = {"Authorization": f"PVEAPIToken=ci@pve!t1={value}"}
        anon = requests.Session()
        anon.verify, anon.trust_env = False, False
        wait_for(lambda: anon.get(n3.url + "/cluster/resources", headers=token).status_code == 200)
        ids = {n.name: f"127.0.0.1:{n.raft_port}" for n in cluster.nodes}
        proxy.partition([ids["n3"]], [ids["n1"], ids["n2"]])
        root.delete(n1.url + "/access/users/ci@pve/token/t1").raise_for_status()  # n3 cannot hear of it
        n3.kill()
        n3.start()
        time.sleep(1.0)  # n3 is up, replaying its own (stale) log
        proxy.heal()
        seen: list[int] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and 401 not in seen:
            try:
                seen.append(anon.get(n3.url + "/cluster/resources", headers=token, timeout=15).status_code)
            except requests.ConnectionError:
                time.sleep(0.02)
        assert 200 not in seen and 401 in seen, seen
    finally:
        cluster.stop()
        proxy.close()
