"""/nodes/{node}/network on a real node that runs inside a network namespace of the test's own (tests/netns.py):
pending changes, apply (a srvreload task that configures Linux), revert, Proxmox's refusals, and a guest's tap on
the bridge. The host's network is never touched."""

from __future__ import annotations

import subprocess

import pytest
import requests
from proxmoxer import ProxmoxAPI, ResourceException
from proxmoxer.tools import Tasks

from tests import netns
from tests.guest import build_guest, kernel_args, qemu_missing, wait_serial
from tests.harness import node_in
from tests.test_compat_shapes import assert_matches

pytestmark = [pytest.mark.slow, pytest.mark.skipif(netns.unavailable() is not None, reason=netns.unavailable() or "")]


@pytest.fixture(scope="module")
def ns():
    """The namespace with two veth pairs for NICs (eth0-eth1, eth2-eth3); this thread inside it meanwhile."""
    with netns.Netns() as space:
        space.ip("link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
        space.ip("link", "add", "eth2", "type", "veth", "peer", "name", "eth3")
        with space.joined():
            yield space


@pytest.fixture(scope="module")
def node(ns, tmp_path_factory):
    with node_in(ns.prefix, str(tmp_path_factory.mktemp("network"))) as proc:
        yield proc


def vlan_filtering_in_kernel(ns) -> bool:
    """Whether this kernel has VLAN-aware bridges (CONFIG_BRIDGE_VLAN_FILTERING)."""
    try:
        ns.ip("link", "add", "probe0", "type", "bridge", "vlan_filtering", "1")
    except subprocess.CalledProcessError:
        return False
    ns.ip("link", "del", "probe0")
    return True


def rows(px) -> dict[str, dict]:
    return {r["iface"]: r for r in px.nodes("n1").network.get()}


def changes(node) -> str | None:
    return node.session().get(node.url + "/nodes/n1/network", timeout=10).json().get("changes")


def finished(px, upid: str) -> dict:
    status = Tasks.blocking_status(px, upid, timeout=60, polling_interval=0.2)
    assert status is not None, f"task {upid} did not end"
    return status


def applied_vmbr1(node, ns) -> None:
    """vmbr1 (VLAN aware, port eth0, 10.77.0.1/24) in Linux, as the first test leaves it."""
    px = node.api()
    if "vmbr1" not in ns.links():
        if "vmbr1" not in rows(px):
            px.nodes("n1").network.post(iface="vmbr1", type="bridge", bridge_vlan_aware=1, bridge_ports="eth0",
                                        autostart=1, cidr="10.77.0.1/24", comments="guests")
        applied(px, px.nodes("n1").network.put())


def applied(px, upid: str) -> None:
    """The apply task ended OK, or (on a kernel without VLAN-aware bridges) failed only for want of them."""
    status = finished(px, upid)
    errors = [x["t"] for x in px.nodes("n1").tasks(upid).log.get(limit=500) if x["t"].startswith("error:")]
    assert status["exitstatus"] == "OK" or all("CONFIG_BRIDGE_VLAN_FILTERING" in e for e in errors), errors


def refused(call, **params) -> ResourceException:
    with pytest.raises(ResourceException) as info:
        call(**params)
    return info.value


def test_a_vlan_aware_bridge_is_pending_then_applied(node, ns):
    px = node.api()
    assert {"eth0", "eth2"} <= set(rows(px)) and rows(px)["eth0"]["type"] == "eth" and rows(px)["eth0"]["exists"]
    px.nodes("n1").network.post(iface="vmbr1", type="bridge", bridge_vlan_aware=1, bridge_ports="eth0", autostart=1,
                                cidr="10.77.0.1/24", comments="guests")
    row = rows(px)["vmbr1"]
    assert row["type"] == "bridge" and row["bridge_vlan_aware"] == 1 and row["bridge_ports"] == "eth0"
    assert (row["address"], row["netmask"], row["cidr"], row["method"]) == ("10.77.0.1", "24", "10.77.0.1/24",
                                                                            "static")
    assert row["comments"] == "guests\n" and row["autostart"] == 1 and "active" not in row
    assert px.nodes("n1").network("vmbr1").get()["bridge_vids"] == "2-4094"
    diff = changes(node)
    assert "+iface vmbr1 inet static" in diff and "+\tbridge-vlan-aware yes" in diff
    assert "vmbr1" not in ns.links()  # pending: Linux does not have it yet

    upid = px.nodes("n1").network.put()
    assert ":srvreload:networking:root@pam:" in upid
    status = finished(px, upid)
    links = ns.links()
    bridge = links["vmbr1"]
    assert bridge["linkinfo"]["info_kind"] == "bridge" and "UP" in bridge["flags"]
    if vlan_filtering_in_kernel(ns):
        assert status["exitstatus"] == "OK", px.nodes("n1").tasks(upid).log.get()
        assert bridge["linkinfo"]["info_data"]["vlan_filtering"] == 1
        assert "vlan_filtering 1" in ns.ip("-d", "link", "show", "vmbr1")
    else:  # this kernel has no VLAN-aware bridges: the task says so, and applies the rest
        assert "the kernel lacks CONFIG_BRIDGE_VLAN_FILTERING" in status["exitstatus"]
        assert bridge["linkinfo"]["info_data"]["vlan_filtering"] == 0
    assert links["eth0"]["master"] == "vmbr1" and "UP" in links["eth0"]["flags"]
    assert ns.addresses("vmbr1") == ["10.77.0.1/24"]
    assert changes(node) is None and rows(px)["vmbr1"]["active"] == 1
    doc = requests.get(node.url + "/openapi.json", verify=False, timeout=10).json()
    assert_matches(doc, "/nodes/{node}/network", px.nodes("n1").network.get())
    assert_matches(doc, "/nodes/{node}/network/{iface}", px.nodes("n1").network("vmbr1").get())
    assert [r["iface"] for r in px.nodes("n1").network.get(type="bridge")] == ["vmbr1"]
    assert {r["type"] for r in px.nodes("n1").network.get(type="eth")} == {"eth"}


def test_a_second_change_is_reverted(node, ns):
    applied_vmbr1(node, ns)
    px = node.api()
    px.nodes("n1").network.post(iface="vmbr2", type="bridge", bridge_ports="eth2", cidr="10.78.0.1/24")
    px.nodes("n1").network("vmbr1").put(type="bridge", comments="changed", cidr="10.77.0.1/24")
    assert "vmbr2" in rows(px) and rows(px)["vmbr1"]["comments"] == "changed\n"
    assert "+iface vmbr2 inet static" in changes(node)
    px.nodes("n1").network.delete()
    assert changes(node) is None
    assert "vmbr2" not in rows(px) and rows(px)["vmbr1"]["comments"] == "guests\n"
    applied(px, px.nodes("n1").network.put())  # nothing pending: Linux stays as it is
    assert "vmbr2" not in ns.links() and ns.links()["eth2"].get("master") is None


def test_refusals_use_proxmoxs_words_and_write_nothing(node, ns):
    applied_vmbr1(node, ns)
    px = node.api()
    net = px.nodes("n1").network
    cases = [
        (dict(iface="vmbr3", type="bridge", cidr="10.0.0.1/33"), "cidr", "value does not look like a valid IPv4 CIDR"),
        (dict(iface="vmbr3", type="bridge", address="10.0.0.300", netmask="255.255.255.0"), "address",
         "value does not look like a valid IPv4 address"),
        (dict(iface="vmbr3", type="bridge", address="10.0.0.3"), "netmask",
         "missing property - 'address' requires this property"),
        (dict(iface="vmbr3", type="bridge", cidr="10.0.0.1/24", address="10.0.0.1", netmask="255.255.255.0"), "address",
         "address conflicts with cidr"),
        (dict(iface="vmbr3", type="bridge", cidr6="fd00::/64"), "address6",
         "fd00:: with type 'ANYCAST', cannot be used as host IPv6 address."),
        (dict(iface="vmbr1", type="bridge"), "iface", "interface already exists"),
        (dict(iface="br-x", type="bridge"), "iface", "invalid network interface name 'br-x'"),
        (dict(iface="bridge3", type="bridge"), "iface", "Format: vmbrN, where 0 <= N <= 9999"),
        (dict(iface="team0", type="bond", slaves="eth2"), "iface", "Format: bondN, where 0 <= N <= 9999"),
        (dict(iface="vlan5", type="vlan"), "vlan-raw-device", "needs its raw device"),
        (dict(iface="vmbr3", type="bridge", bridge_ports="eth0"), "bridge_ports",
         "eth0 is already used on interface 'vmbr1'."),
        (dict(iface="vmbr3", type="bridge", bridge_vids="1-5"), "bridge_vids", "invalid VLAN tag '1'"),
        (dict(iface="vmbr3", type="bridge", mtu=100), "mtu", "value must have a minimum value of 1280"),
    ]
    for params, key, message in cases:
        err = refused(net.post, **params)
        assert err.status_code == 400 and message in err.errors.get(key, ""), (params, err.errors, err.content)
    for params, message in [
        (dict(iface="vmbr3", type="bridge", bridge_ports="eth9"), "bridge 'vmbr3' - unable to find bridge port 'eth9'"),
        (dict(iface="eth2.5", type="vlan", mtu=9000), "interface 'eth2' - mtu 1500 is lower than 'eth2.5' - mtu 9000"),
        (dict(iface="bond0", type="bond", slaves="vmbr1"),
         "bond 'bond0' - wrong interface type on slave 'vmbr1' ('bridge' != 'eth or bond')"),
        (dict(iface="vmbr3", type="OVSBridge"), "Open VSwitch is not installed (need package 'openvswitch-switch')"),
    ]:
        err = refused(net.post, **params)
        assert err.status_code == 400 and err.content == message, (params, err.content)
    err = refused(px.nodes("n1").network("vmbr7").put, type="bridge", comments="x")
    assert err.errors == {"iface": "interface does not exist"}
    err = refused(px.nodes("n1").network("vmbr7").delete)
    assert err.errors == {"iface": "interface does not exist"}
    assert changes(node) is None and "vmbr3" not in rows(px)  # nothing written

    px.nodes("n1").network("vmbr1").put(type="bridge", cidr="10.77.0.1/24", gateway="10.77.0.254")
    pending = changes(node)
    assert "+\tgateway 10.77.0.254" in pending
    err = refused(net.post, iface="vmbr3", type="bridge", cidr="10.79.0.1/24", gateway="10.79.0.254")
    assert err.errors == {"gateway": "Default gateway already exists on interface 'vmbr1'."}
    assert changes(node) == pending
    px.nodes("n1").network.delete()


def test_a_bridge_removed_from_the_configuration_leaves_linux(node, ns):
    """... and what the configuration does not name stays as it is: a bridge made by hand, an address on a NIC."""
    px = node.api()
    ns.ip("link", "add", "handmade", "type", "bridge")
    ns.ip("addr", "add", "10.81.0.1/24", "dev", "eth3")
    px.nodes("n1").network.post(iface="vmbr4", type="bridge", bridge_ports="eth2", autostart=1, cidr="10.80.0.1/24",
                                mtu=1400)
    applied(px, px.nodes("n1").network.put())
    assert ns.links()["eth2"]["master"] == "vmbr4" and ns.links()["vmbr4"]["mtu"] == 1400
    px.nodes("n1").network("vmbr4").delete()
    assert "-auto vmbr4" in changes(node)
    applied(px, px.nodes("n1").network.put())
    assert "vmbr4" not in ns.links() and ns.links()["eth2"].get("master") is None
    assert "vmbr4" not in rows(px)
    assert "handmade" in ns.links() and ns.addresses("eth3") == ["10.81.0.1/24"]


def test_privileges(node, ns):
    applied_vmbr1(node, ns)
    root = node.api()
    root.access.users.post(userid="netview@pve", password="netview-secret")
    root.access.acl.put(path="/nodes/n1", roles="PVEAuditor", users="netview@pve")
    user = ProxmoxAPI("127.0.0.1", port=node.api_port, user="netview@pve", password="netview-secret",
                      verify_ssl=False, timeout=10)
    seen = {r["iface"] for r in user.nodes("n1").network.get()}
    assert "eth0" in seen and "vmbr1" not in seen  # bridges need SDN.Audit or SDN.Use on the localnetwork zone
    assert user.nodes("n1").network("vmbr1").get()["type"] == "bridge"  # Sys.Audit reads any interface
    err = refused(user.nodes("n1").network.post, iface="vmbr5", type="bridge")
    assert err.status_code == 403 and "Sys.Modify" in err.content
    root.access.acl.put(path="/sdn/zones/localnetwork/vmbr1", roles="PVESDNUser", users="netview@pve")
    assert "vmbr1" in {r["iface"] for r in user.nodes("n1").network.get(type="any_bridge")}


@pytest.mark.skipif(qemu_missing() is not None, reason=qemu_missing() or "")
def test_a_guest_nic_on_the_bridge_gets_its_tap_there(node, ns):
    applied_vmbr1(node, ns)
    px = node.api()
    guest_dir = build_guest()
    vmid = int(px.cluster.nextid.get())
    finished(px, px.nodes("n1").qemu.create(vmid=vmid, name="bridged", memory=256, kvm=0, serial0="socket",
                                            net0="virtio,bridge=vmbr1", args=kernel_args(guest_dir)))
    status = finished(px, px.nodes("n1").qemu(vmid).status.start.post())
    assert status["exitstatus"] == "OK", px.nodes("n1").tasks(status["upid"]).log.get()
    wait_serial(node, vmid, r"GPVE-GUEST-READY")
    tap = ns.links()[f"tap{vmid}i0"]
    assert tap["master"] == "vmbr1" and "UP" in tap["flags"]
    mac = px.nodes("n1").qemu(vmid).config.get()["net0"].split(",")[0].split("=")[1]
    assert mac.startswith("BC:24:11")
    finished(px, px.nodes("n1").qemu(vmid).status.stop.post())
    px.nodes("n1").qemu(vmid).config.put(net0=f"virtio={mac},bridge=vmbr9")
    status = finished(px, px.nodes("n1").qemu(vmid).status.start.post())
    assert status["exitstatus"] == "bridge 'vmbr9' does not exist"
