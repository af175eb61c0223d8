"""Cloud-init as Proxmox does it: the drive allocated on any bus, its image made when the guest starts (NoCloud or
ConfigDrive v2, `cicustom` snippets), `GET/PUT …/cloudinit`, `…/cloudinit/dump`, and the password hashed before it
reaches the log and masked for everyone.

The expected texts are written from qemu-server's `PVE/QemuServer/Cloudinit.pm`; the boot tests read what the test
guest (scripts/build_test_guest.py) found on the drive from its serial console.
"""

from __future__ import annotations

import hashlib
import os
import re
from urllib.parse import quote

import pytest
import requests
from passlib.hash import sha256_crypt
from proxmoxer import ResourceException
from proxmoxer.tools import Tasks

from api.rpc.pb import guest_pb2
from api.services.cloudinit import hashed
from engine.cloudinit import CloudinitError, HostDns, check_value, dump, files, parse_resolv_conf, pending
from tests.grpc_client import Stubs, channel, ticket
from tests.guest import build_guest, kernel_args, qemu_missing, serial_text, wait_serial
from tests.harness import wait_for

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
needs_qemu = pytest.mark.skipif(qemu_missing() is not None, reason=qemu_missing() or "")

KEYS = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGpve alice@laptop\nssh-rsa AAAAB3NzaC1yc2EAAAADAQAB second@key\n"
# well-formed public keys (type, then the key blob naming the same type): the API checks what it is given
ED25519_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f"
RSA_KEY = ("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAQQABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4fICEiIyQlJicoKSorLC0uLz"
           "AxMjM0NTY3ODk6Ozw9Pj9A")
CONF = {"name": "web1", "ciuser": "alice", "cipassword": "$5$salt$hash", "sshkeys": quote(KEYS, safe=""),
        "net0": "virtio=BC:24:11:AA:BB:CC,bridge=vmbr0", "ipconfig0": "ip=192.168.10.5/24,gw=192.168.10.1",
        "net1": "virtio=BC:24:11:00:00:01", "ipconfig1": "ip=dhcp,ip6=auto", "nameserver": "1.1.1.1 9.9.9.9",
        "searchdomain": "example.org"}
USER_DATA = """#cloud-config
hostname: web1
manage_etc_hosts: true
fqdn: web1.example.org
user: alice
password: $5$salt$hash
ssh_authorized_keys:
  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGpve alice@laptop
  - ssh-rsa AAAAB3NzaC1yc2EAAAADAQAB second@key
chpasswd:
  expire: False
users:
  - default
package_upgrade: true
"""
NETWORK_V1 = """version: 1
config:
    - type: physical
      name: eth0
      mac_address: 'bc:24:11:aa:bb:cc'
      subnets:
      - type: static
        address: '192.168.10.5'
        netmask: '255.255.255.0'
        gateway: '192.168.10.1'
    - type: physical
      name: eth1
      mac_address: 'bc:24:11:00:00:01'
      subnets:
      - type: dhcp4
      - type: ipv6_slaac
    - type: nameserver
      address:
      - '1.1.1.1'
      - '9.9.9.9'
      search:
      - 'example.org'
"""
CONFIGDRIVE2_NETWORK = """auto lo
iface lo inet loopback

        dns_nameservers 1.1.1.1 9.9.9.9
        dns_search example.org
auto eth0
iface eth0 inet static
        address 192.168.10.5
        netmask 255.255.255.0
        gateway 192.168.10.1
auto eth1
iface eth1 inet dhcp
iface eth1 inet6 auto
"""
HOST = HostDns("lab.example", ("10.0.0.53",))


# ---- the texts, as qemu-server writes them -------------------------------------------------------------------
def test_nocloud_files_are_proxmoxs_texts():
    label, out = files(CONF, 100, HOST)
    assert label == "cidata" and sorted(out) == ["/meta-data", "/network-config", "/user-data", "/vendor-data"]
    assert out["/user-data"] == USER_DATA and out["/network-config"] == NETWORK_V1 and out["/vendor-data"] == ""
    assert out["/meta-data"] == f"instance-id: {hashlib.sha1((USER_DATA + NETWORK_V1).encode()).hexdigest()}\n"


