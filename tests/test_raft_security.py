"""The Raft port and the files at rest, attacked as issue 10 did: real `gpve serve` processes, raw TCP.

A peer without the cluster's Raft key gets nothing deserialized, runs no utility command, is streamed
no log; a peer with the key that is not a member is refused too. The port listens on the node's own
address only. Every file holding secrets or state is 0600 in a 0700 directory, also after compaction.
"""

from __future__ import annotations

import base64
import os
import pickle
import secrets
import socket
import stat
import struct
import subprocess
import threading
import time
import urllib.parse
import zlib

import pytest
from proxmoxer import ProxmoxAPI, ResourceException
from pysyncobj.encryptor import getEncryptor

from engine import commands as c
from engine.journal import DurableJournal
from engine.machine import Machine
from engine.replog import MAX_MESSAGE_BYTES, ReplicatedLog
from tests.harness import GPVE, REPO, Cluster, free_ports, wait_for
from tests.test_journal import _commit

pytestmark = pytest.mark.slow


class _CreatesFile:
    """Unpickling this creates `path` (what an attacker's payload would do, as harmlessly as possible)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def _frame(message, fernet=None) -> bytes:
    """One pysyncobj message on the wire: length ('i') + zlib(pickle), Fernet-encrypted when keyed."""
    data = zlib.compress(pickle.dumps(message, 2), 3)
    if fernet is not None:
        data = fernet.encrypt_at_time(data, int(time.monotonic()))
    return struct.pack("i", len(data)) + data


def _read_frame(sock: socket.socket, fernet):
    head = sock.recv(4, socket.MSG_WAITALL)
    if len(head) < 4:
        return None
    (length,) = struct.unpack("i", head)
    body = sock.recv(length, socket.MSG_WAITALL)
    return pickle.loads(zlib.decompress(fernet.decrypt(body)))


def _send_and_drain(port: int, payload: bytes, timeout: float = 3.0) -> bytes:
    """Send `payload` on a fresh connection; everything the node sends back until it closes (or timeout)."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                return received
            received += chunk
    raise AssertionError(f"the node kept the connection open ({len(received)} bytes received)")


def _raft_key(node) -> str:
    with open(os.path.join(node.data_dir, "priv", "raft.key")) as f:
        return f.read().strip()


def _membership(node) -> list[tuple[str, str]]:
    return sorted((n["name"], n["raft_addr"]) for n in node.api().cluster.config.nodes.get())


def _create_guest(node) -> int:
    px = node.api()
    vmid = int(px.cluster.nextid.get())
    px.nodes(node.name).qemu.create(vmid=vmid, name=f"after-{vmid}")
    return vmid


def test_a_peer_without_the_key_runs_nothing_and_changes_nothing(single_node, tmp_path):
    node = single_node
    before = _membership(node)
    marker = str(tmp_path / "pwned")
    proof = str(tmp_path / "payload-works")
    pickle.loads(pickle.dumps(_CreatesFile(proof), 2))  # the payload is live: unpickled, it makes its file
    assert os.path.exists(proof)
    wrong = getEncryptor(secrets.token_hex(32))
    attacks = {
        "pickle payload": _frame(_CreatesFile(marker)),
        "utility add": _frame(["add", "127.0.0.1:1"]),
        "utility status": _frame(["status"]),
        "read-only peer": _frame("readonly"),
        "wrong key": _frame(os.urandom(32), wrong) + _frame(["add", "127.0.0.1:1"], wrong),
        "wrong key, pickle payload": _frame(_CreatesFile(marker), wrong),
    }
    for name, payload in attacks.items():
        assert _send_and_drain(node.raft_port, payload) == b"", f"{name}: the node answered"
    time.sleep(1.0)
    assert not os.path.exists(marker)
    assert _membership(node) == before
    assert node.raft()["quorate"] is True
    vmid = _create_guest(node)  # one unreachable member added to a single node would make this 503
    assert vmid in {g["vmid"] for g in node.api().cluster.resources.get(type="vm")}


def test_a_peer_with_the_key_but_no_membership_is_refused(single_node):
    """Defence in depth: past the key exchange, only a member's address is accepted as a first message."""
    node = single_node
    before = _membership(node)
    fernet = getEncryptor(_raft_key(node))
    for first in (["add", "127.0.0.1:1"], ["status"], "readonly", "127.0.0.1:2"):
        with socket.create_connection(("127.0.0.1", node.raft_port), timeout=5) as sock:
            mine = os.urandom(32)
            sock.sendall(_frame(mine, fernet))
            wrapped_key, theirs = _read_frame(sock, fernet)  # the key exchange works with the right key
            assert wrapped_key == mine
            sock.sendall(_frame((theirs, first), fernet))
            rest = b""
            while chunk := sock.recv(65536):
                rest += chunk
            assert rest == b"", f"{first!r}: the node answered"
    assert _membership(node) == before
    _create_guest(node)


