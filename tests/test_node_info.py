"""A node's own endpoints on a real node: unknown node names, status/version/time/dns/hosts in their declared
shapes, the cluster's recent tasks and datacenter options, and the sampled figures: live guest figures in every
listing and RRD points whose CPU rises while the test guest runs a busy loop (a real QEMU guest)."""

from __future__ import annotations

import re
import time

import grpc
import pytest
import requests
from openapi_schema_validator import OAS30Validator, validate

from api.rpc.pb import guest_pb2
from tests.grpc_client import Stubs, channel, ticket
from tests.guest import build_guest, kernel_args, qemu_missing, wait_serial
from tests.harness import Cluster, wait_for

pytestmark = pytest.mark.slow
needs_qemu = pytest.mark.skipif(qemu_missing() is not None, reason=qemu_missing() or "")
INTERVAL = 0.5  # s between samples: the RRD step is 6 samples, 3 s, so an "hour" row spans 3 s
PATH_VALUES = {"vmid": "100", "upid": "UPID:nope:00001234:00005678:65000000:qmstart:100:root@pam:",
               "storage": "local", "snapname": "snap1"}


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    cluster = Cluster(str(tmp_path_factory.mktemp("nodeinfo")), 1)
    cluster.nodes[0].extra_args = ["--rrd-interval", str(INTERVAL)]
    cluster.start()
    yield cluster.nodes[0]
    cluster.stop()


@pytest.fixture(scope="module")
def root(node):
    return node.session()


@pytest.fixture(scope="module")
def doc(node, root):
    return root.get(node.url + "/openapi.json").json()


def login(node, user: str, password: str) -> requests.Session:
    s = requests.Session()
    s.verify, s.trust_env = False, False
    data = s.post(node.url + "/access/ticket", data={"username": user, "password": password}).json()["data"]
    s.cookies.set("PVEAuthCookie", data["ticket"])
    s.headers["CSRFPreventionToken"] = data["CSRFPreventionToken"]
    return s


def declared(doc: dict, method: str, path: str) -> dict:
    """The return schema an endpoint declares (its `data`), from the served OpenAPI document."""
    body = doc["paths"]["/api2/json" + path][method]["responses"]["200"]["content"]["application/json"]["schema"]
    return body["properties"]["data"]


def test_every_node_path_answers_an_unknown_node_with_proxmox_wording(node, root, doc):
    families = [(path, method) for path, ops in doc["paths"].items() if path.startswith("/api2/json/nodes/{node}")
                for method in ops]
    assert len({p.split("/")[5] for p, _ in families if p.count("/") > 4}) >= 4  # qemu, storage, tasks, ...
    for path, method in families:
        url = "https://127.0.0.1:{}{}".format(node.api_port, re.sub(
            r"\{(\w+)\}", lambda m: "nope" if m.group(1) == "node" else PATH_VALUES.get(m.group(1), "x1"), path))
        r = root.request(method.upper(), url, timeout=10)
        assert (r.status_code, r.json()["message"]) == (404, "no such cluster node 'nope'"), (method, path, r.text)
        assert r.reason == "no such cluster node 'nope'"
    # a member is served as before
    assert root.get(node.url + "/nodes/n1/storage").status_code == 200
    # gRPC: listing the guests of a node that does not exist is an error too, not an empty list
    chan = channel(node)
    try:
        with pytest.raises(grpc.RpcError) as err:
            Stubs(chan).guests.List(guest_pb2.ListGuestsRequest(node="nope"), metadata=ticket(node))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert err.value.details() == "no such cluster node 'nope'"
    finally:
        chan.close()


def test_status_version_time_dns_and_hosts_answer_their_declared_shapes(node, root, doc):
    for path in ("/nodes/{node}/status", "/nodes/{node}/version", "/nodes/{node}/time", "/nodes/{node}/dns",
                 "/nodes/{node}/hosts"):
        r = root.get(node.url + path.replace("{node}", "n1"))
        assert r.status_code == 200, r.text
        validate(r.json()["data"], declared(doc, "get", path), cls=OAS30Validator)
    status = root.get(node.url + "/nodes/n1/status").json()["data"]
    assert 0 <= status["cpu"] <= 1 and 0 <= status["wait"] <= 1 and len(status["loadavg"]) == 3
    assert status["memory"]["total"] >= status["memory"]["used"] > 0 and status["rootfs"]["total"] > 0
    assert status["cpuinfo"]["cpus"] >= 1 and status["pveversion"].startswith("pve-manager/9.")
    assert status["kversion"].startswith(status["current-kernel"]["sysname"] + " ")
    clock = root.get(node.url + "/nodes/n1/time").json()["data"]
    assert abs(clock["time"] - time.time()) < 5
    with open("/etc/hosts") as f:
        assert root.get(node.url + "/nodes/n1/hosts").json()["data"]["data"] == f.read()
    # the status needs Sys.Audit on the node, as in Proxmox; the version any user may read
    root.post(node.url + "/access/users", data={"userid": "plain@pve", "password": "plain-pass-1"}).raise_for_status()
    plain = login(node, "plain@pve", "plain-pass-1")
    r = plain.get(node.url + "/nodes/n1/status")
    assert r.status_code == 403 and "Sys.Audit" in r.json()["message"]
    assert plain.get(node.url + "/nodes/n1/version").json()["data"]["version"].startswith("9.")