def test_configdrive2_files_and_the_windows_default():
    label, out = files({**CONF, "citype": "configdrive2"}, 100, HOST)
    assert label == "config-2"
    assert sorted(out) == ["/openstack/content/0000", "/openstack/latest/meta_data.json",
                           "/openstack/latest/user_data", "/openstack/latest/vendor_data.json"]
    assert out["/openstack/content/0000"] == CONFIGDRIVE2_NETWORK
    uuid = hashlib.sha1((USER_DATA + CONFIGDRIVE2_NETWORK).encode()).hexdigest()
    assert out["/openstack/latest/meta_data.json"] == \
        '{\n     "uuid": "' + uuid + '",\n     "network_config": { "content_path": "/content/0000" }\n}\n'
    # cloudbase-init on Windows reads only configdrive2; its metadata carries the password and keys
    label, out = files({**CONF, "ostype": "win11", "cipassword": "Clear-Pa55"}, 100, HOST)
    assert label == "config-2"
    assert '"admin_pass":"Clear-Pa55"' in out["/openstack/latest/meta_data.json"]
    assert '"key-1":"ssh-rsa AAAAB3NzaC1yc2EAAAADAQAB second@key"' in out["/openstack/latest/meta_data.json"]


def test_defaults_dns_from_the_host_and_custom_parts():
    conf = {"net0": "virtio=BC:24:11:AA:BB:CC", "ipconfig0": "ip6=2001:db8::5/64,gw6=2001:db8::1", "ciupgrade": 0,
            "ciuser": "root"}
    label, out = files(conf, 123, HOST, {"user": "#cloud-config\nuser: custom\n"})
    assert out["/user-data"] == "#cloud-config\nuser: custom\n"  # the snippet replaces the generated part
    assert out["/network-config"].endswith("      - type: static6\n        address: '2001:db8::5/64'\n"
                                           "        gateway: '2001:db8::1'\n    - type: nameserver\n"
                                           "      address:\n      - '10.0.0.53'\n      search:\n"
                                           "      - 'lab.example'\n")
    user = dump(conf, 123, "user", HOST, mask=True)
    assert "hostname: VM123\n" in user and "disable_root: False\n" in user
    assert "users:" not in user and "package_upgrade" not in user
    assert parse_resolv_conf("# x\nsearch a.example b.example\nnameserver 1.1.1.1\nnameserver ::1\n") == \
        HostDns("a.example b.example", ("1.1.1.1", "::1"))


def test_opennebula_context():
    label, out = files({**CONF, "citype": "opennebula", "net0": "virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,mtu=1450"},
                       100, HOST)
    assert label == "CONTEXT" and list(out) == ["/context.sh"]
    assert out["/context.sh"] == (
        "USERNAME=alice\nCRYPTED_PASSWORD_BASE64=JDUkc2FsdCRoYXNo\n\n"
        'SSH_PUBLIC_KEY="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGpve alice@laptop\n'
        'ssh-rsa AAAAB3NzaC1yc2EAAAADAQAB second@key"\nSET_HOSTNAME=web1\nDNS="1.1.1.1 9.9.9.9"\n'
        'SEARCH_DOMAIN="example.org"\nETH0_IP=192.168.10.5\nETH0_MASK=255.255.255.0\nETH0_MAC=bc:24:11:aa:bb:cc\n'
        "ETH0_GATEWAY=192.168.10.1\nETH0_MTU=1450\nETH1_DHCP=YES\nETH1_AUTO6=YES\nNETWORK=YES\n")


def test_dump_masks_the_password_and_keeps_the_instance_id():
    assert "password: **********\n" in dump(CONF, 100, "user", HOST, mask=True)
    assert dump(CONF, 100, "network", HOST, mask=True) == NETWORK_V1
    assert dump(CONF, 100, "meta", HOST, mask=True) == files(CONF, 100, HOST)[1]["/meta-data"]
    assert dump({**CONF, "citype": "configdrive2"}, 100, "network", HOST, mask=True) == CONFIGDRIVE2_NETWORK


