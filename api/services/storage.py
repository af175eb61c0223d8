"""Storages, for every interface: the cluster's definitions (`/storage`: Proxmox's storage.cfg, kept in the log by
engine/storage.py), what a node holds on them (`/nodes/{node}/storage/...`: status, content, volumes), uploads,
downloads and URL metadata.

Proxmox's sources: pve-storage `PVE/API2/Storage/Config.pm` (definitions), `Status.pm` (status, upload,
download-url), `Content.pm` (volumes), `PVE/Storage.pm` (`storage_info`, `volume_list`, `vdisk_alloc`); pve-manager
`PVE/API2/Nodes.pm` (`query_url_metadata`). Node requests run on the node named (the app forwards them there).
Errors: 400 (parameters, a disabled storage), 403, 404 (no such storage or volume), 409 (an id in use, a volume a
guest uses), 413 (an upload over its limit), 500 with Proxmox's message when a storage cannot be activated.
"""

from __future__ import annotations

import os
import re
import secrets
from urllib.parse import urlsplit

import httpx
import trio

from api.context import Ctx
from api.errors import ApiError, forbidden
from api.schema import Param, ParamErrors, check_params, split_list
from api.services import guest_access
from api.services.tasks import wait_task
from api.uploads import read_upload
from engine import storage as st
from engine.errors import Rejection, not_found
from engine.volumes import IMAGE_FILE, VolumeError, parse_volume
from hypervisor.storage import DirStorage, StorageError
from hypervisor.storage_files import (
    DOWNLOAD_CONTENT,
    UPLOAD_CONTENT,
    UPLOAD_LIMIT,
    FileRefused,
    disc_format,
    target_name,
)
from hypervisor.storages import activation, local_path

BOOLEAN_OPTIONS = ("shared", "disable", "create-base-path", "create-subdirs", "mkdir")
PRUNE_KEYS = ("keep-all", "keep-last", "keep-hourly", "keep-daily", "keep-weekly", "keep-monthly", "keep-yearly")
IMAGE_FORMATS = ("qcow2", "raw")  # what gpve's dir storage makes
URL_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


# ---- definitions -------------------------------------------------------------------------------
def _canonical_path(path: str) -> str:
    """Perl's `File::Spec->canonpath`, as DirPlugin applies it: no repeated or trailing slashes, no `/./`."""
    path = re.sub(r"/+", "/", path)
    path = re.sub(r"(?:/\.)+(?=/|$)", "", path) or "/"
    return path.rstrip("/") or "/"


def _prune_backups(value: str) -> str:
    """pve-storage `validate_prune_backups`: `keep-*=N` (N >= 0), `keep-all` alone; nothing kept means keep-all."""
    given: dict[str, int] = {}
    for item in split_list(value):
        key, _, number = item.partition("=")
        if key not in PRUNE_KEYS or not number.isdigit() or (key == "keep-all" and number not in ("0", "1")):
            raise ParamErrors({"prune-backups": f"invalid format - invalid value '{item}'"})
        given[key] = int(number)
    keep_all = given.pop("keep-all", 0)
    if not any(given.values()):
        return "keep-all=1"
    if keep_all:
        raise ParamErrors({"prune-backups": "keep-all cannot be set together with other options."})
    return ",".join(f"{k}={given[k]}" for k in PRUNE_KEYS if given.get(k))


def normalize(options: dict) -> dict:
    """Request options as the log keeps them: booleans 0/1, content and nodes sorted lists, the path canonical."""
    out = {}
    for key, value in options.items():
        if value is None:
            continue
        if key in BOOLEAN_OPTIONS:
            value = int(bool(value))
        elif key in ("content", "nodes"):
            value = ",".join(sorted(set(split_list(value))))
        elif key == "path":
            value = _canonical_path(str(value))
        elif key == "prune-backups":
            value = _prune_backups(str(value))
        out[key] = value
    return out


def _row(ctx: Ctx, storage: str, conf: dict, digest: str) -> dict:
    row = {**conf, "storage": storage, "digest": digest}
    if storage == st.LOCAL:
        row["path"] = local_path(ctx.node.spec.data_dir)
    return row


def definitions(ctx: Ctx, storage_type: str | None = None) -> list[dict]:
    """`GET /storage`: the definitions the caller may see (Datastore.Audit or .AllocateSpace on each)."""
    with ctx.node.read() as s:
        defs, digest = st.definitions(s), st.digest(s)
    return [_row(ctx, sid, conf, digest) for sid, conf in defs.items()
            if (storage_type is None or conf["type"] == storage_type)
            and _may_see(ctx, sid)]


