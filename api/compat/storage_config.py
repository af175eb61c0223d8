"""/storage: the cluster's storage definitions (Proxmox's storage.cfg, pve-storage `PVE/API2/Storage/Config.pm`);
the rules are api/services/storage.py's and engine/storage.py's. gpve runs `dir` storages."""

from __future__ import annotations

from api.context import Ctx
from api.registry import API
from api.returns import BOOL, INT, STR, array, obj
from api.schema import Param, Permission, split_list
from api.services import storage as svc
from engine.storage import DIR_OPTIONS

STORAGE_ID = Param("storage", optional=False, format="pve-storage-id", description="The storage identifier.")
STORAGE_PATH = Param("storage", optional=False, format="pve-storage-id", location="path",
                     description="The storage identifier.")
ALLOCATE = Permission("Datastore.Allocate", "/storage")
OPTIONS = [  # what a `dir` storage takes (DirPlugin `options`), as pve-storage declares each
    Param("content", format="pve-storage-content-list", description="Allowed content types."),
    Param("nodes", format="pve-node-list", description="Nodes the storage applies to (all when empty)."),
    Param("shared", "boolean", description="The same content on every node it applies to (a mount all share)."),
    Param("disable", "boolean", description="Disable the storage."),
    Param("prune-backups", description="Backup retention: keep-all=<1|0>, keep-last=<N>, keep-daily=<N>, ..."),
    Param("max-protected-backups", "integer", minimum=-1, description="Protected backups per guest (-1: no limit)."),
    Param("format", enum=("raw", "qcow2"), description="Default image format."),
    Param("create-base-path", "boolean", default=1, description="Create the directory if it does not exist."),
    Param("create-subdirs", "boolean", default=1, description="Create the content directories."),
    Param("mkdir", "boolean", default=1, description="Deprecated: create-base-path and create-subdirs at once."),
]
PATH = Param("path", pattern=r"/[^;()]+", description="File system path (required for a dir storage).")
ROW = obj({"storage": STR, "type": STR, "content": STR, "digest": STR},
          {"path": STR, "nodes": STR, "shared": BOOL, "disable": BOOL, "prune-backups": STR,
           "max-protected-backups": INT, "format": STR, "create-base-path": BOOL, "create-subdirs": BOOL,
           "mkdir": BOOL})
CHANGED = obj({"storage": STR, "type": STR})
assert {p.name for p in [PATH, *OPTIONS]} == set(DIR_OPTIONS)  # declared once: engine/storage.py names them


@API.endpoint("GET", "/storage", params=[Param("type", enum=("dir",), description="Only storages of this type.")],
              permission=Permission(check="all", description="Only storages the caller holds Datastore.Audit or "
                                                              "Datastore.AllocateSpace on are listed."),
              returns=array(ROW))
async def list_storage_config(ctx: Ctx, p: dict) -> list:
    """Every storage definition (`local` included), with the configuration's `digest`."""
    return svc.definitions(ctx, p.get("type"))


@API.endpoint("POST", "/storage", params=[STORAGE_ID, Param("type", optional=False, enum=("dir",)), PATH, *OPTIONS],
              permission=ALLOCATE, returns=CHANGED)
async def create_storage(ctx: Ctx, p: dict) -> dict:
    """Define a storage; its directory is made on this node if the storage applies here (unless
    `create-base-path` is 0, when it must exist)."""
    options = {k: v for k, v in p.items() if k not in ("storage", "type")}
    return await svc.create(ctx, p["storage"], options)


@API.endpoint("GET", "/storage/{storage}", params=[STORAGE_PATH],
              permission=Permission("Datastore.Allocate", "/storage/{storage}"), returns=ROW)
async def get_storage_config(ctx: Ctx, p: dict) -> dict:
    """A storage's definition and the configuration's `digest`."""
    return svc.definition(ctx, p["storage"])


@API.endpoint("PUT", "/storage/{storage}",
              params=[STORAGE_PATH, *OPTIONS, Param("delete", format="pve-configid-list", max_length=4096,
                                                    description="Options to delete."),
                      Param("digest", max_length=64, description="Refuse the change if the configuration changed.")],
              permission=ALLOCATE, returns=CHANGED)
async def update_storage_config(ctx: Ctx, p: dict) -> dict:
    """Change a storage's options (its path is fixed)."""
    options = {k: v for k, v in p.items() if k not in ("storage", "delete", "digest")}
    return await svc.update(ctx, p["storage"], options, split_list(p.get("delete")), p.get("digest"))


@API.endpoint("DELETE", "/storage/{storage}", params=[STORAGE_PATH], permission=ALLOCATE)
async def delete_storage_config(ctx: Ctx, p: dict) -> None:
    """Remove a storage's definition (its files stay), its ACLs and pool memberships; `local` gets its defaults
    back."""
    await svc.delete(ctx, p["storage"])