@pytest.mark.parametrize(("key", "value", "message"), [
    ("ipconfig0", "ip=10.0.0.5", "invalid format - format error\nipconfig0.ip: invalid format - value does not "
                                 "look like a valid ipv4 network configuration"),
    ("ipconfig0", "gw=10.0.0.1", "invalid format - format error\nipconfig0.ip: missing property required by "
                                 "'ipconfig0.gw'"),
    ("ipconfig1", "ip=dhcp,mtu=9000", "invalid format - invalid key in comma-separated list property: mtu"),
    ("sshkeys", "ssh-ed25519 AAAA me@host", "invalid format - invalid urlencoded string: ssh-ed25519 AAAA me@host"),
    ("nameserver", "1.1.1.1 not_a_host!", "invalid format - value does not look like a valid address: not_a_host!"),
])
def test_bad_values_get_pve_commons_wording(key, value, message):
    with pytest.raises(CloudinitError) as exc:
        check_value(key, value)
    assert str(exc.value) == message


def test_the_password_is_hashed_as_pve_common_does_except_for_windows():
    entropy = hashlib.sha256(b"seed").hexdigest()
    value = hashed("s3cret-Pa55", "l26", entropy)
    assert value.startswith("$5$") and sha256_crypt.verify("s3cret-Pa55", value)
    assert hashed(value, None, entropy) == value  # a hash stays as it is
    assert hashed("s3cret-Pa55", "win10", entropy) == "s3cret-Pa55"


def test_pending_rows_compare_the_config_with_what_the_image_was_made_from():
    made = {"ciuser": "alice", "cipassword": "$5$a$b", "name": "web1", "ipconfig0": "ip=dhcp"}
    conf = {"ciuser": "bob", "cipassword": "$5$c$d", "name": "web2", "sshkeys": "k", "cores": 2}
    assert pending(conf, made) == [
        {"key": "cipassword", "value": "**********", "pending": "**********"},
        {"key": "ciuser", "value": "alice", "pending": "bob"},
        {"key": "ipconfig0", "value": "ip=dhcp", "delete": 1},
        {"key": "name", "value": "web1", "pending": "web2"},
        {"key": "sshkeys", "pending": "k"}]
    assert pending(made, made) == [{"key": "cipassword", "value": "**********"},
                                   {"key": "ciuser", "value": "alice"}, {"key": "ipconfig0", "value": "ip=dhcp"}]
    assert pending(conf, None) == [{"key": "cipassword", "pending": "**********"}, {"key": "ciuser", "pending": "bob"},
                                   {"key": "sshkeys", "pending": "k"}]


# ---- on a real node ----------------------------------------------------------------------------------------
def _ok(px, upid: str, timeout: float = 60) -> dict:
    status = Tasks.blocking_status(px, upid, timeout=timeout, polling_interval=0.1)
    assert status["exitstatus"] == "OK", (status, px.nodes("n1").tasks(upid).log.get())
    return status


def _storage(node) -> str:
    return os.path.join(node.data_dir, "storage", "local")


def _images(node, vmid: int) -> list[str]:
    directory = os.path.join(_storage(node), "images", str(vmid))
    return sorted(f for f in os.listdir(directory) if not f.startswith(".")) if os.path.isdir(directory) else []