def definition(ctx: Ctx, storage: str) -> dict:
    """`GET /storage/{storage}`: its options, `storage` and the `digest` a change may give."""
    with ctx.node.read() as s:
        conf, digest = st.definitions(s).get(storage), st.digest(s)
    if conf is None:
        raise not_found(f"storage '{storage}' does not exist")
    return _row(ctx, storage, conf, digest)


async def create(ctx: Ctx, storage: str, options: dict) -> dict:
    """`POST /storage`: as Proxmox, the storage is activated on this node first when it applies here (its directory
    made unless `create-base-path 0`), so that a path that cannot be used is refused before anything is written."""
    options = normalize({k: v for k, v in options.items() if not (k == "nodes" and not v)})
    with ctx.node.read() as s:
        if storage in st.definitions(s):
            raise ApiError(409, f"create storage failed: storage ID '{storage}' already defined")
    st.check_options(storage, options, True)  # the log's checks first: a refused create makes no directory
    if storage != st.LOCAL and st.enabled_on(options, ctx.node.name) and options.get("path"):
        kinds = st.contents({"content": options.get("content", st.DIR_DEFAULT_CONTENT)})
        try:
            DirStorage(storage, options["path"], tuple(kinds)).activate(**activation(options))
        except StorageError as exc:
            raise ApiError(500, f"create storage failed: {exc}") from None
    return await ctx.node.submit(st.SetStorage(request_id=ctx.command_id, ts=ctx.now, user=ctx.user, storage=storage,
                                               create=True, options=options))


async def update(ctx: Ctx, storage: str, options: dict, delete: list[str], digest: str | None) -> dict:
    """`PUT /storage/{storage}`: options set, `delete` dropped, guarded by `digest`."""
    return await ctx.node.submit(st.SetStorage(request_id=ctx.command_id, ts=ctx.now, user=ctx.user, storage=storage,
                                               options=normalize(options), delete=list(delete), digest=digest))


async def delete(ctx: Ctx, storage: str) -> None:
    """`DELETE /storage/{storage}`: the definition (its files stay), its ACLs and pool memberships."""
    await ctx.node.submit(st.DeleteStorage(request_id=ctx.command_id, ts=ctx.now, user=ctx.user, storage=storage))


# ---- a node's storages -------------------------------------------------------------------------
def _here(ctx: Ctx, node: str) -> None:
    if node != ctx.node.name:  # a member's requests were forwarded to it: this name is no member's
        raise not_found(f"no such cluster node '{node}'")


def _may_see(ctx: Ctx, storage: str) -> bool:
    return ctx.can("Datastore.Audit", f"/storage/{storage}") or ctx.can("Datastore.AllocateSpace",
                                                                         f"/storage/{storage}")


def active(ctx: Ctx, node: str, storage: str) -> DirStorage:
    """The storage, activated on this node: 404 if it is not defined, 400 if disabled or not on this node, 500 with
    Proxmox's message if it cannot be activated (its directory is missing)."""
    _here(ctx, node)
    with ctx.node.read() as s:
        st.check_enabled(s, storage, node)
    try:
        storages = ctx.rt.storages
        return storages.activate(storage) if hasattr(storages, "activate") else storages[storage]
    except (StorageError, KeyError) as exc:
        raise ApiError(500, str(exc).strip("'")) from None


def _status(ctx: Ctx, storage: str, conf: dict, formats: bool = False) -> dict:
    """One row of pve-storage's `storage_info`: usage measured (`statvfs`) only where the storage is active."""
    enabled = st.enabled_on(conf, ctx.node.name)
    row = {"storage": storage, "type": conf["type"], "content": ",".join(st.contents(conf)) or "none",
           "shared": int(bool(conf.get("shared"))), "enabled": int(enabled), "active": 0, "total": 0, "used": 0,
           "avail": 0}
    if formats:
        row["formats"] = {"supported": list(IMAGE_FORMATS), "default": conf.get("format") or "qcow2"}
    if enabled:
        try:
            usage = active(ctx, ctx.node.name, storage).usage()
            row.update(active=1, **usage)
        except (Rejection, OSError):
            pass
    return row


