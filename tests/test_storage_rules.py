"""Storage rules that are pure or local: definitions and node tasks in the log (engine/storage.py), the file-name and
content checks of uploads (hypervisor/storage_files.py), the streamed multipart reader (api/uploads.py) and the
node's live view of its storages (hypervisor/storages.py)."""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager

import pytest

from api.errors import ApiError
from api.uploads import read_upload
from engine import commands as c
from engine import storage as st
from engine.access import ChangeAcl, SetPool
from engine.codec import encode_records
from engine.machine import Machine
from hypervisor.storage import StorageError
from hypervisor.storage_files import FileRefused, disc_format, hash_file, target_name
from hypervisor.storages import NodeStorages


def run(m: Machine, *commands: c.Command) -> list[dict]:
    return m.execute_entry(encode_records(list(commands)))


def one(m: Machine, command: c.Command) -> dict:
    return run(m, command)[0]


def cluster() -> Machine:
    m = Machine()
    run(m, c.RegisterNode(request_id="reg", ts=1.0, name="n1", ip="127.0.0.1", api_port=8006, raft_addr="a:1"))
    return m


def define(rid: str, storage: str, create: bool = True, digest: str | None = None, delete=(), **options):
    return st.SetStorage(request_id=rid, ts=2.0, storage=storage, create=create, options=options, delete=list(delete),
                         digest=digest)


def node_task(rid: str, task_type: str, storage: str, **intent) -> st.StartNodeTask:
    return st.StartNodeTask(request_id=rid, ts=3.0, node="n1", upid=f"U-{rid}", starttime=3, type=task_type,
                            storage=storage, intent=intent)


def test_local_is_always_there_with_its_defaults_and_comes_back_when_deleted():
    m = cluster()
    assert st.definitions(m.state) == {"local": {"type": "dir", "content": "backup,images,iso,snippets,vztmpl",
                                                 "prune-backups": "keep-all=1"}}
    assert one(m, define("l1", "local"))["error"] == {
        "status": 409, "message": "create storage failed: storage ID 'local' already defined"}
    assert one(m, define("l2", "local", create=False, content="iso", nodes="n2")) == {
        "ok": {"storage": "local", "type": "dir"}}
    assert st.definitions(m.state)["local"]["content"] == "iso" and "nodes" not in st.definitions(m.state)["local"]
    assert one(m, st.DeleteStorage(request_id="l3", ts=2.0, storage="local")) == {"ok": {}}
    assert st.definitions(m.state)["local"]["content"] == "backup,images,iso,snippets,vztmpl"


def test_definitions_are_checked_as_pve_storage_checks_them():
    m = cluster()
    refusals = [
        (define("a", "xs"), "missing value for required option 'path'"),
        (define("b", "xs", path="relative/dir"), "illegal path for directory storage: relative/dir"),
        (define("c", "xs", path="/srv/x", content="iso,floppy"), "Parameter verification failed"),
        (define("d", "xs", path="/srv/x", content="none,iso"), "unable to combine 'none' with other content types"),
        (define("e", "xs", path="/srv/x", server="nfs.example"), "Parameter verification failed"),
        (define("f", "Bad!", path="/srv/x"), "Parameter verification failed"),
        (define("g", "nope", create=False, content="iso"), "storage 'nope' does not exist"),
    ]
    for command, message in refusals:
        assert one(m, command)["error"]["message"] == message, command
    assert st.definitions(m.state).keys() == {"local"}  # nothing was written
    assert one(m, define("ok", "xs", path="/srv/x")) == {"ok": {"storage": "xs", "type": "dir"}}
    assert st.definitions(m.state)["xs"] == {"type": "dir", "path": "/srv/x", "content": "images,rootdir"}
    digest = st.digest(m.state)
    changes = [
        (define("h", "xs", create=False, path="/srv/y"), "can't change value of fixed parameter 'path'"),
        (define("i", "xs", create=False, delete=["path"]),
         "update storage failed: unable to delete fixed option 'path'"),
        (define("j", "xs", create=False, delete=["bogus"]), "update storage failed: no such option 'bogus'"),
        (define("k", "xs", create=False, shared=1, delete=["shared"]),
         "update storage failed: cannot set and delete property 'shared' at the same time!"),
        (define("l", "xs", create=False, digest="0" * 40, disable=1),
         "detected modified configuration - file changed by other user? Try again."),
    ]
    for command, message in changes:
        assert one(m, command)["error"]["message"] == message, command
    assert st.digest(m.state) == digest
    assert "ok" in one(m, define("m", "xs", create=False, digest=digest, disable=1, nodes="n1"))
    assert st.digest(m.state) != digest
    conf = st.definitions(m.state)["xs"]
    assert not st.enabled_on(conf, "n1") and st.on_node(conf, "n1") and not st.on_node(conf, "n2")


