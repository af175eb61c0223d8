"""Storages through the API of real nodes: definitions in the log, a node's status and content, volumes, uploads
with proxmoxer (the test guest as an ISO, booted from its CD-ROM), downloads from a loopback HTTP server, and who
may do what."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import os
import re
import threading

import pytest
import requests
from proxmoxer import ProxmoxAPI, ResourceException
from proxmoxer.tools import Tasks

from tests.guest import build_guest, build_guest_iso, iso_missing, qemu_missing, wait_serial
from tests.harness import Cluster
from tests.test_guests import done, ok

pytestmark = pytest.mark.slow
NEEDS_QEMU = pytest.mark.skipif(qemu_missing() is not None, reason=qemu_missing() or "")
DISC = bytes(16 * 2048) + b"\x01CD001\x01" + bytes(2048 - 7)  # the smallest thing with an ISO 9660 descriptor


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    cluster = Cluster(str(tmp_path_factory.mktemp("storage")), 1).start()
    yield cluster.nodes[0]
    px = cluster.nodes[0].api()
    for guest in px.nodes("n1").qemu.get():
        if guest["status"] == "running":
            px.nodes("n1").qemu(guest["vmid"]).status.stop.post()
    cluster.stop()


def refused(call, *args, **params) -> ResourceException:
    with pytest.raises(ResourceException) as info:
        call(*args, **params)
    return info.value


def disc(name: str, size: int = 0) -> io.BytesIO:
    f = io.BytesIO(DISC + bytes(size))
    f.name = name
    return f


def files_under(path: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs)


def task_log(px, upid: str) -> list[str]:
    return [line["t"] for line in px.nodes("n1").tasks(upid).log.get(limit=1000)]


def test_a_refused_storage_definition_writes_nothing(node, tmp_path):
    px = node.api()
    err = refused(px.storage.post, storage="rz1", type="dir", path=str(tmp_path / "rz1"), content="none,iso")
    assert err.status_code == 400 and not os.path.exists(tmp_path / "rz1")


def test_local_is_defined_from_the_start_and_definitions_follow_proxmox(node, tmp_path):
    px = node.api()
    [local] = px.storage.get()
    assert local == {"storage": "local", "type": "dir", "content": "backup,images,iso,snippets,vztmpl",
                     "prune-backups": "keep-all=1", "path": os.path.join(node.data_dir, "storage", "local"),
                     "digest": local["digest"]}
    path = str(tmp_path / "extra")
    assert px.storage.post(storage="extra", type="dir", path=path + "//", content="iso,images,iso") == {
        "storage": "extra", "type": "dir"}
    extra = px.storage("extra").get()
    assert (extra["path"], extra["content"]) == (path, "images,iso")
    assert sorted(os.listdir(path)) == ["images", "template"] and os.listdir(os.path.join(path, "template")) == ["iso"]
    again = refused(px.storage.post, storage="extra", type="dir", path=path)
    assert (again.status_code, again.content) == (409, "create storage failed: storage ID 'extra' already defined")
    for params, field, message in [
        ({"content": "iso,floppy"}, "content", "invalid format - invalid content type 'floppy'"),
        ({"type": "nfs"}, "type", "value 'nfs' does not have a value in the enumeration 'dir'"),
        ({"path": "relative"}, "path", "value does not match the regex pattern"),
        ({"prune-backups": "keep-all=1,keep-last=2"}, "prune-backups",
         "keep-all cannot be set together with other options."),
    ]:
        bad = refused(px.storage.post, **{"storage": "bad", "type": "dir", "path": path + "2", **params})
        assert (bad.status_code, bad.errors) == (400, {field: message})
    gone = str(tmp_path / "not-there")
    missing = refused(px.storage.post, storage="gone", type="dir", path=gone, **{"create-base-path": 0})
    assert (missing.status_code, missing.content) == (500, f"create storage failed: unable to activate storage 'gone' "
                                                           f"- directory '{gone}' does not exist or is unreachable")
    assert [s["storage"] for s in px.storage.get()] == ["extra", "local"] and not os.path.exists(gone)
    digest = px.storage("extra").get()["digest"]
    px.storage("local").put(content="iso,images")  # the digest changes under the caller
    stale = refused(px.storage("extra").put, digest=digest, shared=1)
    assert stale.content == "detected modified configuration - file changed by other user? Try again."
    px.storage("extra").put(digest=px.storage("extra").get()["digest"], shared=1, nodes="n1")
    assert px.storage("extra").get()["shared"] == 1
    fixed = refused(px.storage("extra").put, delete="path")
    assert fixed.content == "update storage failed: unable to delete fixed option 'path'"
    assert refused(px.storage("extra").put, path="/srv").errors == {
        "path": "property is not defined in schema and the schema does not allow additional properties"}
    px.storage("local").delete()  # as in Proxmox, `local` comes back with its defaults
    assert px.storage("local").get()["content"] == "backup,images,iso,snippets,vztmpl"
    px.storage("extra").delete()
    assert [s["storage"] for s in px.storage.get()] == ["local"] and os.path.isdir(path)  # the files stay


@NEEDS_QEMU
def test_a_storage_defined_later_holds_guest_disks_at_once(node, tmp_path):
    px = node.api()
    path = str(tmp_path / "fast")
    px.storage.post(storage="fast", type="dir", path=path, content="images", format="raw")
    vmid = int(px.cluster.nextid.get())
    ok(px, px.nodes("n1").qemu.create(vmid=vmid, memory=64, scsi0="fast:1"))
    assert px.nodes("n1").qemu(vmid).config.get()["scsi0"] == f"fast:{vmid}/vm-{vmid}-disk-0.raw,size=1G"
    assert files_under(path) == [f"images/{vmid}/vm-{vmid}-disk-0.raw"]
    [row] = px.nodes("n1").storage("fast").content.get(vmid=vmid)
    assert (row["volid"], row["format"], row["size"], row["content"]) == (
        f"fast:{vmid}/vm-{vmid}-disk-0.raw", "raw", 1 << 30, "images")
    status = px.nodes("n1").storage("fast").status.get()
    fs = os.statvfs(path)
    assert (status["type"], status["content"], status["active"], status["enabled"], status["shared"]) == (
        "dir", "images", 1, 1, 0)
    assert status["total"] == fs.f_blocks * fs.f_frsize and abs(status["avail"] - fs.f_bavail * fs.f_frsize) < 1 << 26
    px.storage("fast").put(disable=1)
    [row] = px.nodes("n1").storage.get(storage="fast")
    assert (row["enabled"], row["active"], row["total"]) == (0, 0, 0)
    assert [r["storage"] for r in px.nodes("n1").storage.get(enabled=1, content="images")] == ["local"]
    assert refused(px.nodes("n1").storage("fast").content.get).content == "storage 'fast' is disabled"
    other = int(px.cluster.nextid.get())
    failed = done(px, px.nodes("n1").qemu.create(vmid=other, memory=64, scsi0="fast:1"))
    assert failed["exitstatus"] == f"unable to create VM {other} - storage 'fast' is disabled"
    px.storage("fast").put(delete="disable", nodes="n2")
    assert px.nodes("n1").storage.get(storage="fast")[0]["enabled"] == 0
    px.storage("fast").put(delete="nodes")
    assert px.nodes("n1").storage.get(storage="fast")[0]["active"] == 1
    assert refused(px.nodes("n1").storage.get, storage="nope").errors == {"storage": "No such storage."}


@NEEDS_QEMU
def test_volumes_are_allocated_read_and_deleted_unless_a_guest_or_snapshot_uses_them(node):
    px = node.api()
    vmid = int(px.cluster.nextid.get())
    ok(px, px.nodes("n1").qemu.create(vmid=vmid, memory=64))
    content = px.nodes("n1").storage("local").content
    volid = content.post(filename=f"vm-{vmid}-disk-7.qcow2", size="1M", vmid=vmid)
    assert volid == f"local:{vmid}/vm-{vmid}-disk-7.qcow2"
    info = content(volid).get()
    images = os.path.join(node.data_dir, "storage", "local", "images", str(vmid))
    assert (info["size"], info["format"], info["path"]) == (1 << 20, "qcow2", f"{images}/vm-{vmid}-disk-7.qcow2")
    assert content(f"{vmid}/vm-{vmid}-disk-7.qcow2").get() == info  # a name on the storage of the path
    assert refused(content.post, filename=f"vm-{vmid + 1}-disk-0.raw", size="1", vmid=vmid).errors == {
        "filename": f"illegal name 'vm-{vmid + 1}-disk-0.raw' - should be 'vm-{vmid}-*'"}
    assert refused(content(volid).put, notes="hi").content == "only backups can have notes"
    assert refused(content("other:iso/x.iso").get).errors == {"volume": "storage ID mismatch (other != local)"}
    # another guest uses it: its own config, then (detached: not its own image, so not kept as unusedN) a snapshot
    other = int(px.cluster.nextid.get())
    ok(px, px.nodes("n1").qemu.create(vmid=other, memory=64, scsi1=volid))
    in_use = refused(content(volid).delete)
    assert (in_use.status_code, in_use.content) == (
        409, f"unable to delete '{volid}' - volume is still in use by VM {other} (scsi1)")
    ok(px, px.nodes("n1").qemu(other).snapshot.post(snapname="s1"))
    ok(px, px.nodes("n1").qemu(other).config.post(delete="scsi1"))
    assert refused(content(volid).delete).content == \
        f"unable to delete '{volid}' - volume is still in use by VM {other} (snapshot 's1')"
    ok(px, px.nodes("n1").qemu(other).snapshot("s1").delete())
    upid = content(volid).delete()
    assert re.fullmatch(rf"UPID:n1:[0-9A-F]{{8}}:[0-9A-F]{{8}}:[0-9A-F]{{8}}:imgdel:{vmid}@local:root@pam:", upid)
    ok(px, upid)
    assert task_log(px, upid) == [f"Removed volume '{volid}'", "TASK OK"]
    assert not os.path.exists(info["path"]) and volid not in [r["volid"] for r in content.get()]
    # a backup's notes and protection (the files beside it, as Proxmox keeps them)
    dump = os.path.join(node.data_dir, "storage", "local", "dump")
    name = f"vzdump-qemu-{vmid}-2024_01_01-00_00_00.vma.zst"
    with open(os.path.join(dump, name), "wb") as f:
        f.write(b"backup")
    backup = f"local:backup/{name}"
    content(backup).put(notes="nightly\nsecond line", protected=1)
    row = next(r for r in content.get(content="backup") if r["volid"] == backup)
    assert (row["notes"], row["protected"], row["vmid"], row["format"]) == ("nightly", 1, vmid, "vma.zst")
    failed = done(px, content(backup).delete())
    assert failed["exitstatus"] == f"cannot remove protected archive '{os.path.join(dump, name)}'"
    content(backup).put(protected=0)
    assert content(backup).delete(delay=10) is None  # ended within the delay
    assert os.listdir(dump) == []


@NEEDS_QEMU
@pytest.mark.skipif(iso_missing() is not None, reason=iso_missing() or "")
def test_an_iso_uploaded_with_proxmoxer_boots_a_guest_from_its_cdrom(node, tmp_path):
    px = node.api()
    iso = build_guest_iso(build_guest(), str(tmp_path / "gpve-guest.iso"))
    with open(iso, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    with open(iso, "rb") as f:
        upid = px.nodes("n1").storage("local").upload.post(content="iso", filename=f, checksum=digest,
                                                           **{"checksum-algorithm": "sha256"})
    ok(px, upid)
    log = task_log(px, upid)
    assert "calculating checksum...OK, checksum verified" in log and log[-2:] == [
        "finished file import successfully", "TASK OK"]
    [row] = px.nodes("n1").storage("local").content.get(content="iso")
    assert (row["volid"], row["format"], row["size"]) == ("local:iso/gpve-guest.iso", "iso", os.path.getsize(iso))
    vmid = int(px.cluster.nextid.get())
    ok(px, px.nodes("n1").qemu.create(vmid=vmid, memory=256, kvm=0, serial0="socket",
                                      ide2="local:iso/gpve-guest.iso,media=cdrom", boot="order=ide2"))
    ok(px, px.nodes("n1").qemu(vmid).status.start.post())
    wait_serial(node, vmid, r"GPVE-GUEST-READY", timeout=120)  # isolinux on the CD-ROM loaded kernel and initramfs
    assert refused(px.nodes("n1").storage("local").content("local:iso/gpve-guest.iso").delete).content == \
        f"unable to delete 'local:iso/gpve-guest.iso' - volume is still in use by VM {vmid} (ide2)"
    ok(px, px.nodes("n1").qemu(vmid).status.stop.post())


def test_uploads_that_fail_leave_no_file(node):
    px = node.api()
    root = os.path.join(node.data_dir, "storage", "local")
    before = files_under(root)
    upload = px.nodes("n1").storage("local").upload
    failed = done(px, upload.post(content="iso", filename=disc("bad-sum.iso"), checksum="00" * 32,
                                  **{"checksum-algorithm": "sha256"}))
    got = hashlib.sha256(DISC).hexdigest()
    assert failed["exitstatus"] == f"checksum mismatch: got '{got}' != expect '{'00' * 32}'"
    session = node.session()  # proxmoxer sends a file's base name only: a path goes as the client writes it
    for name, content, field, message in [
        ("../../../etc/evil.iso", "iso", "filename",
         "invalid file name '../../../etc/evil.iso' - a path is not allowed"),
        ("notes.txt", "iso", "filename", "wrong file extension"),
        ("plain.iso", "iso", "filename", "'plain.iso' is not an ISO 9660 or UDF image"),
        ("x.iso", "rootdir", "content", "value 'rootdir' does not have a value in the enumeration "
                                        "'iso, vztmpl, import, snippets'"),
    ]:
        data = DISC if name != "plain.iso" else b"not a disc" * 5000
        answer = session.post(node.url + "/nodes/n1/storage/local/upload", data={"content": content},
                              files={"filename": (name, data, "application/octet-stream")}, timeout=30)
        assert (answer.status_code, answer.json()["errors"]) == (400, {field: message}), name
    assert files_under(root) == before  # no file, no temporary file
    assert not os.path.exists(os.path.join(os.path.dirname(node.data_dir), "etc"))
    assert refused(upload.post, content="iso", filename="not a file").errors == {"filename": "no file uploaded"}
    no_sum = refused(upload.post, content="iso", filename=disc("x.iso"), checksum="ab")
    assert no_sum.errors == {"checksum": "parameter 'checksum' requires parameter 'checksum-algorithm'"}
    assert files_under(root) == before


def test_an_upload_is_streamed_to_disk_never_held_in_memory(node):
    """300 MiB through the API; the node's peak memory grows far less than that."""
    px = node.api()
    ticket = px.get_tokens()
    boundary = "gpve-stream-test"
    size = 300 << 20

    def body():
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"content\"\r\n\r\niso\r\n--{boundary}\r\n"
               "Content-Disposition: form-data; name=\"filename\"; filename=\"big.iso\"\r\n"
               "Content-Type: application/octet-stream\r\n\r\n").encode()
        yield DISC
        chunk = bytes(1 << 20)
        for _ in range(size >> 20):
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    def peak() -> int:
        with open(f"/proc/{node.proc.pid}/status") as f:
            return int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1)) << 10

    start = peak()
    answer = requests.post(node.url + "/nodes/n1/storage/local/upload", data=body(), verify=False, timeout=300,
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}",
                                    "CSRFPreventionToken": ticket[1]}, cookies={"PVEAuthCookie": ticket[0]})
    assert answer.status_code == 200, answer.text
    ok(px, answer.json()["data"])
    assert peak() - start < 64 << 20
    [row] = [r for r in px.nodes("n1").storage("local").content.get(content="iso") if r["volid"].endswith("big.iso")]
    assert row["size"] == len(DISC) + size
    px.nodes("n1").storage("local").content(row["volid"]).delete(delay=30)