def test_raft_listens_on_the_nodes_own_address_only(single_node):
    port = f"{single_node.raft_port:04X}"
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                if state == "0A" and local.endswith(":" + port):
                    listening.append(local)
    assert listening == ["0100007F:" + port]  # 127.0.0.1, not 0.0.0.0 nor ::


def _mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_secrets_at_rest_are_private(single_node):
    d = single_node.data_dir
    for directory in (d, f"{d}/priv", f"{d}/ssl", f"{d}/raft"):
        assert _mode(directory) == 0o700, directory
    files = ["raft/journal", "raft/commit", "ssl/pve-ssl.key", "ssl/pve-root-ca.key"]
    files += [e.name for e in os.scandir(d) if e.is_file()] + [f"priv/{name}" for name in os.listdir(f"{d}/priv")]
    assert {"root-password", "priv/raft.key", "priv/authkey.key", "priv/pve-www.key"} <= set(files)
    for name in files:
        assert _mode(f"{d}/{name}") == 0o600, name


def test_compacted_and_received_snapshots_are_private(tmp_path):
    """A leader compacts (snapshot + rewritten journal); a node added later receives the snapshot, which
    pysyncobj writes itself. All 0600 in 0700 directories, under a permissive umask."""
    old_umask = os.umask(0o022)
    key = secrets.token_hex(32)
    a_port, b_port = free_ports(2)
    a_addr, b_addr = f"127.0.0.1:{a_port}", f"127.0.0.1:{b_port}"
    logs = []

    def open_log(name: str, addr: str, others: list[str]) -> ReplicatedLog:
        journal = DurableJournal(str(tmp_path / name / "raft"))
        log = ReplicatedLog(Machine(), journal, str(tmp_path / name / "raft" / "snapshot"), addr, others,
                            lock=threading.RLock(), password=key, bindAddress=addr, logCompactionMinEntries=50,
                            logCompactionMinTime=1)
        logs.append(log)
        return log

    try:
        a = open_log("a", a_addr, [])
        wait_for(a._isLeader, timeout=10, interval=0.02)
        _commit(a, c.RegisterNode(request_id="reg", ts=1, name="a", ip="127.0.0.1", api_port=1, raft_addr=a_addr))
        for i in range(120):
            _commit(a, c.CreateGuest(request_id=f"g{i}", ts=2, node="a", vmid=100 + i, config={"name": f"g{i}"},
                                     upid=f"U{i}", starttime=2))
            if i == 80:
                a.forceLogCompaction()
        wait_for(lambda: os.path.exists(tmp_path / "a" / "raft" / "snapshot") and len(a.journal) <= 100)
        b = open_log("b", b_addr, [a_addr])
        added = threading.Event()
        a.change_membership("add", b_addr, lambda _res, err: err == 0 and added.set())
        assert added.wait(20), "the new member was not added"
        wait_for(lambda: len(b.machine.state.guests) == 120, timeout=20)
        for name in ("a", "b"):
            raft = tmp_path / name / "raft"
            assert _mode(str(raft)) == 0o700
            for f in ("snapshot", "journal", "commit", "meta"):
                if (raft / f).exists():
                    assert _mode(str(raft / f)) == 0o600, f"{name}/raft/{f}"
        assert (tmp_path / "b" / "raft" / "snapshot").exists(), "b caught up without a snapshot"
    finally:
        os.umask(old_umask)
        for log in logs:
            log.destroy_synchronous()
            log.journal.close()


