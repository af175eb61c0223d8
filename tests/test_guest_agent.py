"""The QEMU guest agent through the API of a real node: real QEMU, and Debian's qemu-ga in the test guest."""

from __future__ import annotations

import base64
import glob
import os

import pytest
from proxmoxer import ProxmoxAPI, ResourceException

from tests.guest import build_guest, qemu_missing, serial_text
from tests.harness import Cluster, wait_for
from tests.test_guests import done, make_guest, ok, start

pytestmark = [pytest.mark.slow, pytest.mark.skipif(qemu_missing() is not None, reason=qemu_missing() or "")]


@pytest.fixture(scope="module")
def guest_dir():
    return build_guest()


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    cluster = Cluster(str(tmp_path_factory.mktemp("agent")), 1).start()
    yield cluster.nodes[0]
    cluster.stop()  # and the guests it leaves running


def agent_ready(px, vmid: int) -> None:
    def pong():
        try:
            return px.nodes("n1").qemu(vmid).agent.ping.post() == {"result": {}}
        except ResourceException:
            return False
    wait_for(pong, timeout=60, interval=0.5)


@pytest.fixture(scope="module")
def agent_guest(node, guest_dir):
    """A running guest with `agent: 1` and two NICs; qemu-ga answers."""
    px = node.api()
    vmid = make_guest(px, guest_dir, agent=1, net0="virtio", net1="virtio")
    start(px, node, vmid)
    agent_ready(px, vmid)
    return vmid


def refused(call, **params) -> ResourceException:
    with pytest.raises(ResourceException) as info:
        call(**params)
    return info.value


