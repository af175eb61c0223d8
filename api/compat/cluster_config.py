"""/cluster/config: create a cluster, join one through the API, list and remove its nodes (the rules and the
join protocol: api/services/cluster.py)."""

from __future__ import annotations

from api.context import Ctx
from api.registry import API
from api.schema import ROOT_ONLY, Param, Permission
from api.services import cluster

SYS_AUDIT = Permission("Sys.Audit", "/")
OBJ = {"type": "object"}
LIST = {"type": "array", "items": {"type": "object"}}


@API.endpoint("GET", "/cluster/config", permission=SYS_AUDIT, returns=LIST)
async def config_index(ctx: Ctx, p: dict) -> list:
    """Directory index."""
    return [{"name": n} for n in ("nodes", "join", "totem", "qdevice")]


@API.endpoint("POST", "/cluster/config",
              params=[Param("clustername", optional=False, pattern=r"[A-Za-z0-9\-]{1,15}"), Param("nodeid", "integer"),
                      Param("votes", "integer", minimum=1), Param("link0")],
              permission=ROOT_ONLY, returns={"type": "string"})
async def create_cluster(ctx: Ctx, p: dict) -> str:
    """Create a cluster named `clustername` on this (single) node."""
    return await cluster.create(ctx, p["clustername"])


@API.endpoint("GET", "/cluster/config/join", params=[Param("node", format="pve-node")], permission=SYS_AUDIT,
              returns={"type": "object", "properties": {"nodelist": LIST, "config_digest": {"type": "string"}}})
async def join_info(ctx: Ctx, p: dict) -> dict:
    """What a new node needs to join: members, their addresses and certificate fingerprints."""
    return cluster.join_info(ctx)


@API.endpoint("GET", "/cluster/config/nodes", permission=SYS_AUDIT, returns=LIST)
async def config_nodes(ctx: Ctx, p: dict) -> list:
    """The cluster's nodes."""
    return [{"name": n["name"], "node": n["name"], "nodeid": n["nodeid"], "quorum_votes": 1, "ring0_addr": n["ip"],
             "raft_addr": n["raft_addr"]} for n in cluster.nodes(ctx)]


@API.endpoint("POST", "/cluster/config/nodes/{node}",
              params=[Param("node", optional=False, format="pve-node", location="path"),
                      Param("raft_addr", optional=False, pattern=r"[0-9a-zA-Z.\-:\[\]]+:\d+"),
                      Param("new_node_ip", optional=False), Param("apiport", "integer", minimum=1, maximum=65535),
                      Param("fingerprint", default=""), Param("force", "boolean")],
              permission=ROOT_ONLY, returns=OBJ)
async def add_node(ctx: Ctx, p: dict) -> dict:
    """(Called by a joining node.) Admit it to the Raft membership and the node list, in the background:
    the change commits only once the joiner follows the log, keyed with the Raft key answered here
    (`raft_key`, with the cluster CA and the join information)."""
    info = cluster.admit(ctx, p["node"], p["raft_addr"], p["new_node_ip"], p.get("apiport", 8006),
                         p.get("fingerprint", ""))
    return {**cluster.join_secrets(ctx), **info}


@API.endpoint("DELETE", "/cluster/config/nodes/{node}",
              params=[Param("node", optional=False, format="pve-node", location="path")],
              permission=ROOT_ONLY, returns={"type": "null"})
async def remove_node(ctx: Ctx, p: dict) -> None:
    """Remove a node from the cluster (refused while it owns guests)."""
    await cluster.remove_node(ctx, p["node"])


@API.endpoint("POST", "/cluster/config/join",
              params=[Param("hostname", optional=False, description="A member: host or host:port (API port)."),
                      Param("password", optional=False, max_length=128),
                      Param("fingerprint", optional=False, pattern=r"([A-Fa-f0-9]{2}:){31}[A-Fa-f0-9]{2}"),
                      Param("nodeid", "integer", minimum=1), Param("votes", "integer", minimum=0),
                      Param("force", "boolean"), Param("link0")],
              permission=ROOT_ONLY, returns={"type": "string"})
async def join_cluster(ctx: Ctx, p: dict) -> str:
    """Join this node to the cluster of `hostname`, with root@pam's `password` there."""
    return await cluster.join(ctx, p["hostname"], p["password"], p["fingerprint"])
