"""The interfaces file as Proxmox reads and writes it (hypervisor/netconfig.py), and the network parameter formats
with Proxmox's messages (api/formats.py): pure code, no node."""

from __future__ import annotations

import pytest

from api.schema import Param
from hypervisor import netconfig

LINKS = {"eno1": {"nic": True, "up": True}, "eno2": {"nic": True}, "eno3": {"nic": True}, "tap100i0": {}}
PROXMOX_FILE = """\
auto lo
iface lo inet loopback

iface eno1 inet manual

auto bond0
iface bond0 inet manual
	bond-slaves eno2 eno3
	bond-miimon 100
	bond-mode 802.3ad
	bond-xmit-hash-policy layer3+4

auto vmbr0
iface vmbr0 inet static
	address 192.168.1.10/24
	gateway 192.168.1.1
	bridge-ports eno1
	bridge-stp off
	bridge-fd 0
	post-up echo hello
#management

iface vmbr0 inet6 static
	address fd00::10/64

auto vmbr1
iface vmbr1 inet manual
	bridge-ports bond0
	bridge-stp off
	bridge-fd 0
	bridge-vlan-aware yes
	bridge-vids 2-100

auto vmbr1.20
iface vmbr1.20 inet static
	address 10.20.0.1/24

auto mgmt
iface mgmt inet manual
	vlan-raw-device bond0
	vlan-id 30

source /etc/network/interfaces.d/*
"""


def test_a_proxmox_file_reads_as_proxmox_reads_it():
    ifaces, extra = netconfig.parse(PROXMOX_FILE, LINKS)
    assert extra == ["source /etc/network/interfaces.d/*"]
    assert {n: d["type"] for n, d in ifaces.items()} == {
        "lo": "loopback", "eno1": "eth", "eno2": "eth", "eno3": "eth", "bond0": "bond", "vmbr0": "bridge",
        "vmbr1": "bridge", "vmbr1.20": "vlan", "mgmt": "vlan"}  # a tap is no NIC: not listed
    vmbr0 = ifaces["vmbr0"]
    assert (vmbr0["address"], vmbr0["netmask"], vmbr0["cidr"], vmbr0["gateway"]) == \
        ("192.168.1.10", "24", "192.168.1.10/24", "192.168.1.1")
    assert (vmbr0["address6"], vmbr0["netmask6"], vmbr0["cidr6"]) == ("fd00::10", "64", "fd00::10/64")
    assert vmbr0["families"] == ["inet", "inet6"] and vmbr0["method"] == vmbr0["method6"] == "static"
    assert vmbr0["options"] == ["post-up echo hello"] and vmbr0["comments"] == "management\n"
    assert vmbr0["bridge_stp"] == "off" and vmbr0["bridge_fd"] == "0" and vmbr0["autostart"] == 1
    assert ifaces["vmbr1"]["bridge_vlan_aware"] == 1 and ifaces["vmbr1"]["bridge_vids"] == "2-100"
    assert ifaces["bond0"]["slaves"] == "eno2 eno3" and ifaces["bond0"]["bond_mode"] == "802.3ad"
    assert (ifaces["vmbr1.20"]["vlan-raw-device"], ifaces["vmbr1.20"]["vlan-id"]) == ("vmbr1", "20")
    assert (ifaces["mgmt"]["vlan-raw-device"], ifaces["mgmt"]["vlan-id"]) == ("bond0", "30")
    assert ifaces["eno1"]["exists"] == 1 and ifaces["eno1"]["active"] == 1 and "active" not in ifaces["eno2"]
    assert "priority" not in ifaces["eno2"] and ifaces["eno1"]["priority"] < ifaces["bond0"]["priority"]


def test_writing_then_reading_gives_the_same_configuration():
    ifaces, extra = netconfig.parse(PROXMOX_FILE, LINKS)
    text = netconfig.render(ifaces, extra)
    again, extra_again = netconfig.parse(text, LINKS)
    assert again == ifaces and extra_again == extra
    assert netconfig.render(again, extra_again) == text
    assert "iface eno2" not in text  # a NIC the file did not name stays out of it
    assert "\tvlan-id" not in text.split("iface vmbr1.20")[1].split("iface")[0]  # the name says it
    assert text.index("iface bond0") < text.index("iface vmbr0") < text.index("iface vmbr1.20")


def test_a_new_bridge_is_written_as_proxmox_writes_it():
    ifaces, extra = netconfig.parse("", {"eth0": {"nic": True}})
    ifaces["vmbr1"] = {"type": "bridge", "bridge_ports": "eth0", "bridge_vlan_aware": 1, "autostart": 1,
                       "address": "10.0.0.1", "netmask": "24", "method": "static", "method6": "manual",
                       "families": ["inet"], "mtu": 9000, "comments": "lab\n"}
    stanza = netconfig.render(ifaces, extra).split("auto vmbr1\n")[1]
    assert stanza == ("iface vmbr1 inet static\n\taddress 10.0.0.1/24\n\tbridge-ports eth0\n\tbridge-stp off\n"
                      "\tbridge-fd 0\n\tbridge-vlan-aware yes\n\tbridge-vids 2-4094\n\tmtu 9000\n#lab\n\n")