def test_network_interfaces_show_the_nics_with_the_macs_from_the_config(node, agent_guest):
    px = node.api()
    conf = px.nodes("n1").qemu(agent_guest).config.get()
    macs = {conf[key].split(",")[0].split("=")[1].lower() for key in ("net0", "net1")}
    assert len(macs) == 2 and all(m.startswith("bc:24:11:") for m in macs)
    interfaces = px.nodes("n1").qemu(agent_guest).agent("network-get-interfaces").get()["result"]
    by_mac = {i["hardware-address"].lower(): i for i in interfaces}
    assert macs <= set(by_mac), interfaces
    assert {by_mac[m]["name"] for m in macs} == {"eth0", "eth1"}
    assert any(i["name"] == "lo" and {"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8}
               in i["ip-addresses"] for i in interfaces)
    assert px.nodes("n1").qemu(agent_guest).status.current.get()["agent"] == 1


def test_ping_info_osinfo_hostname_and_every_read_only_command(node, agent_guest):
    agent = node.api().nodes("n1").qemu(agent_guest).agent
    assert agent.ping.post() == {"result": {}}
    info = agent.info.get()["result"]
    assert info["version"].startswith("7.") or info["version"].startswith("8.")
    assert {"guest-exec", "guest-network-get-interfaces"} <= {c["name"] for c in info["supported_commands"]}
    osinfo = agent("get-osinfo").get()["result"]
    assert osinfo["id"] == "gpve-test-guest" and osinfo["machine"] == "x86_64" and osinfo["kernel-release"]
    host = agent("get-host-name").get()["result"]["host-name"]
    pid = agent.exec.post(command=["/bin/hostname"])["pid"]
    assert wait_exited(agent, pid)["out-data"].strip() == host
    assert agent.post(command="get-host-name") == {"result": {"host-name": host}}  # the old endpoint
    assert agent("fsfreeze-status").post() == {"result": "thawed"}
    names = [row["name"] for row in agent.get()]
    assert "network-get-interfaces" in names and "exec-status" in names and "set-user-password" in names
    for name in ("get-time", "get-timezone", "get-users", "get-vcpus", "get-fsinfo", "get-memory-blocks",
                 "get-memory-block-info"):
        assert "result" in agent(name).get(), name  # an error the agent answers is a result too, as in Proxmox
    assert len(agent("get-vcpus").get()["result"]) == 1


def wait_exited(agent, pid: int) -> dict:
    status: dict = {}

    def exited() -> bool:
        status.update(agent("exec-status").get(pid=pid))
        return bool(status["exited"])
    wait_for(exited, timeout=20, interval=0.2)
    return status


def test_exec_returns_the_output_and_exit_code_of_a_command(node, agent_guest):
    agent = node.api().nodes("n1").qemu(agent_guest).agent
    pid = agent.exec.post(command=["/bin/sh", "-c", "echo out; echo err >&2; exit 3"])["pid"]
    status = wait_exited(agent, pid)
    assert (status["exited"], status["exitcode"], status["out-data"], status["err-data"]) == (1, 3, "out\n", "err\n")
    pid = agent.exec.post(command="/bin/cat", **{"input-data": "given on stdin"})["pid"]  # one string: a list of one
    assert wait_exited(agent, pid)["out-data"] == "given on stdin"
    error = refused(agent.exec.post, command="/no/such/program")
    assert error.status_code == 409 and "Agent error: " in error.content


def test_file_write_then_read_round_trip(node, agent_guest):
    agent = node.api().nodes("n1").qemu(agent_guest).agent
    assert agent("file-write").post(file="/tmp/agent-test", content="hello\nworld, caf\u00e9\n") is None
    assert agent("file-read").get(file="/tmp/agent-test") == {"content": "hello\nworld, caf\u00e9\n", "bytes-read": 18}
    assert agent("file-read").get(file="/tmp/agent-test", offset=6, count=5) == \
        {"content": "world", "bytes-read": 5, "truncated": 1}
    raw = bytes(range(256))
    agent("file-write").post(file="/tmp/agent-bin", content=base64.b64encode(raw).decode(), encode=0)
    assert base64.b64decode(agent("file-read").get(file="/tmp/agent-bin", decode=0)["content"]) == raw
    assert agent("file-read").get(file="/tmp/agent-bin")["content"].encode("latin-1") == raw  # as Proxmox sends bytes
    error = refused(agent("file-read").get, file="/no/such/file")
    assert error.status_code == 409 and "Agent error: " in error.content and "No such file" in error.content


def test_set_user_password_reaches_the_guest_and_no_log(node, agent_guest):
    agent = node.api().nodes("n1").qemu(agent_guest).agent
    secret = "agent-S3cret-pw"
    assert agent("set-user-password").post(username="root", password=secret) == {"result": {}}
    shadow = agent("file-read").get(file="/etc/shadow")["content"]
    assert shadow.startswith("root:$") and secret not in shadow
    error = refused(agent("set-user-password").post, username="root", password="four")
    assert error.status_code == 400 and error.errors == {"password": "value must be at least 5 characters long"}
    logs = [node.log_path] + glob.glob(os.path.join(node.data_dir, "**", "*"), recursive=True)
    for path in logs:
        if os.path.isfile(path):
            with open(path, "rb") as f:
                assert secret.encode() not in f.read(), path


def test_privileges_are_proxmoxs(node, agent_guest):
    px = node.api()
    px.access.users.post(userid="aud@pve", password="auditor-pw")
    px.access.acl.put(path=f"/vms/{agent_guest}", roles="PVEAuditor", users="aud@pve")
    auditor = ProxmoxAPI("127.0.0.1", port=node.api_port, user="aud@pve", password="auditor-pw", verify_ssl=False)
    agent = auditor.nodes("n1").qemu(agent_guest).agent
    assert agent.ping.post() == {"result": {}}
    assert agent("network-get-interfaces").get()["result"]
    error = refused(agent.exec.post, command="/bin/true")
    assert error.status_code == 403
    assert f"missing 'VM.GuestAgent.Unrestricted' on '/vms/{agent_guest}'" in error.content
    assert refused(agent("file-read").get, file="/etc/shadow").status_code == 403
    assert refused(agent.shutdown.post).status_code == 403


def test_errors_without_an_agent_on_a_stopped_guest_and_when_none_answers(node, guest_dir):
    px = node.api()
    plain = make_guest(px, guest_dir)
    error = refused(px.nodes("n1").qemu(plain).agent.ping.post)
    assert (error.status_code, error.content) == (409, "No QEMU guest agent configured")
    stopped = make_guest(px, guest_dir, agent=1)
    error = refused(px.nodes("n1").qemu(stopped).agent("network-get-interfaces").get)
    assert (error.status_code, error.content) == (409, f"VM {stopped} is not running")
    # an ISA agent port: QEMU has the channel, but the test guest runs qemu-ga on virtio-serial only
    silent = make_guest(px, guest_dir, agent="enabled=1,type=isa")
    start(px, node, silent)
    error = refused(px.nodes("n1").qemu(silent).agent.ping.post)
    assert (error.status_code, error.content) == (409, "QEMU guest agent is not running")
    # ... so a shutdown warns, as Proxmox's does, and presses the power button
    upid = px.nodes("n1").qemu(silent).status.shutdown.post(timeout=60)
    assert done(px, upid)["exitstatus"] == "WARNINGS: 1"
    log = [x["t"] for x in px.nodes("n1").tasks(upid).log.get()]
    assert any(t.startswith(f"WARN: QEMU Guest Agent is not running - VM {silent} qga command 'guest-ping' failed")
               for t in log), log
    assert "GPVE-GUEST-POWEROFF" in serial_text(node, silent)
    assert px.nodes("n1").qemu(silent).status.current.get()["status"] == "stopped"


def test_shutdown_goes_through_the_agent(node, guest_dir):
    """`agent: 1`: qmshutdown asks qemu-ga (the guest ignores the ACPI button here), the task ends OK, the guest
    is stopped; the agent endpoint's `shutdown` powers it off too."""
    px = node.api()
    vmid = make_guest(px, guest_dir, cmdline="gpve.noacpi", agent=1)
    start(px, node, vmid)
    agent_ready(px, vmid)
    upid = px.nodes("n1").qemu(vmid).status.shutdown.post(timeout=60)
    ok(px, upid)
    assert f"shutting down VM {vmid} (guest agent, timeout 60 s)" in [x["t"] for x in
                                                                      px.nodes("n1").tasks(upid).log.get()]
    assert "GPVE-GUEST-AGENT-SHUTDOWN" in serial_text(node, vmid)
    assert px.nodes("n1").qemu(vmid).status.current.get()["status"] == "stopped"
    start(px, node, vmid)
    agent_ready(px, vmid)
    assert px.nodes("n1").qemu(vmid).agent.shutdown.post() == {"result": None}
    wait_for(lambda: px.nodes("n1").qemu(vmid).status.current.get()["status"] == "stopped", timeout=20)
    assert not any("crashed" in e["msg"] for e in px.cluster.log.get())
