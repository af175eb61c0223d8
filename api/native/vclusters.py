"""/v1/vclusters: tenant Kubernetes clusters on the cluster's guests (api/services/vclusters.py)."""

from __future__ import annotations

import dataclasses

from api.context import Ctx, Reply
from api.registry import API
from api.schema import QUANTITY, Param, Permission
from api.services import vclusters
from engine import vclusters as rules

YAML = "application/yaml"
VCLUSTER = {"type": "object", "required": ["id", "name", "status", "k8s_version", "node", "isolation", "created_at",
                                           "endpoints"], "properties": {
    "id": {"type": "string"}, "name": {"type": "string"},
    "status": {"type": "string", "enum": ["provisioning", "running", "scaling", "deleting", "failed"]},
    "reason": {"type": "string", "description": "why it failed"}, "k8s_version": {"type": "string"},
    "node": {"type": "string"}, "isolation": {"type": "string", "enum": list(rules.ISOLATIONS)},
    "created_at": {"type": "string"},
    "endpoints": {"type": "object", "properties": {"api_server": {"type": "string"}}},
    "resources": {"type": "object", "properties": {"cpu": {"type": "integer"}, "memory": {"type": "string"}}},
    "workers": {"type": "integer"}, "template": {"type": "integer"},
    "network": {"type": "object", "properties": {k: {"type": "string"} for k in ("bridge", "cidr", "gateway")}},
    "guests": {"type": "array", "items": {"type": "object", "properties": {
        "role": {"type": "string"}, "name": {"type": "string"}, "address": {"type": "string"},
        "vmid": {"type": "integer"}}}},
    "upid": {"type": "string", "description": "its current or last task"}}}
ID = Param("id", optional=False, location="path", pattern=rules.VC_ID.pattern, description="The vCluster's id.")
# parsed by engine/vclusters.py (`cpu_cores`, `memory_mib`), whose refusals say what a quantity looks like
RESOURCES = (Param("cpu", QUANTITY, max_length=32,
                   description="Cores per guest, or millicores (`500m`, rounded up)."),
             Param("memory", QUANTITY, max_length=32,
                   description="Memory per guest, a Kubernetes quantity: `8Gi`, `512Mi`, `1G`, bytes."))
WORKERS = Param("workers", "integer", minimum=0, maximum=rules.MAX_WORKERS,
                description="Worker guests besides the control plane (isolation `vm` only).")
AUDIT = Permission("VCluster.Audit", "/vclusters/{id}")
MODIFY = Permission("VCluster.Modify", "/vclusters/{id}")
TASK = {"type": "object", "properties": {"upid": {"type": "string"}}}


@API.endpoint("GET", "/vclusters", native=True,
              permission=Permission(check="all", description="Only the vClusters with VCluster.Audit on "
                                                                "/vclusters/{id} are listed."),
              returns={"type": "object", "properties": {"items": {"type": "array", "items": VCLUSTER}}})
async def list_vclusters(ctx: Ctx, p: dict) -> dict:
    """Every vCluster the caller may audit."""
    return vclusters.listing(ctx)


@API.endpoint("POST", "/vclusters", native=True, params=[
    Param("name", optional=False, strict=True, max_length=64,  # the rule and its message: engine/vclusters.py
          description="A lowercase DNS label of at most 40 characters (letters, digits, '-'; a letter or digit at "
                      "each end); names its guests (`NAME-cp`, `NAME-wN`). Creating a failed vCluster's name again "
                      "provisions it anew."),
    Param("k8s_version", optional=False, max_length=64,
          description="One of the versions a vCluster template offers (`GET /v1/templates`)."),
    Param("isolation", default="namespace", enum=rules.ISOLATIONS,
          description="`namespace`: one control-plane guest that runs the workloads too; `vm`: plus worker guests."),
    Param("resources", "object", optional=False, properties=tuple(
        dataclasses.replace(r, optional=False) for r in RESOURCES)),
    Param("node_selector", "object", properties=(Param("node", format="pve-node"),),
          description="`node`: where to run it; default: the node with the most free memory."),
    WORKERS,
    Param("network", "object", properties=(Param("bridge", optional=False), Param("cidr", optional=False),
                                           Param("gateway", optional=False)),
          description="Where its guests are: a bridge, an IPv4 network and its gateway; default: bridge vmbr0, "
                      "10.77.0.0/24, gateway 10.77.0.1. Each guest gets the lowest free address."),
    Param("template", "integer", minimum=100, maximum=999_999_999,
          description="The vCluster template to clone; default: the lowest VMID offering `k8s_version`.")],
    permission=Permission("VCluster.Allocate", "/vclusters"),
    returns={**VCLUSTER, "properties": {**VCLUSTER["properties"], "upid": {"type": "string"}}})
async def create_vcluster(ctx: Ctx, p: dict) -> dict:
    """A new vCluster; it is provisioned by the `vccreate` task the answer names (`upid`)."""
    return await vclusters.create(ctx, p["name"], p["k8s_version"], p.get("isolation", "namespace"), p["resources"],
                                  node=(p.get("node_selector") or {}).get("node"), workers=p.get("workers", 0),
                                  network=p.get("network"), template=p.get("template"))


@API.endpoint("GET", "/vclusters/{id}", native=True, params=[ID], permission=AUDIT, returns=VCLUSTER)
async def get_vcluster(ctx: Ctx, p: dict) -> dict:
    """One vCluster."""
    return vclusters.get(ctx, p["id"])


@API.endpoint("DELETE", "/vclusters/{id}", native=True, params=[ID],
              permission=Permission("VCluster.Allocate", "/vclusters/{id}"), returns=TASK)
async def delete_vcluster(ctx: Ctx, p: dict) -> dict:
    """Stop and destroy its guests, volumes and snippets, then forget it and its keys (a `vcdelete` task)."""
    return await vclusters.delete(ctx, p["id"])


@API.endpoint("GET", "/vclusters/{id}/kubeconfig", native=True, params=[ID],
              permission=Permission("VCluster.Modify", "/vclusters/{id}",
                                    description="It holds the cluster's admin credentials; every read is logged."),
              returns={"type": "string"}, text=YAML)
async def get_kubeconfig(ctx: Ctx, p: dict) -> Reply:
    """The admin kubeconfig (YAML)."""
    return Reply(vclusters.kubeconfig(ctx, p["id"]), content_type=YAML,
                 headers={"Cache-Control": "no-store"})  # it holds a private key


@API.endpoint("POST", "/vclusters/{id}/scale", native=True, params=[
    ID, Param("resources", "object", properties=RESOURCES), WORKERS], permission=MODIFY, returns=TASK)
async def scale_vcluster(ctx: Ctx, p: dict) -> dict:
    """New cores/memory for every guest (a rolling restart) and/or another worker count (a `vcscale` task)."""
    return await vclusters.scale(ctx, p["id"], p.get("resources"), p.get("workers"))
