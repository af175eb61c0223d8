"""/v1/cluster: the replicated log as this node sees it."""

from __future__ import annotations

from api.context import Ctx
from api.registry import API
from api.schema import Permission


@API.endpoint("GET", "/cluster/raft", native=True, permission=Permission("Sys.Audit", "/"),
              returns={"type": "object", "properties": {"leader": {"type": ["string", "null"]},
                                                         "term": {"type": "integer"},
                                                         "commit_index": {"type": "integer"}}})
async def raft_status(ctx: Ctx, p: dict) -> dict:
    """Leader, term, indexes and write batching figures of this node's replicated log."""
    node = ctx.node
    replog = node.replog
    by_addr = {addr: name for name, addr in node.spec.peers.items()}
    with node.read() as s:
        by_addr.update({n["raft_addr"]: n["name"] for n in s.nodes.values()})
        applied = s.applied
    term, leader = replog.leadership
    return {"node": node.name, "leader": by_addr.get(leader, leader) if leader else None,
            "term": term, "commit_index": replog.raftCommitIndex,
            "last_applied": replog.raftLastApplied, "commands_applied": applied, "quorate": node.quorate(),
            "journal_entries": len(node.journal), "journal_syncs": node.journal.syncs,
            "entries_proposed": node.bridge.entries_proposed, "commands_proposed": node.bridge.commands_proposed}