def test_snippets_and_templates_are_uploaded_to_their_directories(node):
    px = node.api()
    snippet = io.BytesIO(b"#cloud-config\nhostname: from-upload\n")
    snippet.name = "user data.yaml"
    ok(px, px.nodes("n1").storage("local").upload.post(content="snippets", filename=snippet))
    path = os.path.join(node.data_dir, "storage", "local", "snippets", "user_data.yaml")
    with open(path, "rb") as f:
        assert f.read() == b"#cloud-config\nhostname: from-upload\n"
    [row] = px.nodes("n1").storage("local").content.get(content="snippets")
    assert (row["volid"], row["format"]) == ("local:snippets/user_data.yaml", "snippet")
    unsupported = refused(px.nodes("n1").storage("local").upload.post, content="import", filename=disc("d.raw"))
    assert (unsupported.status_code, unsupported.content) == (400, "storage 'local' does not support 'import' content")
    # a retried upload (the same X-Request-ID) answers the first one's task and leaves no second file
    session, root = node.session(), os.path.join(node.data_dir, "storage", "local")
    before = files_under(root)
    upids = [session.post(node.url + "/nodes/n1/storage/local/upload", data={"content": "snippets"},
                          files={"filename": ("retried.yaml", b"a: 1\n")}, headers={"X-Request-ID": "upload-1"},
                          timeout=30).json()["data"] for _ in range(2)]
    assert upids[0] == upids[1]
    ok(px, upids[0])
    assert files_under(root) == sorted([*before, "snippets/retried.yaml"])