def test_cluster_options_are_stored_checked_and_answered_as_proxmox(node, root):
    url = node.url + "/cluster/options"
    fresh = root.get(url).json()["data"]
    assert fresh["mac_prefix"] == "BC:24:11" and fresh["description"] == ""
    r = root.put(url, data={"keyboard": "de", "nonsense": "1"})
    assert r.status_code == 400 and set(r.json()["errors"]) == {"nonsense"}
    r = root.put(url, data={"migration": "type=fast"})
    assert r.status_code == 400
    assert r.json()["errors"]["migration"] == ("invalid format - format error\nmigration.type: value 'fast' does not "
                                               "have a value in the enumeration 'secure, insecure'")
    r = root.put(url, data={"tag-style": "colour=red"})
    assert r.json()["errors"]["tag-style"] == ("invalid format - invalid key in comma-separated list property: "
                                               "colour")
    assert r.status_code == 400 and "keyboard" not in root.get(url).json()["data"], "nothing written on refusal"
    r = root.put(url, data={"keyboard": "de", "language": "en", "console": "xtermjs", "mac_prefix": "02:AB",
                            "migration": "insecure,network=10.1.0.0/16", "tag-style": "shape=dense,ordering=config",
                            "description": "lab\ncluster", "next-id": "upper=5000,lower=200"})
    assert r.status_code == 200, r.text
    options = root.get(url).json()["data"]
    assert {k: options[k] for k in ("keyboard", "language", "console", "mac_prefix", "description")} == {
        "keyboard": "de", "language": "en", "console": "xtermjs", "mac_prefix": "02:AB", "description": "lab\ncluster"}
    assert options["migration"] == {"type": "insecure", "network": "10.1.0.0/16"}
    assert options["tag-style"] == {"shape": "dense", "ordering": "config"}
    assert options["next-id"] == {"lower": 200, "upper": 5000}
    assert root.put(url, data={"delete": "keyboard,mac_prefix"}).status_code == 200
    options = root.get(url).json()["data"]
    assert "keyboard" not in options and options["mac_prefix"] == "BC:24:11" and options["language"] == "en"
    # a user without Sys.Audit on / sees the console and the tag style only; changing needs Sys.Modify
    root.post(node.url + "/access/users", data={"userid": "viewer@pve", "password": "viewer-pass-1"})
    viewer = login(node, "viewer@pve", "viewer-pass-1")
    assert set(viewer.get(url).json()["data"]) == {"console", "tag-style", "allowed-tags"}
    assert viewer.put(url, data={"keyboard": "fr"}).status_code == 403


@pytest.fixture(scope="module")
def guest_dir():
    return build_guest()


def _ok(session, node, upid: str) -> None:
    def ended():
        status = session.get(f"{node.url}/nodes/n1/tasks/{upid}/status").json()["data"]
        return status if status["status"] == "stopped" else None

    assert wait_for(ended, timeout=120)["exitstatus"] == "OK"


