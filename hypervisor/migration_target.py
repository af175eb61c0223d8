"""The target side of a migration: what a node does for a guest that moves to it (the source side is
`Operations.migrate` in hypervisor/operations.py, which calls these through the peer API).

Online: start the guest here paused, waiting for its state (`-incoming`); with local disks, first make
empty volumes and export them over NBD for the source to mirror into (`drive-mirror`), then let the
guest run once the state has arrived and the exports are gone. Offline: receive volume images.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Callable

from engine.errors import Rejection
from hypervisor.qemu import GuestError, QemuDriver
from hypervisor.storage import DirStorage


def _free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def moving_here(node, vmid: int) -> dict:
    """The config of guest `vmid`, which must exist (else 404) and belong to another node than `node` (else 409):
    what a migration's target checks before it does anything."""
    with node.read() as s:
        guest = s.guests.get(vmid)
        if guest is None:
            raise Rejection(404, f"VM {vmid} does not exist")
        if guest["node"] == node.name:
            raise Rejection(409, f"VM {vmid} already belongs to node '{node.name}'")
        return dict(guest["conf"])


async def config_to_run(node, vmid: int) -> dict:
    """The config a migration's target starts guest `vmid` from: read after a barrier through the log, so it holds
    every change committed before the source's migration began (a disk hot-plugged just before: a lagging target
    started QEMU without it and the source's mirror found no export for it; simulator, 5-node seed 45). Errors as
    `moving_here`, and 503 without quorum."""
    await node.read_barrier()
    return moving_here(node, vmid)


class MigrationTarget:
    """`free_port(ip)`: a TCP port to listen on (the simulator gives its own)."""

    def __init__(self, driver: QemuDriver, storages: dict[str, DirStorage], ip: str,
                 free_port: Callable[[str], int] = _free_port) -> None:
        self.driver, self.storages, self.ip, self.free_port = driver, storages, ip, free_port

    def storage_for(self, vmid: int, volid: str) -> DirStorage:
        """The storage holding `volid`, which must be a volume of guest `vmid` (else 400)."""
        storage = self.storages.get(volid.partition(":")[0])
        if storage is None or storage.volume_vmid(volid) != vmid:
            raise Rejection(400, f"volume '{volid}' does not belong to VM {vmid}")
        return storage

    async def incoming(self, vmid: int, conf: dict, volumes: list[dict]) -> dict:
        """Start the guest here, paused and waiting for its state; `volumes` ({key, volid, size}) are made empty
        and exported over NBD. Answers `{"uri": migration URI, "nbd": {disk key: NBD URI}}`; 500 on failure
        (the waiting QEMU is stopped)."""
        for vol in volumes:
            await self.storage_for(vmid, vol["volid"]).alloc_as(vol["volid"], int(vol["size"]))
        uri = f"tcp:{self.ip}:{self.free_port(self.ip)}"
        driver = self.driver
        try:
            # with disks to receive, the guest must not run here before their exports are gone
            await driver.start(vmid, {k: v for k, v in conf.items() if k != "lock"}, incoming=uri,
                               paused=bool(volumes))
            nbd = {}
            if volumes:
                port = self.free_port(self.ip)
                await driver.qmp(vmid, "nbd-server-start", {"addr": {"type": "inet", "data": {"host": self.ip,
                                                                                           "port": str(port)}}})
                nodes = {b["device"]: b["inserted"]["node-name"] for b in await driver.qmp(vmid, "query-block")
                         if b.get("inserted")}
                for vol in volumes:
                    name = f"drive-{vol['key']}"
                    await driver.qmp(vmid, "block-export-add", {"type": "nbd", "id": name, "node-name": nodes[name],
                                                                "name": name, "writable": True})
                    nbd[vol["key"]] = f"nbd:{self.ip}:{port}:exportname={name}"
        except GuestError as exc:
            await driver.stop(vmid)
            raise Rejection(500, f"migration target: {exc}") from None
        return {"uri": uri, "nbd": nbd}

    async def resume(self, vmid: int, exports: list[str]) -> None:
        """After the state has arrived: end the disk exports and let the guest run here (409 if nothing waits)."""
        try:
            for export in exports:
                await self.driver.qmp(vmid, "block-export-del", {"id": export})
            if exports:
                await self.driver.qmp(vmid, "nbd-server-stop")
            await self.driver.qmp(vmid, "cont")
        except GuestError as exc:  # nothing waits here for this guest
            raise Rejection(409, f"migration target: {exc}") from None

    async def abort(self, vmid: int) -> None:
        """Stop a guest that was waiting here for a migration that failed."""
        await self.driver.stop(vmid)

    async def receive_volume(self, vmid: int, volid: str, chunks: AsyncIterator[bytes]) -> int:
        """Store an image under `volid` (offline migration), atomically once complete; returns its size."""
        path = self.storage_for(vmid, volid).volume_path(volid)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        size = 0
        with open(path + ".part", "wb") as f:
            async for chunk in chunks:
                f.write(chunk)
                size += len(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + ".part", path)
        return size

    async def drop_volume(self, vmid: int, volid: str) -> None:
        """Remove a volume made for a migration that failed."""
        await self.storage_for(vmid, volid).free(volid)