def node_storages(ctx: Ctx, node: str, content: list[str] | None = None, enabled: bool = False,
                  storage: str | None = None, target: str | None = None, formats: bool = False) -> list[dict]:
    """`GET /nodes/{node}/storage`: every definition (not only this node's: `enabled` 0 for those), filtered by
    `content` (any of them; enabled ones only), `enabled`, `storage`, and with `target` the shared storages both
    nodes have; `used_fraction` where the total is known."""
    _here(ctx, node)
    with ctx.node.read() as s:
        defs = st.definitions(s)
    if storage and storage not in defs:
        raise ParamErrors({"storage": "No such storage."})
    rows = []
    for sid, conf in defs.items():
        if (storage and sid != storage) or not _may_see(ctx, sid):
            continue
        if content and not (set(content) & set(st.contents(conf)) and st.enabled_on(conf, node)):
            continue
        if (enabled and conf.get("disable")) or (target and target != node and not (
                conf.get("shared") and st.on_node(conf, node) and st.on_node(conf, target))):
            continue
        row = _status(ctx, sid, conf, formats)
        if row["total"]:
            row["used_fraction"] = row["used"] / row["total"]
        rows.append(row)
    return rows


def status(ctx: Ctx, node: str, storage: str) -> dict:
    """`GET .../{storage}/status`."""
    _here(ctx, node)
    with ctx.node.read() as s:
        conf = st.definitions(s).get(storage)
    if conf is None:
        raise ParamErrors({"storage": "No such storage."})
    row = _status(ctx, storage, conf)
    del row["storage"]
    return row


def content(ctx: Ctx, node: str, storage: str, kind: str | None = None, vmid: int | None = None) -> list[dict]:
    """`GET .../{storage}/content`: the volumes of the storage's content types the caller may access (pve-storage's
    `check_volume_access` per volume)."""
    dir_storage = active(ctx, node, storage)
    with ctx.node.read() as s:
        kinds = [k for k in st.contents(st.definitions(s)[storage]) if kind is None or k == kind]
        held = guest_access.held_in(s, ctx.user)
    rows = []
    for row in dir_storage.list_volumes(kinds, vmid):
        try:
            guest_access.check_volume_access(held, ctx.user, None, row["volid"])
        except Rejection:
            continue
        rows.append(row)
    return rows


def _size_kib(size: str) -> int:
    m = re.fullmatch(r"(\d+)([MG]?)", size)
    if m is None:
        raise ParamErrors({"size": f"unable to parse size '{size}'"})
    return int(m.group(1)) * {"": 1, "M": 1024, "G": 1024 * 1024}[m.group(2)]


async def allocate(ctx: Ctx, node: str, storage: str, filename: str, size: str, vmid: int,
                   fmt: str | None = None) -> str:
    """`POST .../{storage}/content` (pve-storage `vdisk_alloc`): an empty image `vm-VMID-disk-N.FMT` of `size` KiB
    (`M`, `G` suffixes) for guest `vmid`; the name's extension gives the format. Answers its volume id."""
    kib = _size_kib(size)
    ext = re.search(r"\.(raw|qcow2|vmdk)$", filename)
    if ext and fmt and fmt != ext.group(1):
        raise ParamErrors({"format": f"different storage formats ({fmt} != {ext.group(1)})"})
    fmt = ext.group(1) if ext else fmt
    m = IMAGE_FILE.fullmatch(filename)
    if m is None or m.group(1) != "vm":
        raise ParamErrors({"filename": f"illegal name '{filename}' - should be 'vm-{vmid}-*'"})
    if int(m.group(2)) != vmid:
        raise ParamErrors({"filename": f"illegal name '{filename}' - should be 'vm-{vmid}-*'"})
    if fmt not in IMAGE_FORMATS:
        raise ParamErrors({"format": f"unsupported format '{fmt}'"})
    dir_storage = active(ctx, node, storage)
    if "images" not in dir_storage.content:
        raise ParamErrors({"storage": f"storage '{storage}' does not support vm images"})
    volid = f"{storage}:{vmid}/{filename}"
    path = dir_storage.volume_path(volid)
    if os.path.exists(path):
        raise ApiError(409, f"disk image '{path}' already exists")
    try:
        await dir_storage.alloc_as(volid, kib * 1024)
    except StorageError as exc:  # what qemu-img refuses (a size beyond its limits)
        raise ApiError(400, str(exc)) from None
    return volid


def _volid(storage: str | None, volume: str) -> tuple[str, str]:
    """Content.pm's `real_volume_id`: a full volume id (its storage must match `storage`), or a name on `storage`."""
    if ":" in volume:
        sid = volume.partition(":")[0]
        if storage and sid != storage:
            raise ParamErrors({"volume": f"storage ID mismatch ({sid} != {storage})"})
        storage = sid
    elif not storage:
        raise ParamErrors({"volume": "no storage specified - incomplete volume ID"})
    else:
        volume = f"{storage}:{volume}"
    try:
        parse_volume(volume)
    except VolumeError as exc:
        raise ParamErrors({"volume": str(exc)}) from None
    return volume, storage


