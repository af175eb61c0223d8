"""/v1/templates: the template catalogue (api/services/templates.py)."""

from __future__ import annotations

from api.compat.qemu_options import CONFIG_PARAMS
from api.context import Ctx
from api.registry import API
from api.schema import Param, Permission
from api.services import templates

TEMPLATE = {"type": "object", "required": ["id", "name", "node", "tags"], "properties": {
    "id": {"type": "integer", "description": "the template's VMID"}, "name": {"type": "string"},
    "description": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}},
    "node": {"type": "string"}, "memory": {"type": "integer"}, "cores": {"type": "integer"},
    "disks": {"type": "array", "items": {"type": "string"}},
    "kind": {"type": "string", "enum": ["vm", "vcluster"]},
    "k8s_versions": {"type": "array", "items": {"type": "string"},
                     "description": "the Kubernetes versions a vCluster template's image provides"}}}
ID = Param("id", "integer", optional=False, minimum=100, maximum=999_999_999, location="path",
           description="The template's VMID.")
CLOUDINIT_KEYS = ("ciuser", "cipassword", "sshkeys", "ipconfig[n]", "nameserver", "searchdomain", "citype",
                  "ciupgrade", "cicustom", "description", "tags", "memory", "cores")
OVERRIDES = [p for p in CONFIG_PARAMS if p.name in CLOUDINIT_KEYS]


@API.endpoint("GET", "/templates", native=True, returns={"type": "array", "items": TEMPLATE})
async def list_templates(ctx: Ctx, p: dict) -> list:
    """Every template the caller may audit."""
    return templates.listing(ctx)


@API.endpoint("POST", "/templates", native=True,
              params=[Param("source_vmid", "integer", optional=False, minimum=100, maximum=999_999_999),
                      Param("name", format="dns-name"), Param("description", max_length=8192),
                      Param("tags", "array", items=Param("tag", pattern=r"[a-z0-9_][a-z0-9_\-+.]*"), max_items=64),
                      Param("kind", enum=("vm", "vcluster"), description="`vcluster`: a template for vClusters "
                            "(recorded as the tag `gpve-vcluster`)."),
                      Param("k8s_versions", "array", items=Param("version", max_length=60), max_items=32,
                            description="With kind `vcluster`: the Kubernetes versions its image provides "
                                        "(recorded as tags `k8s-VERSION`).")],
              permission=Permission("VM.Allocate", "/vms/{source_vmid}"),
              returns={**TEMPLATE, "properties": {**TEMPLATE["properties"], "upid": {"type": "string"}}})
async def create_template(ctx: Ctx, p: dict) -> dict:
    """Make guest `source_vmid` a template (as `POST /nodes/{node}/qemu/{vmid}/template`), with the given name,
    description and tags; answers once it is one."""
    return await templates.create(ctx, p["source_vmid"], name=p.get("name"), description=p.get("description"),
                                  tags=p.get("tags"), kind=p.get("kind"), k8s_versions=p.get("k8s_versions"))


@API.endpoint("GET", "/templates/{id}", native=True, params=[ID], permission=Permission("VM.Audit", "/vms/{id}"),
              returns=TEMPLATE)
async def get_template(ctx: Ctx, p: dict) -> dict:
    """One template; 404 when the VMID is no template."""
    return templates.get(ctx, p["id"])


@API.endpoint("DELETE", "/templates/{id}", native=True, params=[ID], permission=Permission("VM.Allocate", "/vms/{id}"),
              returns={"type": "object", "properties": {"upid": {"type": "string"}}})
async def delete_template(ctx: Ctx, p: dict) -> dict:
    """Destroy the template and its volumes; answers the destroy task's UPID."""
    return {"upid": await templates.delete(ctx, p["id"])}


@API.endpoint("POST", "/templates/{id}/instantiate", native=True,
              params=[ID, Param("name", format="dns-name"), Param("node", format="pve-node"),
                      Param("newid", "integer", minimum=100, maximum=999_999_999),
                      Param("full", "boolean", description="A full copy; default: a linked clone."),
                      Param("start", "boolean", default=0), *OVERRIDES],
              permission=Permission("VM.Clone", "/vms/{id}",
                                    description="And what the clone and config calls check: VM.Allocate on the "
                                                "new VMID, VM.Config.* for the overrides."),
              returns={"type": "object", "properties": {"vmid": {"type": "integer"}, "node": {"type": "string"},
                                                        "tasks": {"type": "array", "items": {"type": "string"}}}})
async def instantiate(ctx: Ctx, p: dict) -> dict:
    """A new guest from the template: clone, cloud-init and other overrides, start."""
    config = {k: v for k, v in p.items() if k not in ("id", "name", "node", "newid", "full", "start")}
    return await templates.instantiate(ctx, p["id"], name=p.get("name"), newid=p.get("newid"), node=p.get("node"),
                                       full=bool(p["full"]) if "full" in p else None, config=config,
                                       start=bool(p.get("start")))