def test_a_cloudinit_drive_on_any_bus_is_allocated_shown_as_a_cdrom_and_freed(single_node):
    px = single_node.api()
    vmid = int(px.cluster.nextid.get())
    _ok(px, px.nodes("n1").qemu.create(vmid=vmid, name="ci", ide2="local:cloudinit", scsi0="local:1"))
    conf = px.nodes("n1").qemu(vmid).config.get()
    assert conf["ide2"] == f"local:{vmid}/vm-{vmid}-cloudinit.qcow2,media=cdrom"
    assert _images(single_node, vmid) == [f"vm-{vmid}-cloudinit.qcow2", f"vm-{vmid}-disk-0.qcow2"]
    listed = px.nodes("n1").storage("local").content.get(vmid=vmid)
    assert f"local:{vmid}/vm-{vmid}-cloudinit.qcow2" in [r["volid"] for r in listed]
    # one cloud-init drive per guest (qemu-server's wording); nothing changes on refusal
    with pytest.raises(ResourceException) as exc:
        px.nodes("n1").qemu(vmid).config.put(sata1="local:cloudinit")
    assert exc.value.status_code == 400 and "sata1 - cloud-init drive is already attached at 'ide2'" in str(exc.value)
    # moved to another bus: the old drive's volume is freed (Proxmox keeps no unused cloud-init volume)
    px.nodes("n1").qemu(vmid).config.put(delete="ide2")
    assert _images(single_node, vmid) == [f"vm-{vmid}-disk-0.qcow2"]
    assert not any(k.startswith("unused") for k in px.nodes("n1").qemu(vmid).config.get())
    for key in ("sata1", "scsi2"):  # PUT and POST config
        if key == "sata1":
            px.nodes("n1").qemu(vmid).config.put(**{key: "local:cloudinit"})
        else:
            px.nodes("n1").qemu(vmid).config.put(delete="sata1")
            _ok(px, px.nodes("n1").qemu(vmid).config.post(**{key: "local:cloudinit,format=raw"}))
        assert px.nodes("n1").qemu(vmid).config.get()[key].endswith(",media=cdrom")
    assert _images(single_node, vmid) == [f"vm-{vmid}-cloudinit.raw", f"vm-{vmid}-disk-0.qcow2"]
    # snapshots leave the CD-ROM alone; a clone gets a drive of its own; destroy frees both
    _ok(px, px.nodes("n1").qemu(vmid).snapshot.post(snapname="before"))
    _ok(px, px.nodes("n1").qemu(vmid).snapshot("before").rollback.post())
    newid = vmid + 1
    _ok(px, px.nodes("n1").qemu(vmid).clone.post(newid=newid, name="ci-clone"))
    assert px.nodes("n1").qemu(newid).config.get()["scsi2"] == \
        f"local:{newid}/vm-{newid}-cloudinit.raw,media=cdrom"
    assert _images(single_node, newid) == [f"vm-{newid}-cloudinit.raw", f"vm-{newid}-disk-0.qcow2"]
    for guest in (newid, vmid):
        _ok(px, px.nodes("n1").qemu(guest).delete())
        assert _images(single_node, guest) == []


def test_a_template_with_a_cloudinit_drive_gives_linked_clones_their_own(single_node):
    px = single_node.api()
    vmid = int(px.cluster.nextid.get())
    _ok(px, px.nodes("n1").qemu.create(vmid=vmid, name="tpl", scsi0="local:1", ide2="local:cloudinit",
                                       ciuser="ubuntu", net0="virtio"))
    _ok(px, px.nodes("n1").qemu(vmid).template.post())
    newid = vmid + 1
    _ok(px, px.nodes("n1").qemu(vmid).clone.post(newid=newid, name="from-tpl", full=0))
    conf = px.nodes("n1").qemu(newid).config.get()
    assert conf["ide2"] == f"local:{newid}/vm-{newid}-cloudinit.qcow2,media=cdrom"
    assert conf["scsi0"].startswith(f"local:{vmid}/base-{vmid}-disk-0.qcow2/{newid}/vm-{newid}-disk-0.qcow2")
    assert conf["ciuser"] == "ubuntu"
    px.nodes("n1").qemu(newid).config.put(ipconfig0="ip=10.1.2.3/24,gw=10.1.2.1")
    network = px.nodes("n1").qemu(newid).cloudinit.dump.get(type="network")
    assert "address: '10.1.2.3'" in network and conf["net0"].split("=")[1].split(",")[0].lower() in network


def test_bad_cloudinit_values_are_refused_with_proxmoxs_wording(single_node):
    px = single_node.api()
    vmid = int(px.cluster.nextid.get())
    _ok(px, px.nodes("n1").qemu.create(vmid=vmid, name="bad"))
    cases = {"cicustom": ("user=local:snippets/nope.yaml", "volume 'local:snippets/nope.yaml' does not exist"),
             "ipconfig0": ("ip=300.1.1.1/24", "ipconfig0.ip: invalid format - value does not look like a valid "
                                              "ipv4 network configuration"),
             "sshkeys": ("ssh-rsa AAAA x@y", "invalid urlencoded string: ssh-rsa AAAA x@y"),
             "ide2": ("nosuch:cloudinit,format=vmdk", "unsupported format 'vmdk' for a cloud-init drive")}
    before = px.nodes("n1").qemu(vmid).config.get()
    for key, (value, message) in cases.items():
        with pytest.raises(ResourceException) as exc:
            px.nodes("n1").qemu(vmid).config.put(**{key: value})
        assert exc.value.status_code == 400 and message in exc.value.errors[key], exc.value.errors
        with pytest.raises(ResourceException) as exc:
            px.nodes("n1").qemu.create(vmid=vmid + 1, **{key: value})
        assert exc.value.status_code == 400 and message in exc.value.errors[key]
    with pytest.raises(ResourceException) as exc:
        px.nodes("n1").qemu(vmid).config.put(cicustom="user=local:iso/user.iso")
    assert exc.value.errors["cicustom"] == "local:iso/user.iso is not in the snippets directory"
    assert px.nodes("n1").qemu(vmid).config.get() == before
    with pytest.raises(ResourceException) as exc:
        px.nodes("n1").qemu(vmid).cloudinit.dump.get(type="vendor")
    assert exc.value.status_code == 400