def _readable(ctx: Ctx, volid: str) -> None:
    with ctx.node.read() as s:
        guest_access.check_volume_access(guest_access.held_in(s, ctx.user), ctx.user, None, volid)


def volume(ctx: Ctx, node: str, storage: str | None, name: str) -> dict:
    """`GET .../content/{volume}`: `path`, `size`, `used`, `format` (a backup's `notes`, `protected`)."""
    volid, storage = _volid(storage, name)
    _readable(ctx, volid)
    try:
        return active(ctx, node, storage).volume_attributes(volid)
    except StorageError as exc:
        raise ApiError(404, str(exc)) from None


def set_volume(ctx: Ctx, node: str, storage: str | None, name: str, notes: str | None = None,
               protected: int | None = None) -> None:
    """`PUT .../content/{volume}`: a backup's `notes` and `protected` (other volumes have neither: 400)."""
    volid, storage = _volid(storage, name)
    _readable(ctx, volid)
    dir_storage = active(ctx, node, storage)
    for attribute, value in (("notes", notes), ("protected", protected)):
        if value is not None:
            try:
                dir_storage.set_attribute(volid, attribute, value)
            except StorageError as exc:
                raise ApiError(400, str(exc)) from None


async def delete_volume(ctx: Ctx, node: str, storage: str | None, name: str, delay: int | None = None) -> str | None:
    """`DELETE .../content/{volume}`: an `imgdel` task (refused while a guest or snapshot uses the volume). A backup
    of a guest needs Datastore.AllocateSpace and VM.Backup on it, anything else Datastore.Allocate. With `delay`,
    waits that many seconds: None when the task ended well by then."""
    volid, storage = _volid(storage, name)
    volume_ = parse_volume(volid)
    needed = [("Datastore.Allocate", f"/storage/{storage}")]
    if volume_.vtype == "backup" and volume_.owner:
        needed = [("Datastore.AllocateSpace", f"/storage/{storage}"), ("VM.Backup", f"/vms/{volume_.owner}")]
    for privilege, path in needed:
        if not ctx.can(privilege, path):
            raise forbidden(privilege, path)
    _here(ctx, node)
    try:
        active(ctx, node, storage).volume_attributes(volid)  # a volume that is not there: 404 now, not a failed task
    except StorageError as exc:
        raise ApiError(404, str(exc)) from None
    owner = volume_.owner
    upid = await _start(ctx, node, "imgdel", storage, f"{owner}@{storage}" if owner else storage, {"volume": volid},
                        vmid=owner)
    if delay:
        with trio.move_on_after(delay):
            await wait_task(ctx, upid, timeout=delay + 1)  # this scope ends first: the UPID is answered then
            return None
    return upid


async def _start(ctx: Ctx, node: str, task_type: str, storage: str, task_id: str, intent: dict,
                 vmid: int | None = None) -> str:
    upid, starttime = ctx.node.new_upid(node, task_type, task_id, ctx.user)
    result = await ctx.node.submit(st.StartNodeTask(
        request_id=ctx.command_id, ts=ctx.now, user=ctx.user, node=node, upid=upid, starttime=starttime,
        type=task_type, storage=storage, task_id=task_id, vmid=vmid, intent=intent))
    return result["upid"]


def _file_target(ctx: Ctx, dir_storage: DirStorage, storage: str, params: dict, kinds: tuple[str, ...]) -> str:
    """The name a file is stored under, after Proxmox's checks (content type, the storage's content, the name)."""
    kind = params["content"]
    if kind not in kinds:
        raise ParamErrors({"content": f"upload content type '{kind}' not allowed"})
    if kind not in dir_storage.content:
        raise ApiError(400, f"storage '{storage}' does not support '{kind}' content")
    try:
        return target_name(kind, params["filename"])
    except FileRefused as exc:
        raise ParamErrors({exc.field: str(exc)}) from None


def _checksum(params: dict) -> dict:
    """`checksum` and `checksum-algorithm` come together (each `requires` the other)."""
    for a, b in (("checksum", "checksum-algorithm"), ("checksum-algorithm", "checksum")):
        if params.get(a) and not params.get(b):
            raise ParamErrors({a: f"parameter '{a}' requires parameter '{b}'"})
    return {k: params[k] for k in ("checksum", "checksum-algorithm") if params.get(k)}