@needs_qemu
def test_listings_show_live_figures_and_rrd_cpu_rises_while_the_guest_runs_a_busy_loop(node, root, guest_dir):
    vmid = int(root.get(node.url + "/cluster/nextid").json()["data"])
    upid = root.post(node.url + "/nodes/n1/qemu", data={
        "vmid": vmid, "name": "busy", "memory": 128, "kvm": 0, "serial0": "socket",
        "args": kernel_args(guest_dir, "gpve.busy=10")}).json()["data"]
    _ok(root, node, upid)
    _ok(root, node, root.post(f"{node.url}/nodes/n1/qemu/{vmid}/status/start").json()["data"])
    wait_serial(node, vmid, r"GPVE-TICK 3 ")  # booted: idle from here until the busy loop starts
    idle_from = time.time()
    wait_serial(node, vmid, r"GPVE-BUSY", timeout=60)
    busy_from = time.time()
    time.sleep(6 * 3 * INTERVAL * 2)  # two more RRD rows, all busy

    # every listing shows the sampled figures of the running guest
    rows = {
        "qemu": next(g for g in root.get(node.url + "/nodes/n1/qemu").json()["data"] if g["vmid"] == vmid),
        "current": root.get(f"{node.url}/nodes/n1/qemu/{vmid}/status/current").json()["data"],
        "resources": next(g for g in root.get(node.url + "/cluster/resources").json()["data"]
                          if g.get("vmid") == vmid)}
    for where, row in rows.items():
        assert row["cpu"] > 0 and 0 < row["mem"] <= 128 << 20, (where, row)
        assert row["diskread"] >= 0 and row["netin"] >= 0 and row["uptime"] > 0, (where, row)

    points = root.get(f"{node.url}/nodes/n1/qemu/{vmid}/rrddata", params={"timeframe": "hour"}).json()["data"]
    tops = root.get(f"{node.url}/nodes/n1/qemu/{vmid}/rrddata",
                    params={"timeframe": "hour", "cf": "MAX"}).json()["data"]
    step = 6 * INTERVAL
    idle = [p["cpu"] for p in points if "cpu" in p and p["time"] - step >= idle_from and p["time"] <= busy_from]
    busy = [p["cpu"] for p in points if "cpu" in p and p["time"] - step >= busy_from + 1]
    assert idle and busy, points
    # a busy vCPU takes a host core if it gets one; on a loaded test machine it gets a share, still many times
    # what the idle guest takes
    assert min(busy) > 3 * max(idle) + 0.03, (idle, busy)
    for p in points:
        assert set(p) <= {"time", "cpu", "maxcpu", "mem", "maxmem", "disk", "maxdisk", "netin", "netout",
                          "diskread", "diskwrite"}
    by_time = {p["time"]: p for p in tops}
    assert all(by_time[p["time"]]["cpu"] >= p["cpu"] for p in points if "cpu" in p)
    assert next(p for p in reversed(points) if "maxmem" in p)["maxmem"] == 128 << 20

    # the node's own points carry Proxmox's keys, and its cpu saw the busy guest too
    node_points = root.get(node.url + "/nodes/n1/rrddata", params={"timeframe": "hour"}).json()["data"]
    last = next(p for p in reversed(node_points) if "cpu" in p)
    assert {"time", "cpu", "maxcpu", "iowait", "loadavg", "memtotal", "memused", "swaptotal", "swapused",
            "roottotal", "rootused", "netin", "netout"} <= set(last)
    assert last["cpu"] > 0 and last["memtotal"] >= last["memused"] > 0
    r = root.get(node.url + "/nodes/n1/rrddata", params={"timeframe": "minute"})
    assert r.status_code == 400 and "timeframe" in r.json()["errors"]

    # the cluster's recent tasks: this guest's create and start, in Proxmox's row shape
    tasks = {t["upid"]: t for t in root.get(node.url + "/cluster/tasks").json()["data"]}
    created = tasks[upid]
    assert (created["node"], created["type"], created["id"], created["user"], created["status"]) == (
        "n1", "qmcreate", str(vmid), "root@pam", "OK")
    assert "endtime" in created and "pid" not in created and "pstart" not in created
    root.post(node.url + "/access/users", data={"userid": "tasks@pve", "password": "tasks-pass-1"}).raise_for_status()
    assert login(node, "tasks@pve", "tasks-pass-1").get(node.url + "/cluster/tasks").json()["data"] == [], \
        "without Sys.Audit on / a user sees its own tasks only"
    root.post(f"{node.url}/nodes/n1/qemu/{vmid}/status/stop")


def test_cluster_lists_show_the_other_members_figures(tmp_path):
    cluster = Cluster(str(tmp_path), 2)
    for member in cluster.nodes:
        member.extra_args = ["--rrd-interval", str(INTERVAL)]
    cluster.start()
    try:
        url = cluster.node("n1").url
        n1 = cluster.node("n1").session()

        def node_rows() -> dict:
            return {r["node"]: r for r in n1.get(url + "/cluster/resources", params={"type": "node"}).json()["data"]}

        listed = wait_for(lambda: (rows := node_rows())["n2"]["uptime"] > 0 and rows, timeout=30)
        assert listed["n2"]["status"] == "online" and listed["n2"]["maxmem"] > 0 and listed["n2"]["maxcpu"] >= 1
        assert 0 <= listed["n2"]["cpu"] <= 1 and listed["n2"]["uptime"] > 0
        nodes = {r["node"]: r for r in n1.get(url + "/nodes").json()["data"]}
        assert nodes["n2"]["maxmem"] == listed["n2"]["maxmem"]
        # the figures come from n2 itself
        assert n1.get(cluster.node("n2").url.replace("/api2/json", "/v1") + "/figures").json()["node"]["maxmem"] > 0
        # a member that is down shows as offline, without live figures (its registered maxima stay)
        cluster.node("n2").stop()
        listed = wait_for(lambda: (rows := node_rows())["n2"]["status"] == "offline" and rows, timeout=30)
        assert {k: listed["n2"][k] for k in ("uptime", "cpu", "mem", "disk")} == dict.fromkeys(("uptime", "cpu",
                                                                                               "mem", "disk"), 0)
        assert listed["n2"]["maxmem"] == nodes["n2"]["maxmem"]
    finally:
        cluster.stop()