def test_current_and_pending_values_and_regeneration(single_node):
    px = single_node.api()
    vmid = int(px.cluster.nextid.get())
    _ok(px, px.nodes("n1").qemu.create(vmid=vmid, name="pend", ide2="local:cloudinit", ciuser="alice",
                                       net0="virtio", ipconfig0="ip=dhcp"))
    assert px.nodes("n1").qemu(vmid).cloudinit.get() == [{"key": "ciuser", "pending": "alice"},
                                                         {"key": "ipconfig0", "pending": "ip=dhcp"}]
    px.nodes("n1").qemu(vmid).cloudinit.put()
    assert px.nodes("n1").qemu(vmid).cloudinit.get() == [{"key": "ciuser", "value": "alice"},
                                                         {"key": "ipconfig0", "value": "ip=dhcp"}]
    px.nodes("n1").qemu(vmid).config.put(ciuser="bob", name="pend2", delete="ipconfig0")
    assert px.nodes("n1").qemu(vmid).cloudinit.get() == [
        {"key": "ciuser", "value": "alice", "pending": "bob"}, {"key": "ipconfig0", "value": "ip=dhcp", "delete": 1},
        {"key": "name", "value": "pend", "pending": "pend2"}]
    px.nodes("n1").qemu(vmid).cloudinit.put()
    assert px.nodes("n1").qemu(vmid).cloudinit.get() == [{"key": "ciuser", "value": "bob"}]
    user = px.nodes("n1").qemu(vmid).cloudinit.dump.get(type="user")
    assert user.startswith("#cloud-config\nhostname: pend2\n") and "user: bob\n" in user
    meta = px.nodes("n1").qemu(vmid).cloudinit.dump.get(type="meta")
    assert re.fullmatch(r"instance-id: [0-9a-f]{40}\n", meta)