def test_a_joining_node_gets_the_key_in_the_join_answer_only(tmp_path):
    cluster = Cluster(str(tmp_path), 2, standalone=True).start()
    try:
        n1, n2 = cluster.nodes
        key = _raft_key(n1)
        assert _raft_key(n2) != key  # each standalone node made its own
        px1 = n1.api()
        px1.cluster.config.post(clustername="prod")
        assert _raft_key(n1) == key  # creating the cluster keeps the node's key
        info = px1.cluster.config.join.get()
        assert key not in repr(info)
        fingerprint = info["nodelist"][0]["pve_fp"]
        # the answer that carries the key is root@pam's alone: an Administrator (or a token) gets 403
        px1.access.users.post(userid="admin@pve", password="Secret-pw-123")
        px1.access.acl.put(path="/", roles="Administrator", users="admin@pve")
        admin = ProxmoxAPI("127.0.0.1", port=n1.api_port, user="admin@pve", password="Secret-pw-123",
                           verify_ssl=False, timeout=10)
        with pytest.raises(ResourceException) as exc:
            admin.cluster.config.nodes("evil").post(raft_addr="127.0.0.1:1", new_node_ip="127.0.0.1")
        assert exc.value.status_code == 403 and "user != root@pam" in str(exc.value)
        assert _membership(n1) == [("n1", f"127.0.0.1:{n1.raft_port}")]
        n2.api(timeout=60).cluster.config.join.post(hostname=f"127.0.0.1:{n1.api_port}", password=n1.password,
                                                    fingerprint=fingerprint)
        assert _raft_key(n2) == key
        for node in cluster.nodes:
            wait_for(lambda node=node: [m for m, _ in _membership(node)] == ["n1", "n2"])
        n2.wait_serving_own_certificate()  # the joiner restarts its API with the cluster's certificate
        vmid = _create_guest(n2)
        wait_for(lambda: vmid in {g["vmid"] for g in n1.api().cluster.resources.get(type="vm")})
        # after a restart, n2 still speaks the cluster's key
        n2.stop()
        n2.start()
        n2.wait_ready()
        vmid = _create_guest(n2)
        wait_for(lambda: vmid in {g["vmid"] for g in n1.api().cluster.resources.get(type="vm")})
    finally:
        cluster.stop()
    for node in cluster.nodes:
        with open(node.log_path) as f:
            assert key not in f.read(), f"{node.name}'s log shows the Raft key"


def test_a_static_cluster_needs_a_shared_key_and_works_with_it(three_nodes, tmp_path):
    n1, n2, n3 = three_nodes.nodes
    assert _raft_key(n1) == _raft_key(n2) == _raft_key(n3)
    vmid = _create_guest(n1)
    wait_for(lambda: n3.api().nodes("n1").qemu(vmid).config.get()["name"] == f"after-{vmid}")
    out = subprocess.run(GPVE + ["serve", "--name", "x", "--data-dir", str(tmp_path / "x"), "--peers",
                                 "x=127.0.0.1:1,y=127.0.0.1:2"], cwd=REPO, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode != 0 and "--peers needs --cluster-key-file" in out.stderr


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def _stream_oversized(port: int, limit_seconds: float) -> tuple[int, float]:
    """Declare a 2 GiB message and stream zeros until the node drops us: (bytes sent, seconds it took)."""
    zeros = bytes(256 * 1024)
    sent, started = 0, time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=limit_seconds) as sock:
        try:
            sock.sendall(struct.pack("i", 2**31 - 1))
            while time.monotonic() - started < limit_seconds:
                sock.sendall(zeros)
                sent += len(zeros)
        except (BrokenPipeError, ConnectionResetError):
            return sent, time.monotonic() - started
    raise AssertionError(f"the node kept reading ({sent} bytes in {limit_seconds} s)")


def test_an_oversized_message_is_refused_before_it_is_buffered(single_node):
    """pysyncobj buffered a whole message before checking anything: a 2 GiB declaration stalled the node's tick
    thread (writes 503, revoked tokens still valid on it) and grew its memory. Dropped at once now."""
    node = single_node
    session = node.session()
    vmid = _create_guest(node)
    config = f"{node.url}/nodes/{node.name}/qemu/{vmid}/config"
    for i in range(20):  # warm up what the writes below allocate, before the memory is measured
        session.put(config, data={"name": f"warm-{i}"}, timeout=10).raise_for_status()
    rss_before = _rss_kib(node.proc.pid)
    attacks: list[tuple[int, float]] = []
    stop = threading.Event()

    def attack() -> None:
        while not stop.is_set():
            attacks.append(_stream_oversized(node.raft_port, 10.0))

    attacker = threading.Thread(target=attack)
    attacker.start()
    try:
        rss_peak = rss_before
        for i in range(40):
            started = time.monotonic()
            answer = session.put(config, data={"name": f"during-{i}"}, timeout=10)
            assert answer.status_code == 200, answer.text
            assert time.monotonic() - started < 2.0, "a write stalled behind the attacker"
            rss_peak = max(rss_peak, _rss_kib(node.proc.pid))
    finally:
        stop.set()
        attacker.join(30)
    assert len(attacks) >= 5, attacks
    for sent, seconds in attacks:
        assert seconds < 1.0 and sent < 8 * 2**20, (sent, seconds)  # what the kernel buffers, not the node
    assert rss_peak - rss_before < 4 * 1024, f"the node's memory grew by {rss_peak - rss_before} KiB"
    assert session.get(config, timeout=10).json()["data"]["name"] == "during-39"
    with open(node.log_path) as f:
        assert "message too large" in f.read()


