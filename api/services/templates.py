"""Templates (the spec's "Template Management"): Proxmox templates — guests with `template: 1` — seen as a
catalogue, made from a guest, and instantiated by clone. Built on the guest services, so every rule
(privileges, locks, linked vs full clones, storage) is the single calls' own.

A template's id is its VMID. Errors: 404 (no such template), 400, 403, 409, 423 from the guest services.
"""

from __future__ import annotations

from api.context import Ctx
from api.schema import ParamErrors
from api.services import guests
from api.services.tasks import wait_task
from engine import tasks
from engine import vclusters as vc_rules
from engine.errors import Rejection, not_found
from engine.volumes import DISK_KEY, is_cdrom

ATTEMPTS = 5  # a new VMID taken by someone else between choosing and cloning: choose again


def record(guest: dict) -> dict:
    """The catalogue row: `id`, `name`, `description`, `tags` (a list), `node`, `disks` (config keys), `kind`
    (`vcluster` for a template registered for vClusters, else `vm`) and, for a vCluster template, `k8s_versions`.
    A vCluster template is one tagged `gpve-vcluster`, each `k8s-VERSION` tag a version its image provides
    (engine/vclusters.py)."""
    conf = guest["conf"]
    disks = sorted(k for k, v in conf.items() if DISK_KEY.fullmatch(k) and not is_cdrom(v))
    versions = vc_rules.template_versions(conf)
    return {"id": guest["vmid"], "name": conf.get("name", ""), "description": conf.get("description", ""),
            "tags": [t for t in str(conf.get("tags", "")).replace(",", ";").split(";") if t],
            "node": guest["node"], "memory": conf.get("memory", 512), "cores": conf.get("cores", 1),
            "disks": disks, "kind": "vm" if versions is None else "vcluster",
            **({"k8s_versions": versions} if versions is not None else {})}


def kind_tags(tags: list[str] | None, kind: str | None, versions: list[str] | None) -> list[str] | None:
    """The tags that register a template for vClusters (`kind` `vcluster` with at least one version); ParamErrors
    otherwise. None: the tags are not changed."""
    if kind is None and versions is None:
        return tags
    if kind != "vcluster":
        if versions:
            raise ParamErrors({"k8s_versions": "only a template of kind 'vcluster' offers Kubernetes versions"})
        return tags
    if not versions:
        raise ParamErrors({"k8s_versions": "a vCluster template offers at least one Kubernetes version"})
    bad = {f"k8s_versions[{i}]": f"invalid Kubernetes version '{v}' - use MAJOR.MINOR.PATCH (1.28.0, a leading "
                                 "'v' is dropped)" for i, v in enumerate(versions) if vc_rules.k8s_version(v) is None}
    if bad:
        raise ParamErrors(bad)
    versions = list(dict.fromkeys(vc_rules.k8s_version(v) or v for v in versions))  # as given, once each
    kept = [t for t in tags or [] if t != vc_rules.TEMPLATE_TAG and not t.startswith(vc_rules.VERSION_TAG)]
    return [*kept, vc_rules.TEMPLATE_TAG, *(vc_rules.VERSION_TAG + v for v in versions)]


def listing(ctx: Ctx) -> list[dict]:
    """Every template the caller may audit (VM.Audit on `/vms/{id}`), by id."""
    with ctx.node.read() as s:
        found = [dict(g, conf=dict(g["conf"])) for _, g in sorted(s.guests.items()) if g["conf"].get("template")]
    return [record(g) for g in found if ctx.can("VM.Audit", f"/vms/{g['vmid']}")]


def get(ctx: Ctx, vmid: int) -> dict:
    """One template; 404 when `vmid` is no template (also when it is a plain guest)."""
    with ctx.node.read() as s:
        guest = s.guests.get(vmid)
        guest = dict(guest, conf=dict(guest["conf"])) if guest else None
    if guest is None or not guest["conf"].get("template"):
        raise not_found(f"template {vmid} does not exist")
    return record(guest)