def test_the_password_is_hashed_before_the_log_and_masked_for_everyone(single_node):
    px = single_node.api()
    clear = "Clear-Pa55-" + os.urandom(4).hex()
    px.access.users.post(userid="ciauditor@pve", password="auditor-secret")
    px.access.acl.put(path="/", roles="PVEAuditor", users="ciauditor@pve")
    auditor = type(px)("127.0.0.1", port=single_node.api_port, user="ciauditor@pve", password="auditor-secret",
                            verify_ssl=False)
    vmid = int(px.cluster.nextid.get())
    _ok(px, px.nodes("n1").qemu.create(vmid=vmid, name="secret", ide2="local:cloudinit", cipassword=clear))
    _ok(px, px.nodes("n1").qemu(vmid).snapshot.post(snapname="s1"))
    px.nodes("n1").qemu(vmid).config.put(cipassword=clear + "2")
    _ok(px, px.nodes("n1").qemu(vmid).config.post(cipassword=clear + "3", sata3="local:1"))
    rpc = Stubs(channel(single_node))  # gRPC runs the same endpoints: hashed on the way in, masked on the way out
    rpc.guests.Update(guest_pb2.UpdateGuestRequest(vmid=vmid, options={"cipassword": clear + "4"}),
                      metadata=ticket(single_node))
    got = rpc.guests.Get(guest_pb2.GetGuestRequest(vmid=vmid),
                         metadata=ticket(single_node, "ciauditor@pve", "auditor-secret"))
    assert got.config["cipassword"] == "**********"
    rpc.channel.close()
    for who in (px, auditor):
        guest = who.nodes("n1").qemu(vmid)
        assert guest.config.get()["cipassword"] == "**********"
        assert guest.config.get(current=1)["cipassword"] == "**********"
        assert guest.config.get(snapshot="s1")["cipassword"] == "**********"
        assert guest.snapshot("s1").config.get()["cipassword"] == "**********"
        assert {"key": "cipassword", "pending": "**********"} in guest.cloudinit.get()
    # the generated user-data: masked without VM.Config.Cloudinit, the hash with it (as Proxmox), never clear
    assert "password: **********\n" in auditor.nodes("n1").qemu(vmid).cloudinit.dump.get(type="user")
    assert re.search(r"password: \$5\$", px.nodes("n1").qemu(vmid).cloudinit.dump.get(type="user"))
    px.nodes("n1").qemu(vmid).cloudinit.put()
    _ok(px, px.nodes("n1").qemu(vmid).delete())
    # Windows guests keep it as given (cloudbase-init sets it): still never answered, not even to root
    _ok(px, px.nodes("n1").qemu.create(vmid=vmid + 1, ostype="win11", cipassword="Windows-Pa55"))
    assert px.nodes("n1").qemu(vmid + 1).config.get()["cipassword"] == "**********"
    assert "password: **********\n" in px.nodes("n1").qemu(vmid + 1).cloudinit.dump.get(type="user")
    _ok(px, px.nodes("n1").qemu(vmid + 1).delete())
    found = []
    for root, _dirs, names in os.walk(single_node.data_dir):
        for name in names:
            try:
                with open(os.path.join(root, name), "rb") as f:
                    if clear.encode() in f.read():
                        found.append(os.path.join(root, name))
            except OSError:
                pass
    with open(single_node.log_path, "rb") as f:
        if clear.encode() in f.read():
            found.append(single_node.log_path)
    assert not found


# ---- the test guest boots with it --------------------------------------------------------------------------
def _boot(px, node, vmid: int, **config) -> dict[str, str]:
    """Create and start the test guest with `config`; what its init found on the cloud-init drive. It is left
    running, its drive unmounted (READY comes after: a mounted CD-ROM's tray is locked, and a new medium refused)."""
    _ok(px, px.nodes("n1").qemu.create(vmid=vmid, memory=256, kvm=0, serial0="socket",
                                       args=kernel_args(build_guest()), **config))
    _ok(px, px.nodes("n1").qemu(vmid).status.start.post())
    wait_serial(node, vmid, "GPVE-GUEST-READY", timeout=120)
    text = serial_text(node, vmid)
    found = dict(re.findall(r"(\w+)=(\S*)", re.search(r"GPVE-CLOUDINIT (.*)", text).group(1)))
    found["net"] = "\n".join(re.findall(r"GPVE-CLOUDINIT-NET (.*?)\r?$", text, re.M))
    return found


@needs_qemu
def test_the_guest_boots_with_a_nocloud_drive_made_through_the_api(single_node):
    px = single_node.api()
    vmid = int(px.cluster.nextid.get())
    found = _boot(px, single_node, vmid, name="ci-guest", ide2="local:cloudinit", ciuser="alice",
                  sshkeys=quote(f"{ED25519_KEY} alice@laptop\n{RSA_KEY} second@key\n", safe=""),
                  net0="virtio", ipconfig0="ip=192.168.77.9/24,gw=192.168.77.1",
                  nameserver="192.168.77.53", searchdomain="lab.example", cipassword="guest-secret")
    mac = px.nodes("n1").qemu(vmid).config.get()["net0"].split("=")[1].split(",")[0].lower()
    assert (found["label"], found["user"], found["hostname"], found["key"]) == \
        ("cidata", "alice", "ci-guest", "alice@laptop")
    assert f"mac_address: '{mac}'" in found["net"]
    assert "address: '192.168.77.9'\nnetmask: '255.255.255.0'\ngateway: '192.168.77.1'" in found["net"]
    assert "- '192.168.77.53'" in found["net"]
    # the image holds what GET …/cloudinit now calls current; regenerated, the running guest gets the new medium
    assert {"key": "ciuser", "value": "alice"} in px.nodes("n1").qemu(vmid).cloudinit.get()
    px.nodes("n1").qemu(vmid).config.put(ciuser="alice2")
    assert {"key": "ciuser", "value": "alice", "pending": "alice2"} in px.nodes("n1").qemu(vmid).cloudinit.get()
    px.nodes("n1").qemu(vmid).cloudinit.put()
    assert {"key": "ciuser", "value": "alice2"} in px.nodes("n1").qemu(vmid).cloudinit.get()
    blocks = px.nodes("n1").qemu(vmid).monitor.post(command="info block")
    assert f"vm-{vmid}-cloudinit.qcow2" in blocks and "drive-ide2" in blocks
    _ok(px, px.nodes("n1").qemu(vmid).status.stop.post())
    _ok(px, px.nodes("n1").qemu(vmid).delete())