class Files(http.server.SimpleHTTPRequestHandler):
    extensions_map = {".iso": "application/x-iso9660-image", ".gz": "application/gzip"}

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """A loopback HTTP server of a directory: (base URL, directory)."""
    root = tmp_path_factory.mktemp("web")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: Files(*a, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()


def test_download_url_fetches_with_progress_and_verifies_the_checksum(node, web):
    base, root = web
    px = node.api()
    data = DISC + os.urandom(6 << 20)
    (root / "remote.iso").write_bytes(data)
    (root / "packed.iso.gz").write_bytes(gzip.compress(data))
    assert px.nodes("n1")("query-url-metadata").get(url=f"{base}/remote.iso?x=1") == {
        "filename": "remote.iso", "size": len(data), "mimetype": "application/x-iso9660-image"}
    assert refused(px.nodes("n1")("query-url-metadata").get, url=f"{base}/nothing.iso").content == \
        "invalid server response: '404 File not found'"
    download = px.nodes("n1").storage("local")("download-url").post
    digest = hashlib.sha256(data).hexdigest()
    secret = base.replace("http://", "http://alice:S3cretPassw0rd@")
    err = refused(download, url=f"{secret}/remote.iso", filename="creds.iso", content="iso")
    assert err.status_code == 400 and "credentials" in err.errors["url"]  # never into the log, the task log
    err = refused(px.nodes("n1").storage("local").content("local:iso/not-there.iso").delete)
    assert err.status_code == 404  # at once, not a task that fails
    upid = download(url=f"{base}/remote.iso", filename="fetched.iso", content="iso", checksum=digest,
                    **{"checksum-algorithm": "sha256"})
    assert ":download:fetched.iso:root@pam:" in upid
    ok(px, upid)
    log = task_log(px, upid)
    dest = os.path.join(node.data_dir, "storage", "local", "template", "iso", "fetched.iso")
    progress = [line for line in log if line.startswith("downloaded ")]
    assert log[0] == f"downloading {base}/remote.iso to {dest}" and len(progress) >= 3
    assert progress[-1].startswith("downloaded 6.0 MiB of 6.0 MiB (100%)")
    assert "calculating checksum...OK, checksum verified" in log
    assert log[-2:] == [f"download of '{base}/remote.iso' to '{dest}' finished", "TASK OK"]
    with open(dest, "rb") as f:
        assert f.read() == data
    again = done(px, download(url=f"{base}/remote.iso", filename="fetched.iso", content="iso"))
    assert again["exitstatus"] == f"refusing to override existing file '{dest}'"
    ok(px, download(url=f"{base}/packed.iso.gz", filename="unpacked.iso", content="iso", compression="gz"))
    with open(os.path.join(os.path.dirname(dest), "unpacked.iso"), "rb") as f:
        assert f.read() == data
    before = files_under(os.path.join(node.data_dir, "storage", "local"))
    wrong = done(px, download(url=f"{base}/remote.iso", filename="wrong.iso", content="iso", checksum="0" * 64,
                              **{"checksum-algorithm": "sha256"}))
    assert wrong["exitstatus"] == f"checksum mismatch: got '{digest}' != expect '{'0' * 64}'"
    missing = done(px, download(url=f"{base}/nothing.iso", filename="nothing.iso", content="iso"))
    assert missing["exitstatus"] == "download failed - 404 File not found"
    assert files_under(os.path.join(node.data_dir, "storage", "local")) == before  # nothing left behind
    assert refused(download, url="ftp://127.0.0.1/x.iso", filename="x.iso", content="iso").errors == {
        "url": "value does not match the regex pattern"}


def test_storage_privileges_are_proxmoxs(node, web, tmp_path):
    base, root = web
    (root / "small.iso").write_bytes(DISC)
    px = node.api()
    px.storage.post(storage="shop", type="dir", path=str(tmp_path / "shop"), content="iso")
    px.access.users.post(userid="stella@pve", password="stella-secret")
    stella = ProxmoxAPI("127.0.0.1", port=node.api_port, user="stella@pve", password="stella-secret",
                        verify_ssl=False)
    assert stella.storage.get() == [] and stella.nodes("n1").storage.get() == []
    px.access.acl.put(path="/storage/shop", roles="PVEDatastoreUser", users="stella@pve")
    assert [s["storage"] for s in stella.nodes("n1").storage.get()] == ["shop"]
    assert refused(stella.storage("shop").get).content == \
        "Permission denied - missing 'Datastore.Allocate' on '/storage/shop'"
    assert refused(stella.nodes("n1").storage("shop").upload.post, content="iso", filename=disc("s.iso")).content \
        == "Permission denied - missing 'Datastore.AllocateTemplate' on '/storage/shop'"
    px.pools.post(poolid="media")
    px.pools("media").put(storage="shop")
    px.access.acl.put(path="/pool/media", roles="PVEDatastoreAdmin", users="stella@pve")  # the pool's roles reach it
    ok(px, stella.nodes("n1").storage("shop").upload.post(content="iso", filename=disc("s.iso")))
    denied = refused(stella.nodes("n1").storage("shop")("download-url").post, url=f"{base}/small.iso",
                     filename="d.iso", content="iso")
    assert denied.content == "Permission denied - missing 'Sys.AccessNetwork' on '/nodes/n1'"
    px.access.acl.put(path="/nodes/n1", roles="PVESysAdmin", users="stella@pve")
    ok(px, stella.nodes("n1").storage("shop")("download-url").post(url=f"{base}/small.iso", filename="d.iso",
                                                                   content="iso"))
    assert refused(stella.storage("shop").delete).content == "Permission denied - missing 'Datastore.Allocate' on " \
                                                             "'/storage'"
    px.storage("shop").delete()
    assert px.pools("media").get()["members"] == [] and not [a for a in px.access.acl.get()
                                                             if a["path"] == "/storage/shop"]


def test_an_upload_to_another_member_is_streamed_through_the_node_asked(tmp_path):
    cluster = Cluster(str(tmp_path), 2).start()
    try:
        n1, n2 = cluster.nodes
        px = n1.api()
        px.storage.post(storage="only2", type="dir", path=str(tmp_path / "only2"), content="iso", nodes="n2")
        rows = {r["storage"]: r for r in px.nodes("n1").storage.get()}
        assert rows["only2"]["enabled"] == 0 and not os.path.exists(tmp_path / "only2")  # made on n2 when used
        assert refused(px.nodes("n1").storage("only2").upload.post, content="iso", filename=disc("x.iso")).content \
            == "storage 'only2' is not available on node 'n1'"
        upid = px.nodes("n2").storage("only2").upload.post(content="iso", filename=disc("x.iso", 4 << 20))
        assert upid.startswith("UPID:n2:")
        assert Tasks.blocking_status(px, upid, timeout=60)["exitstatus"] == "OK"
        assert files_under(str(tmp_path / "only2")) == ["template/iso/x.iso"]
        assert [r["volid"] for r in px.nodes("n2").storage("only2").content.get()] == ["only2:iso/x.iso"]
    finally:
        cluster.stop()