def test_a_member_may_send_large_messages_but_not_unbounded_ones(tmp_path):
    """Past the key exchange and the member's introduction, a message may exceed the 64 KiB a stranger may
    send (append_entries batches carry whole entries); a declaration over MAX_MESSAGE_BYTES is dropped too."""
    key = secrets.token_hex(32)
    fernet = getEncryptor(key)
    a_port, b_port = free_ports(2)
    a_addr, b_addr = f"127.0.0.1:{a_port}", f"127.0.0.1:{b_port}"  # b: a member that is not running
    log = ReplicatedLog(Machine(), DurableJournal(str(tmp_path / "raft")), str(tmp_path / "raft" / "snapshot"),
                        a_addr, [b_addr], lock=threading.RLock(), password=key, bindAddress=a_addr)
    try:
        wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", a_port)) == 0, timeout=10, interval=0.05)

        def keyed() -> tuple[socket.socket, bytes]:
            sock = socket.create_connection(("127.0.0.1", a_port), timeout=3)
            mine = os.urandom(32)
            sock.sendall(_frame(mine, fernet))
            _, theirs = _read_frame(sock, fernet)
            return sock, theirs

        def still_open(sock: socket.socket, seconds: float) -> bool:
            """Drain what the node sends (a member is sent vote requests) for `seconds`: is it still open then?
            (A member's connection that sends nothing is dropped after pysyncobj's connectionTimeout, 3.5 s.)"""
            deadline = time.monotonic() + seconds
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    if not sock.recv(65536):
                        return False
                except TimeoutError:
                    break
                except ConnectionResetError:
                    return False
            return True

        with keyed()[0] as sock:  # keyed, but not introduced as a member yet: a stranger's bound
            sock.sendall(struct.pack("i", 2 * 2**20))
            assert not still_open(sock, 3.0), "2 MiB accepted before the peer was known as a member"

        sock, theirs = keyed()
        with sock:
            sock.sendall(_frame((theirs, b_addr), fernet))
            sock.settimeout(10.0)
            assert _read_frame(sock, fernet) is not None  # a member is sent vote requests: introduction handled
            big = {"type": "gpve-test", "pad": os.urandom(2 * 2**20)}  # not a Raft message: ignored
            sock.sendall(_frame((theirs, big), fernet))
            assert still_open(sock, 1.0), "a member's 2 MiB message was refused"
            sock.sendall(struct.pack("i", MAX_MESSAGE_BYTES + 1))
            assert not still_open(sock, 3.0), "a member's oversized declaration was accepted"
    finally:
        log.destroy_synchronous()
        log.journal.close()


def test_a_cluster_replicates_entries_over_a_strangers_bound(three_nodes):
    """500 KiB entries (over the 64 KiB a stranger may send) reach every member: shipped alone (pysyncobj
    splits them) and, to a member catching up, whole in a batch with the entries before them."""
    nodes = three_nodes.nodes
    leader = three_nodes.leader()
    behind = next(n for n in nodes if n is not leader)
    session = leader.session()
    vmid = _create_guest(leader)
    config = f"{leader.url}/nodes/{leader.name}/qemu/{vmid}/config"

    def write(key: str, value: str) -> int:
        answer = session.put(config, json={key: value}, timeout=30)
        assert answer.status_code == 200, answer.text
        return leader.raft(session)["commit_index"]

    def applied_everywhere(index: int, members) -> None:
        for node in members:
            wait_for(lambda node=node: node.raft()["last_applied"] >= index, timeout=30)

    def incompressible(size: int) -> str:
        """URL-encoded SSH public keys, as `sshkeys` holds them, about `size` characters: random ed25519 keys,
        which zlib cannot shrink (a repeated character would shrink to nothing)."""
        lines: list[str] = []
        while sum(map(len, lines)) < size:
            blob = b"".join(len(p).to_bytes(4, "big") + p for p in (b"ssh-ed25519", secrets.token_bytes(32)))
            lines.append(urllib.parse.quote(f"ssh-ed25519 {base64.b64encode(blob).decode()}\n", safe=""))
        return "".join(lines)

    applied_everywhere(write("sshkeys", incompressible(500 * 1024)), nodes)
    behind.stop()
    for i in range(3):
        write("name", f"small-{i}")
        index = write("sshkeys", incompressible(500 * 1024))
    behind.start()
    behind.wait_ready()
    applied_everywhere(index, nodes)
    for node in nodes:
        with open(node.log_path) as f:
            assert "message too large" not in f.read(), node.name