async def upload(ctx: Ctx, node: str, storage: str, body, mimetype: str, boundary: str, params: list[Param],
                 path_params: dict) -> str:
    """`POST .../{storage}/upload`: the multipart body's file streamed into a temporary file in the storage (at
    most UPLOAD_LIMIT bytes), then an `imgcopy` task checks and stores it (`params`: the endpoint's declaration,
    which the fields are checked against). Answers the task's UPID. The fields may come before the file (then
    checked before it is taken in) or after it; whatever fails leaves no file."""
    if mimetype != "multipart/form-data":  # a form or JSON body holds no file
        raise ParamErrors({"filename": "no file uploaded"})
    dir_storage = active(ctx, node, storage)
    token = secrets.token_hex(16)
    tmp = dir_storage.temp_path(ctx.node.name, token)

    def begin(fields: dict[str, str], _client_name: str) -> str:
        given = check_params(params, {**fields, **path_params}, partial=True)
        if "content" in given:
            _file_target(ctx, dir_storage, storage, {"filename": fields.get("filename", ""), **given}, UPLOAD_CONTENT)
        return tmp

    received = await read_upload(body, boundary, "filename", begin, UPLOAD_LIMIT)
    try:
        fields = {k: v for k, v in received.fields.items() if k != "tmpfilename"}  # Proxmox ignores it from outside
        given = check_params(params, {**fields, **path_params})
        name = _file_target(ctx, dir_storage, storage, given, UPLOAD_CONTENT)
        if given["content"] == "iso" and name.lower().endswith(".iso") and disc_format(tmp) is None:
            raise ParamErrors({"filename": f"'{name}' is not an ISO 9660 or UDF image"})
        intent = {"filename": name, "content": given["content"], "tmpfile": token, "size": received.size,
                  **_checksum(given)}
        upid = await _start(ctx, node, "imgcopy", storage, "", intent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    with ctx.node.read() as s:
        mine = s.tasks.get(upid, {}).get("intent", {}).get("tmpfile") == token
    if not mine and os.path.exists(tmp):  # a retried request (the same X-Request-ID): its first upload is stored
        os.unlink(tmp)
    return upid


async def download(ctx: Ctx, node: str, storage: str, params: dict) -> str:
    """`POST .../{storage}/download-url`: a `download` task (http and https URLs only) whose task id is the file's
    name. Answers its UPID."""
    parts = urlsplit(params["url"])
    if parts.username or parts.password:  # the URL goes into the log and the task log: no secret may
        raise ParamErrors({"url": "credentials in the URL are not allowed (they would be recorded in the cluster's "
                                  "log and the task log)"})
    dir_storage = active(ctx, node, storage)
    name = _file_target(ctx, dir_storage, storage, params, DOWNLOAD_CONTENT)
    if params.get("compression") and params["content"] != "iso":
        raise ParamErrors({"compression": f"decompression not supported for {params['content']}"})
    intent = {"url": params["url"], "filename": name, "content": params["content"], **_checksum(params),
              "verify-certificates": int(params.get("verify-certificates", 1))}
    if params.get("compression"):
        intent["compression"] = params["compression"]
    return await _start(ctx, node, "download", storage, name, intent)


async def url_metadata(ctx: Ctx, node: str, url: str, verify: bool = True) -> dict:
    """`GET /nodes/{node}/query-url-metadata`: a HEAD request (redirects followed): `filename` from
    Content-Disposition or the URL's last path component, `size` (Content-Length), `mimetype` (without its
    parameters). 400 `invalid server response: '404 Not Found'` for any other answer than 200 (Proxmox: 500)."""
    _here(ctx, node)
    try:
        async with httpx.AsyncClient(verify=verify, follow_redirects=True, trust_env=False,
                                     timeout=URL_TIMEOUT) as client:
            response = await client.head(url, headers={"User-Agent": "Proxmox VE"})
    except (httpx.HTTPError, httpx.InvalidURL, ValueError, OSError) as exc:
        raise ApiError(400, f"invalid server response: '{exc or type(exc).__name__}'") from None
    if response.status_code != 200:
        raise ApiError(400, f"invalid server response: '{response.status_code} {response.reason_phrase}'")
    out: dict = {}
    disposition = response.headers.get("content-disposition", "")
    m = re.search(r'filename="([^"]*)"', disposition) or re.search(r"filename=([^;]*)", disposition) or \
        re.fullmatch(r"[^?]+/([^?/]*)(?:\?.*)?", url)
    if m and m.group(1):
        out["filename"] = m.group(1)
    size = response.headers.get("content-length", "")
    if size.isdigit() and int(size):
        out["size"] = int(size)
    mimetype = response.headers.get("content-type", "").split(";")[0].strip()
    if mimetype:
        out["mimetype"] = mimetype
    return out