@needs_qemu
def test_a_cloudinit_drive_on_a_running_guest_follows_its_pending_changes(single_node):
    """On IDE the drive waits for the next start (a pending one reverted is freed at once); its image, made at the
    start, is in the config file's `[special:cloudinit]` section the digest covers; a delete waits too and frees
    the volume when it applies; on SCSI (default hotplug) the drive gets its image and is plugged at once."""
    px = single_node.api()
    vmid = int(px.cluster.nextid.get())
    _ok(px, px.nodes("n1").qemu.create(vmid=vmid, name="late-ci", memory=256, kvm=0, serial0="socket",
                                       scsihw="virtio-scsi-pci", args=kernel_args(build_guest()), ciuser="late"))
    vm = px.nodes("n1").qemu(vmid)
    _ok(px, vm.status.start.post())
    wait_serial(single_node, vmid, "GPVE-GUEST-READY", timeout=120)
    drive = f"local:{vmid}/vm-{vmid}-cloudinit.qcow2,media=cdrom"

    def waiting() -> dict:
        return {r["key"]: r for r in vm.pending.get() if "pending" in r or "delete" in r}
    vm.config.put(ide2="local:cloudinit")
    assert waiting() == {"ide2": {"key": "ide2", "pending": drive}} and "ide2" not in vm.config.get(current=1)
    assert _images(single_node, vmid) == [f"vm-{vmid}-cloudinit.qcow2"]
    vm.config.put(revert="ide2")
    assert waiting() == {} and _images(single_node, vmid) == []
    vm.config.put(ide2="local:cloudinit")
    _ok(px, vm.status.stop.post())
    assert vm.config.get(current=1)["ide2"] == drive and waiting() == {}
    digest = vm.config.get()["digest"]
    _ok(px, vm.status.start.post())
    wait_serial(single_node, vmid, "GPVE-CLOUDINIT-END", timeout=120)
    assert "user=late hostname=late-ci" in serial_text(single_node, vmid)
    assert vm.config.get()["digest"] != digest  # [special:cloudinit] now holds what the image was made from
    vm.config.put(delete="ide2")
    assert waiting() == {"ide2": {"key": "ide2", "value": drive, "delete": 1}}
    _ok(px, vm.status.stop.post())
    assert "ide2" not in vm.config.get() and _images(single_node, vmid) == []  # freed, not kept as unusedN
    assert not any(k.startswith("unused") for k in vm.config.get())
    _ok(px, vm.status.start.post())
    wait_serial(single_node, vmid, "GPVE-GUEST-READY", timeout=120)
    vm.config.put(scsi3="local:cloudinit")
    assert waiting() == {} and vm.config.get(current=1)["scsi3"] == drive
    blocks = vm.monitor.post(command="info block")
    assert "drive-scsi3" in blocks and f"vm-{vmid}-cloudinit.qcow2" in blocks
    assert {"key": "ciuser", "value": "late"} in vm.cloudinit.get()  # its image was made before the plug
    _ok(px, vm.status.stop.post())
    _ok(px, vm.delete())
    assert _images(single_node, vmid) == []


