"""/v1/nodes/{node}/metrics and /v1/metrics: the spec's JSON and Prometheus text, parsed by prometheus_client,
with a guest's CPU series rising while it runs a busy loop, and the whole cluster in one scrape."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from proxmoxer.tools import Tasks

from tests.guest import build_guest, kernel_args, qemu_missing, wait_serial
from tests.harness import Cluster, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.skipif(qemu_missing() is not None, reason=qemu_missing() or "")]


def samples(text: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def test_node_and_cluster_metrics(tmp_path):
    cluster = Cluster(str(tmp_path), 2)
    for node in cluster.nodes:
        node.extra_args = ["--rrd-interval", "1"]
    cluster.start()
    try:
        n1, n2 = cluster.nodes
        s, px = n1.session(), n1.api()
        base = f"https://127.0.0.1:{n1.api_port}/v1"
        vmid = int(px.cluster.nextid.get())
        upid = px.nodes("n1").qemu.create(vmid=vmid, name="busybee", memory=128, kvm=0, serial0="socket",
                                          args=kernel_args(build_guest(), "gpve.busy=12"), start=1)
        assert Tasks.blocking_status(px, upid, timeout=120, polling_interval=0.2)["exitstatus"] == "OK"

        # the spec's JSON, for this node and (through it) for the other
        for name in ("n1", "n2"):
            r = s.get(f"{base}/nodes/{name}/metrics", timeout=10)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["node"] == name and body["timestamp"].endswith("Z")
            assert body["cpu"]["cores"] >= 1 and len(body["cpu"]["load_avg"]) == 3
            assert 0 < body["memory"]["used_bytes"] < body["memory"]["total_bytes"]
            assert set(body["disk"]) == {"read_bytes_per_sec", "write_bytes_per_sec", "iops_read", "iops_write"}
            assert set(body["network"]) == {"rx_bytes_per_sec", "tx_bytes_per_sec", "rx_packets_per_sec",
                                            "tx_packets_per_sec"}
        assert s.get(f"{base}/nodes/nope/metrics", timeout=10).status_code == 404

        def guest_cpu() -> float:
            r = s.get(f"{base}/nodes/n1/metrics", params={"format": "prometheus"}, timeout=10)
            assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            found = samples(r.text)
            [cpu] = [x for x in found["gpve_guest_cpu_ratio"] if x.labels["vmid"] == str(vmid)]
            assert cpu.labels["name"] == "busybee" and cpu.labels["node"] == "n1"
            assert found["gpve_raft_term"][0].value >= 1 and found["gpve_raft_commit_index"][0].value > 0
            assert any(x.labels.get("route") == "/api2/json/nodes/{node}/qemu" for x in
                       found["gpve_api_request_duration_seconds_count"])
            assert found["gpve_log_group_commit_batch_size_count"][0].value > 0
            return cpu.value

        wait_serial(n1, vmid, r"GPVE-TICK 3 ")
        idle = wait_for(lambda: guest_cpu() or None, timeout=30)  # a first sample with a rate
        wait_serial(n1, vmid, r"GPVE-BUSY", timeout=120)
        busy = wait_for(lambda: (lambda c: c if c > max(3 * idle, idle + 0.05) else None)(guest_cpu()), timeout=60)
        assert busy > idle

        # the whole cluster in one scrape: each family once, both nodes' samples, who answered
        r = s.get(f"{base}/metrics", params={"format": "prometheus"}, timeout=30)
        assert r.status_code == 200
        found = samples(r.text)
        assert {x.labels["node"] for x in found["gpve_raft_term"]} == {"n1", "n2"}
        assert {(x.labels["node"], x.value) for x in found["gpve_scrape_up"]} == {("n1", 1.0), ("n2", 1.0)}
        assert [(x.labels["vmid"], x.value) for x in found["gpve_guest_up"]] == [(str(vmid), 1.0)]
        # a guest the caller may not audit is not in its scrape (as it is not in its listings)
        px.access.users.post(userid="mon@pve", password="monitor-pw")
        px.access.roles.post(roleid="NodeAudit", privs="Sys.Audit")
        px.access.acl.put(path="/", roles="NodeAudit", users="mon@pve")
        mon = n1.session()
        login = mon.post(f"{n1.url}/access/ticket", data={"username": "mon@pve", "password": "monitor-pw"},
                         timeout=10).json()["data"]
        mon.cookies.set("PVEAuthCookie", login["ticket"])
        for path in ("/metrics", "/nodes/n1/metrics", "/nodes/n2/metrics"):
            text = mon.get(f"{base}{path}", params={"format": "prometheus"}, timeout=30).text
            assert "gpve_raft_term{" in text and "vmid=" not in text, path
        assert [n["node"] for n in s.get(f"{base}/metrics", timeout=30).json()["nodes"]] == ["n1", "n2"]
        # a member down: left out, and said so; a stopped guest is down, not gone
        Tasks.blocking_status(px, px.nodes("n1").qemu(vmid).status.stop.post(), timeout=60, polling_interval=0.2)
        n2.kill()
        r = s.get(f"{base}/metrics", params={"format": "prometheus"}, timeout=30)
        found = samples(r.text)
        assert {x.labels["node"] for x in found["gpve_raft_term"]} == {"n1"}
        assert {(x.labels["node"], x.value) for x in found["gpve_scrape_up"]} == {("n1", 1.0), ("n2", 0.0)}
        assert [(x.labels["vmid"], x.value) for x in found["gpve_guest_up"]] == [(str(vmid), 0.0)]
    finally:
        cluster.stop()