async def create(ctx: Ctx, vmid: int, *, name: str | None = None, description: str | None = None,
                 tags: list[str] | None = None, kind: str | None = None, k8s_versions: list[str] | None = None) -> dict:
    """Set the given name, description and tags on guest `vmid`, then make it a template
    (`POST /nodes/{node}/qemu/{vmid}/template`); waits for the conversion. `kind` `vcluster` with `k8s_versions`
    registers it for vClusters (as tags, `kind_tags`). Returns the catalogue row and `upid`."""
    node = _node_of(ctx, vmid)
    if tags is None and kind is not None:
        with ctx.node.read() as s:
            tags = [t for t in str(s.guests[vmid]["conf"].get("tags", "")).replace(",", ";").split(";") if t]
    tags = kind_tags(tags, kind, k8s_versions)
    with ctx.node.read() as s:
        tasks.kind("qmtemplate").precheck(s, dict(s.guests[vmid]), {})  # refused before anything is changed
    changes = {k: v for k, v in (("name", name), ("description", description),
                                 ("tags", ";".join(tags) if tags is not None else None)) if v is not None}
    if changes:
        await guests.update_config(ctx.derived("config"), node, vmid, changes, [])
    upid = await guests.template(ctx.derived("template"), node, vmid)
    await wait_task(ctx, upid)
    return {**get(ctx, vmid), "upid": upid}


async def delete(ctx: Ctx, vmid: int) -> str:
    """Destroy the template and its volumes (`DELETE /nodes/{node}/qemu/{vmid}`, purged); returns the UPID.
    As in Proxmox, the task fails while linked clones still use its base volumes."""
    template = get(ctx, vmid)
    return await guests.destroy(ctx, template["node"], vmid, purge=True)


async def instantiate(ctx: Ctx, vmid: int, *, name: str | None = None, newid: int | None = None,
                      node: str | None = None, full: bool | None = None, config: dict | None = None,
                      start: bool = False) -> dict:
    """A new guest from template `vmid`: a clone (linked unless `full`; `node` other than the template's only
    for full clones on storage both reach), then `config` (cloud-init keys such as `ciuser`, `sshkeys`,
    `ipconfig0`) set through the config service, then started if `start`. Waits for each step; returns
    `{vmid, node, tasks: [UPIDs]}`. Without `newid` the lowest free VMID is taken (again if another client
    takes it first)."""
    template = get(ctx, vmid)
    changes, _ = guests.config_changes(dict(config or {}), [], lambda key: True)
    target = node or template["node"]
    tasks: list[str] = []
    for attempt in range(ATTEMPTS):
        chosen = newid or _free_vmid(ctx)
        try:
            upid = await guests.clone(ctx.derived(f"clone-{attempt}"), template["node"], vmid, chosen, full=full,
                                      name=name, target=None if target == template["node"] else target)
            break
        except Rejection as exc:
            if newid is not None or exc.status != 409 or attempt == ATTEMPTS - 1:
                raise
    tasks.append(upid)
    await wait_task(ctx, upid)
    if changes:
        await guests.update_config(ctx.derived("config"), target, chosen, changes, [])
    if start:
        tasks.append(await guests.power(ctx.derived("start"), target, chosen, "qmstart", {}))
        await wait_task(ctx, tasks[-1])
    return {"vmid": chosen, "node": target, "tasks": tasks}


def _node_of(ctx: Ctx, vmid: int) -> str:
    with ctx.node.read() as s:
        guest = s.guests.get(vmid)
    if guest is None:
        raise not_found(f"VM {vmid} does not exist")
    return guest["node"]


def _free_vmid(ctx: Ctx) -> int:
    with ctx.node.read() as s:
        vmid = s.next_free_vmid(ctx.now)
    if vmid is None:
        raise Rejection(500, "unable to get any free VMID in range [100, 999999999]")
    return vmid