@needs_qemu
def test_the_guest_reads_a_configdrive2_drive_on_virtio_scsi(single_node):
    px = single_node.api()
    vmid = int(px.cluster.nextid.get())
    found = _boot(px, single_node, vmid, name="cd2-guest", scsihw="virtio-scsi-pci", scsi5="local:cloudinit",
                  citype="configdrive2", ciuser="carol", sshkeys=quote(f"{ED25519_KEY} carol@desk", safe=""),
                  net0="virtio", ipconfig0="ip=10.9.8.7/16,gw=10.9.0.1")
    assert (found["label"], found["user"], found["hostname"], found["key"]) == \
        ("config-2", "carol", "cd2-guest", "carol@desk")
    assert "iface eth0 inet static\naddress 10.9.8.7\nnetmask 255.255.0.0\ngateway 10.9.0.1" in found["net"]
    _ok(px, px.nodes("n1").qemu(vmid).status.stop.post())
    _ok(px, px.nodes("n1").qemu(vmid).delete())


@needs_qemu
def test_the_guest_reads_cicustom_user_data_from_a_snippet(single_node):
    px = single_node.api()
    snippets = os.path.join(_storage(single_node), "snippets")
    os.makedirs(snippets, exist_ok=True)
    with open(os.path.join(snippets, "ci-user.yaml"), "w") as f:  # operators copy snippets there, as in Proxmox
        f.write("#cloud-config\nhostname: from-snippet\nuser: snippy\nssh_authorized_keys:\n"
                "  - ssh-ed25519 AAAA snippet@key\n")
    vmid = int(px.cluster.nextid.get())
    found = _boot(px, single_node, vmid, name="custom", ide2="local:cloudinit", ciuser="ignored",
                  cicustom="user=local:snippets/ci-user.yaml", net0="virtio", ipconfig0="ip=dhcp")
    assert (found["user"], found["hostname"], found["key"]) == ("snippy", "from-snippet", "snippet@key")
    assert "- type: dhcp4" in found["net"]  # the parts not given are generated
    _ok(px, px.nodes("n1").qemu(vmid).status.stop.post())
    # a snippet that is gone fails the start with the reason, and regeneration answers 400
    os.unlink(os.path.join(snippets, "ci-user.yaml"))
    upid = px.nodes("n1").qemu(vmid).status.start.post()
    status = Tasks.blocking_status(px, upid, timeout=60, polling_interval=0.1)
    assert status["exitstatus"] == "volume 'local:snippets/ci-user.yaml' does not exist"
    r = requests.put(f"{single_node.url}/nodes/n1/qemu/{vmid}/cloudinit", verify=False,
                     headers={"Authorization": f"PVEAPIToken=root@pam!ci={_token(px)}"})
    assert r.status_code == 400 and r.json()["message"] == "volume 'local:snippets/ci-user.yaml' does not exist"
    _ok(px, px.nodes("n1").qemu(vmid).delete())


def _token(px) -> str:
    return px.access.users("root@pam").token("ci").post(privsep=0)["value"]


@needs_qemu
@pytest.mark.slow
def test_the_drive_moves_with_a_live_and_an_offline_migration(three_nodes):
    """A local cloud-init drive needs no with-local-disks: it is copied as it is (QemuMigrate's 'generated'
    volumes), and the guest keeps the image it booted with."""
    n1, n2, _ = three_nodes.nodes
    px = n1.api()
    vmid = int(px.cluster.nextid.get())
    found = _boot(px, n1, vmid, name="mover", ide2="local:cloudinit", ciuser="mia", net0="virtio",
                  ipconfig0="ip=dhcp")
    assert found["user"] == "mia"
    name = f"vm-{vmid}-cloudinit.qcow2"
    _ok(px, px.nodes("n1").qemu(vmid).migrate.post(target="n2", online=1), timeout=120)
    assert px.nodes("n2").qemu(vmid).status.current.get()["status"] == "running"
    assert _images(n2, vmid) == [name]
    wait_for(lambda: _images(n1, vmid) == [])  # the source's copy goes once the log says the guest moved
    assert {"key": "ciuser", "value": "mia"} in px.nodes("n2").qemu(vmid).cloudinit.get()
    _ok(px, px.nodes("n2").qemu(vmid).status.stop.post())
    _ok(px, px.nodes("n2").qemu(vmid).migrate.post(target="n1"))
    assert _images(n1, vmid) == [name]
    wait_for(lambda: _images(n2, vmid) == [])
    _ok(px, px.nodes("n1").qemu(vmid).delete())
    assert _images(n1, vmid) == []