@pytest.mark.parametrize("change, message", [
    ({"vmbr2": {"type": "bridge", "bridge_ports": "eno1"}}, "port 'eno1' is already used on interface 'vmbr0'"),
    ({"vmbr2": {"type": "bridge", "bridge_ports": "eno9"}}, "bridge 'vmbr2' - unable to find bridge port 'eno9'"),
    ({"bond1": {"type": "bond", "slaves": "eno9"}}, "bond 'bond1' - unable to find slave 'eno9'"),
    ({"bond1": {"type": "bond", "slaves": "vmbr0"}},
     "bond 'bond1' - wrong interface type on slave 'vmbr0' ('bridge' != 'eth or bond')"),
    ({"eno9.5": {"type": "vlan"}}, "vlan 'eno9.5' - unable to find parent 'eno9'"),
    ({"vlan7": {"type": "vlan"}}, "missing vlan-raw-device option"),
    ({"office": {"type": "vlan", "vlan-raw-device": "eno1"}}, "missing vlan-id option"),
    ({"vlan70": {"type": "vlan", "vlan-raw-device": "eno1", "vlan-id": "71"}},
     "vlan 'vlan70' - vlan-id 71 does not match the id 70 in its name"),
    ({"vmbr1.30": {"type": "vlan", "mtu": "9000"}}, "interface 'vmbr1' - mtu 1500 is lower than 'vmbr1.30' - mtu 9000"),
    ({"eno1": {"type": "eth", "method": "static", "address": "10.1.1.1"}},
     "iface eno1 - ip address can't be set on interface if bridged in vmbr0"),
])
def test_the_writers_checks_refuse_with_proxmoxs_words(change, message):
    ifaces, _ = netconfig.parse(PROXMOX_FILE, LINKS)
    netconfig.check(ifaces)
    ifaces.update(change)
    with pytest.raises(netconfig.ConfigError) as info:
        netconfig.check(ifaces)
    assert str(info.value) == message


def test_the_pending_diff_is_a_unified_diff():
    assert netconfig.diff("a\n", "a\n", "/x/interfaces") is None
    changes = netconfig.diff("a\nb\n", "a\nc\n", "/x/interfaces")
    assert changes.startswith("--- /x/interfaces\n+++ /x/interfaces.new\n") and "-b\n+c\n" in changes


@pytest.mark.parametrize("fmt, value, message", [
    ("ipv4", "10.0.0.256", "value does not look like a valid IPv4 address"),
    ("ipv6", "fd00::g", "value does not look like a valid IPv6 address"),
    ("CIDRv4", "10.0.0.1/33", "value does not look like a valid IPv4 CIDR network"),
    ("CIDRv4", "10.0.0.1/7", "value does not look like a valid IPv4 CIDR network"),
    ("CIDRv4", "fd00::1/64", "value does not look like a valid IPv4 CIDR network"),
    ("CIDRv6", "fd00::1/129", "value does not look like a valid IPv6 CIDR network"),
    ("ipv4mask", "255.0.255.0", "value does not look like a valid IP netmask"),
    ("pve-iface", "9eth", "invalid network interface name '9eth'"),
    ("pve-iface-list", "eth0 e", "invalid format - invalid network interface name 'e'"),
    ("pve-vlan-id-or-range-list", "2 4095", "invalid format - invalid VLAN tag '4095'"),
    ("pve-vlan-id-or-range-list", "100-20", "invalid format - VLAN range must go from lower to higher tag '100-20'"),
    ("pve-vlan-id-or-range-list", "2,x", "invalid format - invalid VLAN configuration 'x'"),
])
def test_formats_refuse_with_proxmoxs_messages(fmt, value, message):
    with pytest.raises(ValueError) as info:
        Param("p", format=fmt).coerce(value)
    assert str(info.value) == message


@pytest.mark.parametrize("fmt, value", [("ipv4", "10.0.0.1"), ("ipv6", "fd00::1"), ("CIDRv4", "10.0.0.1/24"),
                                        ("CIDRv6", "fd00::1/64"), ("ipv4mask", "255.255.255.0"),
                                        ("pve-iface", "eth0.10"), ("pve-iface-list", "eth0 eth1,bond0"),
                                        ("pve-vlan-id-or-range-list", "2 4 100-200")])
def test_formats_take_what_proxmox_takes(fmt, value):
    assert Param("p", format=fmt).coerce(value) == value
