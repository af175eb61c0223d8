"""The provisioning flow automation runs (the Terraform providers, Ansible's clone-then-cloud-init, Packer), end to
end on a real node: real QEMU, the test guest reading its cloud-init drive and running Debian's qemu-ga.

A template with a cloud-init drive and the guest agent is cloned (linked), the clone gets its cloud-init keys and
one more NIC through `POST …/config` as the Terraform providers send them, starts, and the guest reports what its
cloud-init drive says on its serial console; then the agent's `network-get-interfaces` lists the NICs with the MACs
of the clone's config (what the providers wait on for the guest's address).
"""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest

from tests.guest import build_guest, kernel_args, qemu_missing, serial_text, wait_serial
from tests.harness import Cluster
from tests.test_cloudinit import ED25519_KEY, RSA_KEY
from tests.test_guest_agent import agent_ready
from tests.test_guests import ok

pytestmark = [pytest.mark.slow, pytest.mark.skipif(qemu_missing() is not None, reason=qemu_missing() or ""),
              pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")]
KEYS = f"{ED25519_KEY} deploy@ci\n{RSA_KEY} second@key\n"


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    cluster = Cluster(str(tmp_path_factory.mktemp("provisioning")), 1).start()
    yield cluster.nodes[0]
    cluster.stop()  # and the guests it leaves running


def mac_of(value: str) -> str:
    return value.split(",")[0].split("=")[1].lower()


def test_clone_a_cloudinit_template_set_its_keys_start_and_wait_for_the_agent(node):
    px = node.api()
    template = int(px.cluster.nextid.get())
    ok(px, px.nodes("n1").qemu.create(vmid=template, name="base", memory=256, kvm=0, serial0="socket",
                                      args=kernel_args(build_guest()), virtio0="local:1", ide2="local:cloudinit",
                                      net0="virtio", agent=1))
    ok(px, px.nodes("n1").qemu(template).template.post())
    vmid = int(px.cluster.nextid.get())
    ok(px, px.nodes("n1").qemu(template).clone.post(newid=vmid, name="web1", full=0))
    vm = px.nodes("n1").qemu(vmid)
    assert vm.config.get()["ide2"] == f"local:{vmid}/vm-{vmid}-cloudinit.qcow2,media=cdrom"  # a drive of its own
    ok(px, vm.config.post(ciuser="deploy", sshkeys=quote(KEYS, safe=""), cipassword="deploy-secret",
                          ipconfig0="ip=10.20.30.40/24,gw=10.20.30.1", nameserver="10.20.30.53", net1="virtio"))
    conf = vm.config.get()
    assert conf["cipassword"] == "**********"
    assert not [row for row in vm.pending.get() if "pending" in row or "delete" in row]  # stopped: all applied
    macs = {key: mac_of(conf[key]) for key in ("net0", "net1")}
    assert all(re.fullmatch(r"bc:24:11(:[0-9a-f]{2}){3}", m) for m in macs.values())
    assert macs["net0"] != mac_of(px.nodes("n1").qemu(template).config.get()["net0"])  # the clone's own MAC

    ok(px, vm.status.start.post())
    wait_serial(node, vmid, "GPVE-CLOUDINIT-END", timeout=120)
    text = serial_text(node, vmid)
    found = dict(re.findall(r"(\w+)=(\S*)", re.search(r"GPVE-CLOUDINIT (.*)", text).group(1)))
    assert (found["label"], found["user"], found["hostname"], found["key"]) == ("cidata", "deploy", "web1",
                                                                                "deploy@ci")
    network = "\n".join(re.findall(r"GPVE-CLOUDINIT-NET (.*?)\r?$", text, re.M))
    assert f"mac_address: '{macs['net0']}'" in network
    assert "address: '10.20.30.40'\nnetmask: '255.255.255.0'\ngateway: '10.20.30.1'" in network
    assert "- '10.20.30.53'" in network
    assert "deploy-secret" not in text  # the image holds the hash, never the password
    assert {"key": "ciuser", "value": "deploy"} in vm.cloudinit.get()  # the image is current

    agent_ready(px, vmid)
    interfaces = vm.agent("network-get-interfaces").get()["result"]
    by_mac = {i["hardware-address"].lower(): i["name"] for i in interfaces if "hardware-address" in i}
    assert {by_mac.get(m) for m in macs.values()} == {"eth0", "eth1"}, interfaces
    ok(px, vm.status.stop.post())
    ok(px, vm.delete(purge=1))
    ok(px, px.nodes("n1").qemu(template).delete(purge=1))
