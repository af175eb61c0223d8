"""The production guest machinery of a node, on a simulated host.

Each daemon (`sim.node.SimProcess`) runs the production task handlers (`hypervisor.operations.Operations`),
guest watcher (`hypervisor.watch.GuestWatcher`) and migration target side (`hypervisor.migration_target`)
over what the host offers: the production QEMU driver on simulated QEMU processes
(sim/qemu.py), the production `DirStorage` on tmpfs with a simulated `qemu-img` (sim/images.py), and
`SimPeers` for the calls a migration makes to its target node (the HTTPS of `api.peers` in production).
"""

from __future__ import annotations

import http
import os
import random

import trio

from api.context import Runtime
from engine.errors import Rejection
from engine.reconciler import Reconciler
from hypervisor.migration_target import MigrationTarget, config_to_run, moving_here
from hypervisor.operations import Operations, make_resolver
from hypervisor.storage import DirStorage
from hypervisor.watch import GuestWatcher
from sim.images import SimQemuImg
from sim.loop import stream
from sim.qemu import SimQemuDriver

RPC_SECONDS = (0.001, 0.01)  # one way, between members
COPY_SECONDS = (0.3, 3.0)  # a volume sent to another member
CONNECT_TIMEOUT = 5.0  # api.peers: httpx's connect timeout


def host_storages(host) -> dict[str, DirStorage]:
    """The host's `local` storage: its files outlive the daemon (and, on tmpfs, a power loss: disks do)."""
    local = DirStorage("local", os.path.join(host.dir, "storage", "local"),
                       qemu_img=SimQemuImg(host, stream(host.world.seed, f"qemu-img/{host.name}")))
    local.ensure_dirs()
    return {"local": local}


def guest_runtime(process) -> None:
    """Give a daemon its reconciler (with the production handlers), guest watcher, migration target and the
    `api.context.Runtime` its requests' services get."""
    host = process.host
    storages = host.storages
    driver = SimQemuDriver(host.qemu, os.path.join(host.dir, "run", "qemu"), make_resolver(storages), process.spawn)
    ops = Operations(driver, storages, SimPeers(host), clock=host.wall, rng=host.ops_rng)
    process.reconciler = Reconciler(process, ops.handlers(), runs=driver.running)
    process.watcher = GuestWatcher(process, driver, process.reconciler)
    process.migration = MigrationTarget(driver, storages, process.spec.ip, free_port=host.world.free_port)
    process.runtime = Runtime(driver=driver, storages=storages, reconciler=process.reconciler, spawn=process.spawn)


class SimPeers:
    """`api.peers.PeerClient` of a simulated host: calls reach the target daemon's `MigrationTarget` over the
    simulated network, or fail as an HTTPS call would (unreachable, the daemon gone while it answered)."""

    def __init__(self, host) -> None:
        self.host = host
        self.rng: random.Random = stream(host.world.seed, f"peers/{host.name}")

    def migration_target(self, node_name: str) -> SimRemoteTarget:
        return SimRemoteTarget(self, node_name)


class SimRemoteTarget:
    """`api.peers.RemoteMigrationTarget`: the same calls, answered by the target daemon's `MigrationTarget`."""

    def __init__(self, peers: SimPeers, node_name: str) -> None:
        self.peers, self.node_name = peers, node_name

    async def _call(self, fn):
        world, rng, name = self.peers.host.world, self.peers.rng, self.node_name
        src = self.peers.host.name
        await trio.sleep(rng.uniform(*RPC_SECONDS))
        dest = world.nodes.get(name)
        if (src, name) in world.network.blocked or (name, src) in world.network.blocked:
            await trio.sleep(CONNECT_TIMEOUT)
            raise Rejection(502, f"node '{name}' is unreachable - ConnectTimeout")
        if dest is None or not dest.up or dest.process.nursery is None:
            raise Rejection(502, f"node '{name}' is unreachable - ConnectError")
        try:
            answer = await dest.process.serve_peer(fn)
        except Rejection as exc:
            if exc.status == 502:
                raise
            raise Rejection(exc.status, f"node '{name}': {http.HTTPStatus(exc.status).phrase}") from None
        await trio.sleep(rng.uniform(*RPC_SECONDS))
        return answer

    async def incoming(self, vmid: int, volumes: list[dict]) -> dict:
        async def start(process) -> dict:
            return await process.migration.incoming(vmid, await config_to_run(process, vmid), volumes)
        return await self._call(start)

    async def resume(self, vmid: int, exports: list[str]) -> None:
        await self._call(lambda process: _here(process, vmid).resume(vmid, exports))

    async def abort(self, vmid: int) -> None:
        await self._call(lambda process: _here(process, vmid).abort(vmid))

    async def receive_volume(self, vmid: int, volid: str, path: str) -> None:
        with open(path, "rb") as f:
            data = f.read()
        await trio.sleep(self.peers.rng.uniform(*COPY_SECONDS))

        async def chunks():
            yield data
        await self._call(lambda process: _here(process, vmid).receive_volume(vmid, volid, chunks()))

    async def drop_volume(self, vmid: int, volid: str) -> None:
        await self._call(lambda process: _here(process, vmid).drop_volume(vmid, volid))


def _here(process, vmid: int) -> MigrationTarget:
    """The target daemon's `MigrationTarget`, once it has checked the guest moves to it (api/native/migration.py)."""
    moving_here(process, vmid)
    return process.migration
