"""/nodes/{node}/storage (a node's storages: status, content, volumes, upload, download), query-url-metadata and
/cluster/log. The rules are api/services/storage.py's; Proxmox's pve-storage `PVE/API2/Storage/Status.pm` and
`Content.pm`, pve-manager `PVE/API2/Nodes.pm`."""

from __future__ import annotations

import dataclasses

from api.context import Ctx
from api.registry import API
from api.returns import BOOL, INT, NUM, STR, array, obj
from api.schema import NODE, UPID_RETURN, VMID, Param, Permission, split_list
from api.services import storage as svc
from hypervisor.storage_files import CHECKSUM_ALGORITHMS, DECOMPRESSORS, DOWNLOAD_CONTENT, UPLOAD_CONTENT

STORAGE = Param("storage", optional=False, format="pve-storage-id", location="path", description="The storage "
                "identifier.")
VOLUME = Param("volume", optional=False, location="path", description="Volume identifier (a volume id, or a name on "
               "'storage').")
STORAGE_OPTIONAL = Param("storage", format="pve-storage-id", description="The storage identifier.")
AUDIT = Permission(("Datastore.Audit", "Datastore.AllocateSpace"), "/storage/{storage}")
CONTENT = ("images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import")
USAGE = {"total": INT, "used": INT, "avail": INT}
STATUS = {"type": STR, "content": STR, "enabled": BOOL, "active": BOOL, "shared": BOOL, **USAGE}
FORMATS = {"formats": obj({"supported": array(STR), "default": STR})}
VOLUME_ROW = obj({"volid": STR, "content": STR, "format": STR, "size": INT},
                 {"ctime": INT, "vmid": INT, "used": INT, "parent": STR, "notes": STR, "protected": BOOL})
URL = Param("url", optional=False, pattern=r"https?://.*", description="The URL.")
# Proxmox: Sys.Audit and Sys.Modify on / (both), or Sys.AccessNetwork on the node
NETWORK = Permission("Sys.AccessNetwork", "/nodes/{node}",
                     alternative=Permission("Sys.Modify", "/", also=Permission("Sys.Audit", "/")))
VERIFY = Param("verify-certificates", "boolean", default=1, description="If false, no TLS certificates are verified.")
FILE_PARAMS = [
    Param("filename", optional=False, max_length=255, description="The name of the file to create (normalized)."),
    Param("checksum", description="The expected checksum of the file."),
    Param("checksum-algorithm", enum=CHECKSUM_ALGORITHMS, description="The checksum's algorithm."),
]
UPLOAD_PARAMS = [NODE, STORAGE, Param("content", optional=False, enum=UPLOAD_CONTENT, description="Content type."),
                 *FILE_PARAMS,
                 Param("tmpfilename", pattern=r"/var/tmp/pveupload-[0-9a-f]+",
                       description="Proxmox's REST handler sets it; ignored when given from outside.")]


@API.endpoint("GET", "/nodes/{node}/storage",
              params=[NODE, Param("content", format="pve-storage-content-list"), Param("enabled", "boolean", default=0),
                      Param("format", "boolean", default=0), STORAGE_OPTIONAL, Param("target", format="pve-node")],
              permission=Permission(check="all", description="Only storages the caller holds Datastore.Audit or "
                                                              "Datastore.AllocateSpace on are listed."),
              returns=array(obj({"storage": STR, **STATUS}, {"used_fraction": NUM, **FORMATS})))
async def list_storage(ctx: Ctx, p: dict) -> list:
    """The status of every storage (`enabled` 0 where a storage is disabled or not on this node), `total`, `used`
    and `avail` measured where it is active; filters `content`, `enabled`, `storage`, `target`."""
    return svc.node_storages(ctx, p["node"], split_list(p.get("content")) or None, bool(p.get("enabled")),
                             p.get("storage"), p.get("target"), bool(p.get("format")))


@API.endpoint("GET", "/nodes/{node}/storage/{storage}", params=[NODE, STORAGE], permission=AUDIT,
              returns=array(obj({"subdir": STR})))
async def storage_index(ctx: Ctx, p: dict) -> list:
    """What there is under a storage."""
    return [{"subdir": s} for s in ("content", "download-url", "status", "upload")]


@API.endpoint("GET", "/nodes/{node}/storage/{storage}/status", params=[NODE, STORAGE], permission=AUDIT,
              returns=obj(STATUS))
async def storage_status(ctx: Ctx, p: dict) -> dict:
    """A storage's status: `total`, `used`, `avail` (statvfs of its directory), `active`, `enabled`, `shared`,
    `content`, `type`."""
    return svc.status(ctx, p["node"], p["storage"])


@API.endpoint("GET", "/nodes/{node}/storage/{storage}/content",
              params=[NODE, STORAGE, Param("content", enum=CONTENT, description="Only list content of this type."),
                      dataclasses.replace(VMID, optional=True, description="Only list this guest's images and "
                                                                           "backups.")],
              paged=True, permission=AUDIT, returns=array(VOLUME_ROW))
async def list_content(ctx: Ctx, p: dict) -> list:
    """The storage's volumes the caller may access (`content` and `vmid` filters)."""
    return svc.content(ctx, p["node"], p["storage"], p.get("content"), p.get("vmid"))