def test_a_deleted_storage_takes_its_acls_and_pool_memberships_along():
    m = cluster()
    run(m, define("s", "xs", path="/srv/x"),
        SetPool(request_id="p", ts=2.0, poolid="pl", create=True),
        SetPool(request_id="p2", ts=2.0, poolid="pl", storage=["xs", "local"]),
        ChangeAcl(request_id="acl", ts=2.0, path="/storage/xs", roles=["PVEDatastoreUser"], users=["root@pam"]))
    assert "/storage/xs" in m.state.access["acl"]
    assert one(m, st.DeleteStorage(request_id="d", ts=3.0, storage="xs")) == {"ok": {}}
    assert m.state.access["pool"]["pl"]["storage"] == ["local"]
    assert "/storage/xs" not in m.state.access.get("acl", {})
    assert one(m, st.DeleteStorage(request_id="d2", ts=3.0, storage="xs"))["error"]["status"] == 404


def test_a_volume_a_guest_or_snapshot_uses_cannot_be_deleted():
    m = cluster()
    run(m, c.CreateGuest(request_id="g", ts=2.0, node="n1", vmid=100, upid="U-g", starttime=2,
                         config={"scsi0": "local:100/base-100-disk-0.qcow2,size=1G",
                                 "ide2": "local:iso/x.iso,media=cdrom",
                                 "cicustom": "user=local:snippets/u.yaml"}),
        c.CreateGuest(request_id="h", ts=2.0, node="n1", vmid=101, upid="U-h", starttime=2,
                      config={"scsi0": "local:100/base-100-disk-0.qcow2/101/vm-101-disk-0.qcow2"}))
    m.state.guests[101]["snapshots"] = {"s1": {"scsi1": "local:101/vm-101-disk-1.qcow2"}}
    cases = {
        "local:iso/x.iso": "unable to delete 'local:iso/x.iso' - volume is still in use by VM 100 (ide2)",
        "local:snippets/u.yaml": "unable to delete 'local:snippets/u.yaml' - volume is still in use by VM 100 "
                                 "(cicustom)",
        "local:100/base-100-disk-0.qcow2": "base volume '100/base-100-disk-0.qcow2' is still in use by linked clones",
        "local:101/vm-101-disk-1.qcow2": "unable to delete 'local:101/vm-101-disk-1.qcow2' - volume is still in use "
                                         "by VM 101 (snapshot 's1')",
        "other:iso/x.iso": "Parameter verification failed",
        "local:iso/../x": "Parameter verification failed",
    }
    for volid, message in cases.items():
        result = one(m, node_task(volid, "imgdel", "local", volume=volid))
        assert result["error"]["message"] == message, volid
    assert one(m, node_task("free", "imgdel", "local", volume="local:iso/y.iso")) == {"ok": {"upid": "U-free"}}
    task = m.state.tasks["U-free"]
    assert (task["type"], task["vmid"], task["intent"]) == ("imgdel", None, {"volume": "local:iso/y.iso",
                                                                             "storage": "local"})


def test_node_tasks_need_their_storage_enabled_on_the_node_and_their_declared_intent():
    m = cluster()
    run(m, define("s", "off", path="/srv/off", disable=1), define("t", "far", path="/srv/far", nodes="n2"))
    assert one(m, node_task("a", "imgcopy", "off", filename="x.iso"))["error"]["message"] == \
        "storage 'off' is disabled"
    assert one(m, node_task("b", "imgcopy", "far", filename="x.iso"))["error"]["message"] == \
        "storage 'far' is not available on node 'n1'"
    assert one(m, node_task("c", "imgcopy", "gone", filename="x.iso"))["error"]["status"] == 404
    assert one(m, node_task("d", "imgcopy", "local", filename="x.iso", script="rm -rf /"))["error"]["errors"] == {
        "script": "'script' is not supported by gpve for imgcopy"}
    assert one(m, node_task("e", "qmstart", "local"))["error"]["message"] == "task type 'qmstart' is not a storage task"
    assert one(m, node_task("f", "download", "local", url="http://x/y.iso", filename="y.iso", content="iso")) == {
        "ok": {"upid": "U-f"}}


@pytest.mark.parametrize("content, given, stored", [
    ("iso", "debian-12.iso", "debian-12.iso"),
    ("iso", "My Disc (1).ISO", "My_Disc__1_.ISO"),
    ("vztmpl", "debian.tar.zst", "debian.tar.zst"),
    ("import", "disk.qcow2", "disk.qcow2"),
    ("snippets", "user-data.yaml", "user-data.yaml"),
])
def test_file_names_are_normalized_as_proxmox_normalizes_them(content, given, stored):
    assert target_name(content, given) == stored


@pytest.mark.parametrize("content, given, message", [
    ("iso", "../../etc/evil.iso", "invalid file name '../../etc/evil.iso' - a path is not allowed"),
    ("iso", "..\\evil.iso", "invalid file name '..\\evil.iso' - a path is not allowed"),
    ("snippets", "..", "invalid file name '..' - a path is not allowed"),
    ("iso", "notes.txt", "wrong file extension"),
    ("vztmpl", "x.tar.rar", "wrong file extension"),
    ("import", "x.ovf", "invalid filename or wrong extension"),
])
def test_file_names_holding_a_path_or_the_wrong_extension_are_refused(content, given, message):
    with pytest.raises(FileRefused) as exc:
        target_name(content, given)
    assert (exc.value.field, str(exc.value)) == ("filename", message)


