"""Applying a node's network configuration, as a task in the log (pure).

The configuration itself is the node's own (its data directory holds it, as Proxmox's `/etc/network/interfaces`
and `interfaces.new`), never cluster state; what the log records is the task that applies it, so that it has a
UPID, a log and an outcome like any other task (pve-manager `PVE/API2/Network.pm` `reload_network_config`: a
`srvreload` worker for `networking`). The node's reconciler runs it (hypervisor/netlink.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine import tasks
from engine.commands import Command
from engine.decide import Decision, decide
from engine.errors import not_found
from engine.events import TaskStarted
from engine.state import State

RELOAD = "srvreload"
RELOAD_ID = "networking"  # the UPID's id field, as Proxmox's


@dataclass(frozen=True, kw_only=True)
class ReloadNetwork(Command):
    """Make node `node`'s pending network configuration its own and configure Linux from it."""

    TYPE = "network.reload"
    node: str
    upid: str
    starttime: int


@decide.register
def _reload_network(c: ReloadNetwork, s: State) -> Decision:
    if c.node not in s.nodes:
        raise not_found(f"no such cluster node '{c.node}'")
    return [TaskStarted(upid=c.upid, node=c.node, type=RELOAD, id=RELOAD_ID, user=c.user,
                        starttime=c.starttime)], {"upid": c.upid}


# Applying is idempotent (the pending file is renamed if it is there, then Linux is brought to the configuration):
# interrupted by a restart, it runs again.
tasks.KINDS[RELOAD] = tasks.TaskKind(RELOAD, to_the_end=True,
                                     description="apply the node's pending network configuration")