@API.endpoint("POST", "/nodes/{node}/storage/{storage}/content",
              params=[NODE, STORAGE, Param("filename", optional=False, description="The name of the file to create."),
                      Param("size", optional=False, pattern=r"\d+[MG]?",
                            description="Size in KiB (suffixes M and G: MiB, GiB)."),
                      VMID, Param("format", enum=("raw", "qcow2", "subvol", "vmdk"))],
              permission=Permission("Datastore.AllocateSpace", "/storage/{storage}"),
              returns={"type": "string", "description": "The volume id."})
async def allocate(ctx: Ctx, p: dict) -> str:
    """Allocate an empty disk image for a guest (`vm-VMID-disk-N.FORMAT`)."""
    return await svc.allocate(ctx, p["node"], p["storage"], p["filename"], p["size"], p["vmid"], p.get("format"))


@API.endpoint("GET", "/nodes/{node}/storage/{storage}/content/{volume}", params=[NODE, STORAGE, VOLUME],
              permission=Permission(check="all", description="Read access to the volume (pve-storage's "
                                                              "check_volume_access)."),
              returns=obj({"path": STR, "size": INT, "used": INT, "format": STR}, {"notes": STR, "protected": BOOL}))
async def volume_info(ctx: Ctx, p: dict) -> dict:
    """A volume's path, size, used space and format (a backup's notes and protection)."""
    return svc.volume(ctx, p["node"], p["storage"], p["volume"])


@API.endpoint("PUT", "/nodes/{node}/storage/{storage}/content/{volume}",
              params=[NODE, STORAGE, VOLUME, Param("notes", description="The new notes."),
                      Param("protected", "boolean", description="Protection status (backups only).")],
              permission=Permission(check="all", description="Read access to the volume."))
async def volume_update(ctx: Ctx, p: dict) -> None:
    """A backup's notes and protection (other volumes have neither)."""
    svc.set_volume(ctx, p["node"], p["storage"], p["volume"], p.get("notes"), p.get("protected"))


@API.endpoint("DELETE", "/nodes/{node}/storage/{storage}/content/{volume}",
              params=[NODE, STORAGE, VOLUME, Param("delay", "integer", minimum=1, maximum=30,
                                                   description="Seconds to wait for the task: null if it ended.")],
              permission=Permission(check="all", description="Datastore.Allocate on the storage (a guest's backup: "
                                                              "Datastore.AllocateSpace and VM.Backup on the guest)."),
              returns={"type": ["string", "null"], "description": "The task's UPID (null if it ended within delay)."})
async def volume_delete(ctx: Ctx, p: dict) -> str | None:
    """Delete a volume (a task, `imgdel`); one a guest or snapshot uses is refused."""
    return await svc.delete_volume(ctx, p["node"], p["storage"], p["volume"], p.get("delay"))


@API.endpoint("POST", "/nodes/{node}/storage/{storage}/upload", params=UPLOAD_PARAMS, upload="filename",
              permission=Permission("Datastore.AllocateTemplate", "/storage/{storage}"), returns=UPID_RETURN)
async def upload(ctx: Ctx, p: dict) -> str:
    """Upload an ISO image, container template, disk image to import or snippet (multipart, the file in field
    `filename`), streamed into the storage; an `imgcopy` task verifies the checksum and the file and stores it."""
    call = ctx.request
    return await svc.upload(ctx, p["node"], p["storage"], call.body, call.mimetype,
                            call.mimetype_params.get("boundary", ""), UPLOAD_PARAMS,
                            {"node": p["node"], "storage": p["storage"]})


@API.endpoint("POST", "/nodes/{node}/storage/{storage}/download-url",
              params=[NODE, STORAGE, URL, Param("content", optional=False, enum=DOWNLOAD_CONTENT,
                                                description="Content type."),
                      *FILE_PARAMS, Param("compression", enum=tuple(DECOMPRESSORS),
                                          description="Decompress the download (ISO images)."), VERIFY],
              permission=Permission("Datastore.AllocateTemplate", "/storage/{storage}", also=NETWORK),
              returns=UPID_RETURN)
async def download_url(ctx: Ctx, p: dict) -> str:
    """Download an ISO image, container template or disk image to import from an http(s) URL (a `download` task,
    with progress in its log)."""
    return await svc.download(ctx, p["node"], p["storage"], p)


@API.endpoint("GET", "/nodes/{node}/query-url-metadata", params=[NODE, URL, VERIFY],
              permission=NETWORK,
              returns=obj(optional={"filename": STR, "size": INT, "mimetype": STR}))
async def query_url_metadata(ctx: Ctx, p: dict) -> dict:
    """A URL's file name, size and MIME type (a HEAD request)."""
    return await svc.url_metadata(ctx, p["node"], p["url"], bool(p.get("verify-certificates", 1)))


@API.endpoint("GET", "/cluster/log", params=[Param("max", "integer", minimum=1)],
              permission=Permission("Sys.Syslog", "/"),
              returns={"type": "array", "items": {"type": "object"}})
async def cluster_log(ctx: Ctx, p: dict) -> list:
    """Recent cluster log entries (guest crashes among them), newest first."""
    with ctx.node.read() as s:
        rows = [dict(r, uid=i) for i, r in enumerate(s.cluster_log)]
    return list(reversed(rows))[: p.get("max", 50)]