def test_only_iso_9660_and_udf_images_count_as_discs(tmp_path):
    iso, udf, other = tmp_path / "a.iso", tmp_path / "b.iso", tmp_path / "c.iso"
    iso.write_bytes(bytes(16 * 2048) + b"\x01CD001\x01" + bytes(4096))
    udf.write_bytes(bytes(16 * 2048) + b"\x00BEA01\x01" + bytes(2041) + b"\x00NSR03\x01" + bytes(4096))
    other.write_bytes(b"QFI\xfb" + bytes(64 * 1024))
    assert (disc_format(str(iso)), disc_format(str(udf)), disc_format(str(other))) == ("iso9660", "udf", None)
    assert hash_file(str(iso), "sha256") == hashlib.sha256(iso.read_bytes()).hexdigest()


def multipart(boundary: str, parts: list[tuple[str, str | None, bytes]]) -> bytes:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


async def chunks_of(data: bytes, size: int = 1000):
    for i in range(0, len(data), size):
        yield data[i:i + size]


async def test_an_upload_is_written_as_it_arrives_with_fields_before_and_after_the_file(tmp_path):
    payload = os.urandom(50_000)
    body = multipart("XyZ", [("content", None, b"iso"), ("filename", "disc.iso", payload),
                             ("checksum", None, b"abc")])
    seen = {}

    def begin(fields, client_name):
        seen.update(fields=fields, name=client_name)
        return str(tmp_path / "upload")

    upload = await read_upload(chunks_of(body), "XyZ", "filename", begin, 1 << 20)
    assert upload.fields == {"content": "iso", "filename": "disc.iso", "checksum": "abc"}
    assert seen == {"fields": {"content": "iso", "filename": "disc.iso"}, "name": "disc.iso"}
    assert upload.size == len(payload) and (tmp_path / "upload").read_bytes() == payload


@pytest.mark.parametrize("parts, status, message", [
    ([("content", None, b"iso")], 400, "Parameter verification failed"),
    ([("filename", "a.iso", b"x"), ("filename", "b.iso", b"y")], 400, "Parameter verification failed"),
    ([("other", "a.iso", b"x")], 400, "Parameter verification failed"),
    ([("filename", "a.iso", bytes(2000))], 413, "request body too large - the limit is 1000 bytes"),
])
async def test_a_bad_upload_is_refused_and_leaves_no_file(tmp_path, parts, status, message):
    target = tmp_path / "upload"
    with pytest.raises(ApiError) as exc:
        await read_upload(chunks_of(multipart("b", parts), 100), "b", "filename", lambda f, n: str(target), 1000)
    assert (exc.value.status, exc.value.message) == (status, message)
    assert not target.exists()


async def test_a_body_cut_off_inside_the_file_leaves_no_file(tmp_path):
    body = multipart("b", [("filename", "a.iso", bytes(5000))])[:3000]
    target = tmp_path / "upload"
    with pytest.raises(ApiError, match="malformed multipart body"):
        await read_upload(chunks_of(body), "b", "filename", lambda f, n: str(target), 1 << 20)
    assert not target.exists()


class FakeNode:
    def __init__(self, name: str) -> None:
        self.name, self.machine = name, cluster()

    @contextmanager
    def read(self):
        yield self.machine.state


def test_the_node_view_follows_the_log_without_a_restart(tmp_path):
    node = FakeNode("n1")
    storages = NodeStorages(node, str(tmp_path / "data"))
    assert list(storages) == ["local"] and os.path.isdir(tmp_path / "data" / "storage" / "local" / "template" / "iso")
    assert storages.get("extra") is None
    run(node.machine, define("a", "extra", path=str(tmp_path / "extra"), content="iso,images", format="raw"))
    extra = storages["extra"]
    assert (extra.content, extra.default_format) == (("iso", "images"), "raw")
    assert sorted(os.listdir(tmp_path / "extra")) == ["images", "template"]
    run(node.machine, define("b", "extra", create=False, disable=1),
        define("c", "missing", path=str(tmp_path / "missing"), **{"create-base-path": 0}))
    assert list(storages) == ["local"]
    with pytest.raises(StorageError, match="storage 'extra' is disabled"):
        storages.get("extra")
    with pytest.raises(StorageError, match="unable to activate storage 'missing' - directory .* does not exist"):
        storages.get("missing")
    (tmp_path / "missing").mkdir()
    assert storages["missing"].path == str(tmp_path / "missing") and "missing" in list(storages)


def test_an_earlier_runs_half_written_files_are_removed_when_a_storage_is_first_used(tmp_path):
    local = tmp_path / "data" / "storage" / "local"
    local.mkdir(parents=True)
    for name in (".gpve-tmp-n1-" + "a" * 32, ".gpve-tmp-n1-x-" + "b" * 32, "keep.txt"):
        (local / name).write_text("x")
    NodeStorages(FakeNode("n1"), str(tmp_path / "data"))["local"]
    assert sorted(os.listdir(local)) == sorted([".gpve-tmp-n1-x-" + "b" * 32, "keep.txt", "images", "template",
                                                "snippets", "dump"])

