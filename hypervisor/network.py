"""The node's own network configuration: its files, its pending changes, and the task that applies them.

As Proxmox keeps `/etc/network/interfaces` and writes API changes to `interfaces.new` until they are applied, a
node keeps `DATA_DIR/network/interfaces` (what was applied) and `interfaces.new` (pending), each written
atomically; reads show the pending file when there is one, with `changes` (the diff) beside them (pve-common
`PVE/INotify.pm` `read_file`/`write_file` with the shadow file). The `srvreload` task (engine/network.py) renames
the pending file into place and configures Linux from it (hypervisor/netlink.py); reverting deletes it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import trio

from engine.private import fsync_dir, write_private
from engine.reconciler import Outcome, TaskFailed, TaskRun
from hypervisor import netconfig, netlink


@dataclass
class Snapshot:
    """The configuration as read: interfaces (`netconfig.parse`), top-level lines kept, the pending diff."""

    ifaces: dict[str, dict]
    extra: list[str]
    changes: str | None


class NodeNetwork:
    """`links()` reads the host's interfaces and `configure(new, old, log)` sets Linux up (hypervisor/netlink.py);
    the lock is held across a read-modify-write, as Proxmox's `/etc/network/.pve-interfaces.lock`."""

    def __init__(self, data_dir: str, links: Callable[[], dict[str, dict]] = netlink.links,
                 configure: Callable = netlink.configure) -> None:
        self.dir = os.path.join(data_dir, "network")
        self.active = os.path.join(self.dir, "interfaces")
        self.pending = self.active + ".new"
        self.links, self.configure = links, configure
        self.lock = trio.Lock()

    def _text(self, path: str) -> str | None:
        try:
            with open(path) as f:
                return f.read()
        except FileNotFoundError:
            return None

    async def host_links(self) -> dict[str, dict]:
        return await trio.to_thread.run_sync(self.links)

    async def read(self) -> Snapshot:
        """The pending configuration if there is one, else the applied one; `changes` between them."""
        active = self._text(self.active) or ""
        pending = self._text(self.pending)
        ifaces, extra = netconfig.parse(active if pending is None else pending, await self.host_links())
        changes = netconfig.diff(active, pending, self.active) if pending is not None else None
        return Snapshot(ifaces, extra, changes)

    def write(self, snapshot: Snapshot) -> None:
        """Check the configuration as Proxmox's writer does (ConfigError), then make it the pending one."""
        netconfig.check(snapshot.ifaces)
        os.makedirs(self.dir, exist_ok=True)
        write_private(self.pending, netconfig.render(snapshot.ifaces, snapshot.extra).encode())

    def revert(self) -> None:
        try:
            os.unlink(self.pending)
        except FileNotFoundError:
            return
        fsync_dir(self.dir)

    async def reload(self, run: TaskRun) -> Outcome:
        """The `srvreload` task: the pending configuration becomes the applied one, then Linux is configured from
        it. Fails (after applying what it could) when an interface could not be configured."""
        async with self.lock:
            links = await self.host_links()
            old, _ = netconfig.parse(self._text(self.active) or "", links)
            if os.path.exists(self.pending):
                run.log(f"rename {self.pending} to {self.active}")
                os.replace(self.pending, self.active)
                fsync_dir(self.dir)
            new, _ = netconfig.parse(self._text(self.active) or "", links)
            errors = await trio.to_thread.run_sync(self.configure, new, old, run.log)
        if errors:
            raise TaskFailed(errors[0] if len(errors) == 1 else f"{errors[0]} (and {len(errors) - 1} more errors)")
        return Outcome()

    def handlers(self) -> dict:
        return {"srvreload": self.reload}
