"""Watches this node's guests: reattaches after a restart and reports what happens outside tasks.

A guest whose QEMU vanished without a guest-initiated power-off (kill -9, a QEMU crash) is
recorded as stopped with an error in the cluster log; a guest that powered itself off is
recorded as stopped.
"""

from __future__ import annotations

import time

import structlog
import trio

from engine import commands as cmd
from hypervisor.qemu import GuestError, QemuDriver

log = structlog.get_logger("gpve.watch")


class GuestWatcher:
    def __init__(self, node, driver: QemuDriver, reconciler) -> None:
        self.node = node
        self.driver = driver
        self.reconciler = reconciler

    def _my_guests(self) -> dict[int, str]:
        with self.node.read() as s:
            return {vmid: g.get("status", "stopped") for vmid, g in s.guests.items() if g["node"] == self.node.name}

    def _busy(self, vmid: int) -> bool:
        """A task of this node is working on the guest: it reports the outcome itself."""
        return any(run.vmid == vmid for run, _ in self.reconciler.active.values())

    async def _observe(self, vmid: int, status: str, reason: str) -> None:
        await self.node.submit_until_done(cmd.ObserveGuest(
            request_id=f"observe/{self.node.name}/{vmid}/{time.time_ns()}", ts=time.time(), node=self.node.name,
            vmid=vmid, status=status, reason=reason))

    async def reattach(self) -> None:
        for vmid, status in sorted(self._my_guests().items()):
            if self.driver.running(vmid):
                try:
                    await self.driver.attach(vmid)
                    log.info("reattached to guest", vmid=vmid)
                except GuestError as exc:
                    log.warning("cannot reattach", vmid=vmid, error=str(exc))
                if status != "running":
                    await self._observe(vmid, "running", "")
            elif status == "running" and not self._busy(vmid):
                await self._observe(vmid, "stopped", "crashed - QEMU exited while the node was down")

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        await self.reattach()
        task_status.started()
        async for event in self.driver.events:
            if event.event != "DISCONNECTED":
                continue
            vmid = event.vmid
            await trio.sleep(0.2)  # let the process go before asking whether it is gone
            if self.driver.running(vmid) or vmid not in self._my_guests() or self._busy(vmid):
                continue
            if vmid in self.driver.shutdown_seen:
                await self._observe(vmid, "stopped", "")
            else:
                log.error("guest crashed", vmid=vmid)
                await self._observe(vmid, "stopped", "crashed - QEMU exited unexpectedly")
