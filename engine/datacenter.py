"""The datacenter options (Proxmox's `datacenter.cfg`, `/cluster/options`), as log commands.

The values arrive checked and in canonical form (api/compat/cluster_options.py declares every key); the log
keeps them as the file keeps them, strings by key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.commands import Command
from engine.decide import Decision, decide
from engine.errors import bad_request
from engine.events import Event
from engine.state import State, apply


@dataclass(frozen=True, kw_only=True)
class SetDatacenterOptions(Command):
    """Set the keys of `set`, then remove those of `delete` (a key in both ends removed, as in Proxmox)."""

    TYPE = "datacenter.set_options"
    set: dict = field(default_factory=dict)
    delete: list = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class DatacenterOptionsChanged(Event):
    TYPE = "datacenter.options_changed"
    set: dict = field(default_factory=dict)
    delete: list = field(default_factory=list)


@decide.register
def _(c: SetDatacenterOptions, s: State) -> Decision:
    if not all(isinstance(v, str) for v in c.set.values()):
        raise bad_request("datacenter options are stored as strings")
    return [DatacenterOptionsChanged(set=dict(c.set), delete=list(c.delete))], {}


@apply.register
def _(e: DatacenterOptionsChanged, s: State) -> State:
    s.datacenter.update(e.set)
    for key in e.delete:
        s.datacenter.pop(key, None)
    return s
