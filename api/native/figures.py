"""/v1/figures: this node's live figures, for the other members' cluster-wide lists (node-local, never in the log).

Proxmox's nodes broadcast their status through pmxcfs every 10 s, so `/cluster/resources` on any node shows every
node's and guest's figures. A gpve node asks the other online members for theirs when it lists them, at most
once per sample interval each and never longer than `TIMEOUT` (`PeerFigures`); a member that does not answer
shows no figures until the next interval, as Proxmox shows a node whose status is stale.
"""

from __future__ import annotations

import math

import trio

from api.compat.hostinfo import host_figures
from api.context import Ctx
from api.registry import API
from api.schema import Permission
from engine.errors import Rejection

TIMEOUT = 2.0  # s a list waits for another member's figures


@API.endpoint("GET", "/figures", native=True, permission=Permission("Sys.Audit", "/"),
              returns={"type": "object", "properties": {"node": {"type": "object"}, "guests": {"type": "object"}}})
async def figures(ctx: Ctx, p: dict) -> dict:
    """This node's figures as its `/cluster/resources` row has them (`node`), and those of each guest running
    here, by VMID (`guests`: `cpu`, `mem`, `netin`, `netout`, `diskread`, `diskwrite`, `uptime`)."""
    sampler = ctx.rt.sampler
    guests = {str(vmid): dict(f) for vmid, f in sampler.guests.items()} if sampler is not None else {}
    return {"node": host_figures(ctx.node.spec.data_dir, sampler), "guests": guests}


class PeerFigures:
    """The other members' `/v1/figures`, each fetched at most once per `max_age` seconds."""

    def __init__(self, peers, max_age: float) -> None:
        self.peers = peers  # api/peers.py PeerClient
        self.max_age = max_age
        self.cache: dict[str, tuple[float, dict]] = {}

    async def collect(self, ctx: Ctx) -> dict[str, dict]:
        """Figures by node name of every other online member (`{}` for one that did not answer)."""
        with ctx.node.read() as s:
            names = [n for n in sorted(s.nodes) if n != ctx.node.name and ctx.node.node_online(n)]
        now = trio.current_time()
        stale = [n for n in names if now - self.cache.get(n, (-math.inf, {}))[0] >= self.max_age]
        if stale:
            async with trio.open_nursery() as nursery:
                for name in stale:
                    nursery.start_soon(self._fetch, name)
        return {n: self.cache[n][1] for n in names if n in self.cache}

    async def _fetch(self, name: str) -> None:
        data: dict = {}
        with trio.move_on_after(TIMEOUT):
            try:
                data = await self.peers.call(name, "GET", "/v1/figures")
            except Rejection:
                pass
        self.cache[name] = (trio.current_time(), data if isinstance(data, dict) else {})


async def remote_figures(ctx: Ctx) -> dict[str, dict]:
    """The other online members' figures by node name (none where the node runs no sampler)."""
    peer_figures = ctx.rt.peer_figures
    return await peer_figures.collect(ctx) if peer_figures is not None else {}
