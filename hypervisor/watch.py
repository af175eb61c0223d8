"""Watches this node's guests: reattaches after a restart and reports what happens outside tasks.

A guest whose QEMU vanished without a guest-initiated power-off (kill -9, a QEMU crash) is
recorded as stopped with an error in the cluster log; a guest that powered itself off is
recorded as stopped. A periodic sweep also compares every idle guest's QEMU with the log, for what no
event reports: a QEMU that went away while a task of its guest ran (the task's outcome said otherwise, or
it was aborted), a QEMU still booting when its start task was aborted.
"""

from __future__ import annotations

import structlog
import trio

from engine import commands as cmd
from hypervisor.qemu import GuestError, QemuDriver

log = structlog.get_logger("gpve.watch")


SWEEP_SECONDS = 2.0


class GuestWatcher:
    def __init__(self, node, driver: QemuDriver, reconciler, sweep_every: float = SWEEP_SECONDS) -> None:
        self.node = node
        self.driver = driver
        self.reconciler = reconciler
        self.sweep_every = sweep_every
        self._mine: tuple = (None, -1, {}, set())  # (state, applied index, _my_guests at it, those running)

    def _my_guests(self) -> dict[int, str]:
        """This node's guests and their power state in the log (shared: do not change it), read again only when
        the log has moved (a sweep of 100,000 guests read them all every 2 s)."""
        with self.node.read() as s:
            if self._mine[0] is not s or self._mine[1] != s.applied:
                mine = {vmid: g.get("status", "stopped") for vmid, g in s.guests.items() if g["node"] == self.node.name}
                self._mine = (s, s.applied, mine, {vmid for vmid, status in mine.items() if status == "running"})
            return self._mine[2]

    def _recorded(self, vmid: int) -> str | None:
        """The guest's power state in the log, if it is this node's."""
        with self.node.read() as s:
            guest = s.guests.get(vmid)
            return guest.get("status", "stopped") if guest is not None and guest["node"] == self.node.name else None

    def _busy(self, vmid: int) -> bool:
        """A task of this node is working on the guest: it reports the outcome itself."""
        return any(run.vmid == vmid for run, _ in self.reconciler.active.values())

    async def _observe(self, vmid: int, status: str, reason: str) -> None:
        await self.node.submit_until_done(cmd.ObserveGuest(
            request_id=f"observe/{self.node.name}/{vmid}/{self.node.new_request_id()}", ts=self.node.wall(),
            node=self.node.name, vmid=vmid, status=status, reason=reason))

    def _stop_reason(self, vmid: int) -> str:
        return "" if vmid in self.driver.shutdown_seen else "crashed - QEMU exited unexpectedly"

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
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sweep)
            async for event in self.driver.events:
                if event.event != "DISCONNECTED":
                    continue
                vmid = event.vmid
                await trio.sleep(0.2)  # let the process go before asking whether it is gone
                if self.driver.running(vmid) or vmid not in self._my_guests() or self._busy(vmid):
                    continue
                reason = self._stop_reason(vmid)
                if reason:
                    log.error("guest crashed", vmid=vmid)
                await self._observe(vmid, "stopped", reason)

    async def _sweep(self) -> None:
        while True:
            await trio.sleep(self.sweep_every)
            live = self.driver.with_pidfile()  # a guest without a pidfile is not running: no need to look
            mine = self._my_guests()
            for vmid in sorted({vmid for vmid in live if vmid in mine} | self._mine[3]):
                status = self._recorded(vmid)  # read again: an observation before may have taken a while
                if status is None or self._busy(vmid):
                    continue
                running = self.driver.running(vmid)
                if running and status != "running":
                    await self._observe(vmid, "running", "")
                elif not running and status == "running":
                    await self._observe(vmid, "stopped", self._stop_reason(vmid))
