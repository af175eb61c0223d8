"""API clients: they read a node's local state, send commands to a random node, and retry with the
same request id on any failure (503, timeout, a dead node), as real clients and proxies do.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

from engine import commands as cmd
from engine.state import guest_digest
from engine.upid import Upid
from sim.access_ops import ACCESS_OPS, AccessOps

LOCKS = ("backup", "migrate", "snapshot")

# op -> weight, per workload
WORKLOADS: dict[str, dict[str, int]] = {
    "mixed": {"create": 20, "reserve_create": 6, "update": 12, "update_digest": 12, "delete": 8, "lock": 8,
              "unlock": 8, "task": 18, "power": 4, "abort": 2, "reserve": 4, "snapshot": 4, "rollback": 2,
              "delsnapshot": 2, "clone": 3, "migrate": 3, "resize": 3, "config": 3, "template": 1,
              **{op: 1 for op in ACCESS_OPS}},
    "contention": {"create": 10, "reserve_create": 10, "update": 10, "update_digest": 30, "delete": 5, "lock": 15,
                   "unlock": 15, "task": 5, "power": 3, "snapshot": 6, "rollback": 4, "delsnapshot": 4, "clone": 4,
                   "migrate": 4, "resize": 6, "config": 4, "template": 1},
    "vmid-race": {"create": 30, "reserve_create": 30, "delete": 20, "reserve": 20},
    "access": {"create": 10, "delete": 8, **{op: 6 for op in ACCESS_OPS}},
    "migration": {"create": 10, "task": 30, "power": 3, "migrate": 30, "abort": 4, "lock": 2, "unlock": 2, "delete": 2},
}
POWER_KINDS = ("qmreboot", "qmreset", "qmsuspend", "qmresume")
POOL = {"mixed": 24, "contention": 6, "vmid-race": 10, "access": 8, "migration": 6}
SNAPNAMES = ("s1", "s2", "s3", "s4")


class Client(AccessOps):
    def __init__(self, world, cid: int, rng: random.Random, workload: str, rate: float) -> None:
        self.world, self.cid, self.rng, self.rate = world, cid, rng, rate
        self.ops = sorted(WORKLOADS[workload].items())
        self.pool = POOL[workload]
        self.seq = 0
        self.held: dict[int, str] = {}  # locks this client believes it holds
        world.loop.after(rng.expovariate(rate) + 1.0, self.act)

    # ---- the request/retry cycle ---------------------------------------------------------------
    def call(self, build: Callable[[object], cmd.Command], then: Callable[[dict], None] | None = None) -> None:
        self.seq += 1
        rid = f"c{self.cid}-{self.seq}"
        world = self.world
        world.pending[rid] = True

        def attempt() -> None:
            node = world.nodes[self.rng.choice(world.serving())]
            if not node.up:
                world.loop.after(self.rng.uniform(0.5, 1.5), attempt)  # connection refused
                return
            command = dataclasses.replace(build(node), request_id=rid)
            world.request_ts.setdefault(rid, command.ts)
            node.request(command, answered)

        def answered(result: dict | None, why: str) -> None:
            if result is None:
                world.trace(f"client retry {rid} {why}")
                world.loop.after(self.rng.uniform(0.5, 1.5), attempt)
                return
            world.pending.pop(rid, None)
            world.checker.ack(rid, result)
            world.trace(f"client ack {rid} {'ok' if 'ok' in result else result['error']['status']}")
            if then is not None:
                then(result)

        attempt()

    def act(self) -> None:
        if self.world.clients_stopped:
            return
        total = sum(w for _, w in self.ops)
        pick = self.rng.uniform(0, total)
        chosen = self.ops[-1][0]
        for op, weight in self.ops:
            pick -= weight
            if pick <= 0:
                chosen = op
                break
        getattr(self, f"op_{chosen}")()
        self.world.loop.after(self.rng.expovariate(self.rate), self.act)

    # ---- helpers -------------------------------------------------------------------------------
    def vmid(self) -> int:
        return 100 + self.rng.randrange(self.pool)

    def known_guest(self, node) -> tuple[int, dict | None]:
        guests = node.machine.state.guests
        if guests and self.rng.random() < 0.8:
            vmid = self.rng.choice(sorted(guests))
            return vmid, guests[vmid]
        return self.vmid(), None

    def owner(self, node, vmid: int) -> str:
        guest = node.machine.state.guests.get(vmid)
        return guest["node"] if guest else self.rng.choice(self.world.serving())

    def upid(self, node, kind: str, vmid: int) -> tuple[str, int]:
        self.world.upids += 1
        starttime = int(node.wall())
        upid = Upid(node.name, 1000 + self.cid, self.world.upids, starttime, kind, str(vmid), "root@pam")
        return str(upid), starttime

    # ---- operations ----------------------------------------------------------------------------
    def op_create(self, vmid: int | None = None) -> None:
        vmid = vmid if vmid is not None else self.vmid()
        config = {"name": f"vm{vmid}-c{self.cid}", "memory": self.rng.choice([512, 1024, 2048]),
                  "cores": self.rng.randint(1, 4)}
        if self.rng.random() < 0.3:
            config["scsi0"] = "local:1"
        start = self.rng.random() < 0.3
        target = self.rng.choice(self.world.serving())

        def build(node) -> cmd.Command:
            upid, starttime = self.upid(node, "qmcreate", vmid)
            return cmd.CreateGuest(request_id="", ts=node.wall(), node=target, vmid=vmid, config=dict(config),
                                   upid=upid, starttime=starttime, start=start)
        self.call(build)

    def op_reserve_create(self) -> None:
        def then(result: dict) -> None:
            if "ok" in result:
                self.op_create(result["ok"]["vmid"])
        self.call(lambda node: cmd.ReserveVmid(request_id="", ts=node.wall()), then)

    def op_reserve(self) -> None:
        vmid = self.vmid() if self.rng.random() < 0.5 else None
        self.call(lambda node: cmd.ReserveVmid(request_id="", ts=node.wall(), vmid=vmid, lease=10.0))

    def _update(self, with_digest: bool) -> None:
        """A config change without volumes or QEMU: on a running guest `memory` and `cores` wait as pending changes,
        `description` and `hotplug` apply at once; one in seven drops a pending change (`revert`)."""
        key = self.rng.choice(["memory", "cores", "description", "hotplug"])
        value = {"description": f"edited by c{self.cid} #{self.seq}",
                 "hotplug": self.rng.choice(["0", "1", "network,disk"])}.get(key) or self.rng.randint(1, 64)
        revert = self.rng.random() < 1 / 7

        def build(node) -> cmd.Command:
            vmid, guest = self.known_guest(node)
            digest = guest_digest(guest) if with_digest and guest else None
            return cmd.UpdateGuestConfig(request_id="", ts=node.wall(), node=self.owner(node, vmid), vmid=vmid,
                                         set={} if revert else {key: value}, revert=[key] if revert else [],
                                         digest=digest)
        self.call(build)

    def op_update(self) -> None:
        self._update(False)

    def op_update_digest(self) -> None:
        self._update(True)

    def op_delete(self) -> None:
        """`DELETE /nodes/{node}/qemu/{vmid}`: a destroy task on the owning node."""
        self._guest_task("qmdestroy", lambda node, guest: {"purge": 0})

    def op_lock(self) -> None:
        lock = self.rng.choice(LOCKS)
        chosen: dict[str, int] = {}

        def build(node) -> cmd.Command:
            vmid = chosen.setdefault("vmid", self.known_guest(node)[0])
            return cmd.LockGuest(request_id="", ts=node.wall(), vmid=vmid, lock=lock)

        def then(result: dict) -> None:
            if "ok" in result:
                self.held[chosen["vmid"]] = lock
        self.call(build, then)

    def op_unlock(self) -> None:
        if not self.held:
            return
        vmid = self.rng.choice(sorted(self.held))
        lock = self.held.pop(vmid)
        self.call(lambda node: cmd.UnlockGuest(request_id="", ts=node.wall(), vmid=vmid, lock=lock))

    def op_task(self) -> None:
        self._power(self.rng.choice(["qmstart", "qmstop", "qmshutdown"]))

    def op_power(self) -> None:
        self._power(self.rng.choice(POWER_KINDS))

    def _power(self, kind: str) -> None:
        def build(node) -> cmd.Command:
            vmid, _ = self.known_guest(node)
            upid, starttime = self.upid(node, kind, vmid)
            return cmd.StartTask(request_id="", ts=node.wall(), node=self.owner(node, vmid), upid=upid,
                                 starttime=starttime, type=kind, vmid=vmid,
                                 intent={"timeout": 10} if kind in ("qmshutdown", "qmreboot") else {})
        self.call(build)

    def op_abort(self) -> None:
        def build(node) -> cmd.Command:
            running = sorted(u for u, t in node.machine.state.tasks.items() if t["status"] == "running")
            upid = self.rng.choice(running) if running else "UPID:none:0:0:0:x:0:root@pam:"
            return cmd.AbortTask(request_id="", ts=node.wall(), upid=upid)
        self.call(build)

    # ---- guest tasks with a lock: snapshots, clone, migration (hypervisor/operations.py's handlers) ----
    def _guest_task(self, kind: str, intent_of: Callable[[object, dict | None], dict],
                    newid: bool = False, digest: bool = False) -> None:
        def build(node) -> cmd.Command:
            vmid, guest = self.known_guest(node)
            upid, starttime = self.upid(node, kind, vmid)
            return cmd.StartTask(request_id="", ts=node.wall(), node=self.owner(node, vmid), upid=upid,
                                 starttime=starttime, type=kind, vmid=vmid, intent=intent_of(node, guest),
                                 newid=self.vmid() if newid else None,
                                 digest=guest_digest(guest) if digest and guest else None)
        self.call(build)

    def _snapname(self, guest: dict | None) -> str:
        names = sorted((guest or {}).get("snapshots", {}))
        return self.rng.choice(names) if names and self.rng.random() < 0.85 else self.rng.choice(SNAPNAMES)

    def op_snapshot(self) -> None:
        vmstate = self.rng.random() < 0.3
        self._guest_task("qmsnapshot",
                         lambda node, guest: {"snapname": self.rng.choice(SNAPNAMES), "vmstate": int(vmstate)})

    def op_rollback(self) -> None:
        self._guest_task("qmrollback", lambda node, guest: {"snapname": self._snapname(guest)})

    def op_delsnapshot(self) -> None:
        self._guest_task("qmdelsnapshot", lambda node, guest: {"snapname": self._snapname(guest)})

    def op_clone(self) -> None:
        def intent(node, guest) -> dict:
            linked = int(bool((guest or {}).get("conf", {}).get("template")) and self.rng.random() < 0.5)
            return {"name": f"clone-c{self.cid}", **({"linked": 1} if linked else {})}
        self._guest_task("qmclone", intent, newid=True)

    def op_migrate(self) -> None:
        def intent(node, guest) -> dict:
            here = (guest or {}).get("node")
            targets = [n for n in self.world.serving() if n != here] or self.world.serving()
            online = int((guest or {}).get("status") == "running" or self.rng.random() < 0.2)
            local = int(self.rng.random() < 0.8)
            return {"target": self.rng.choice(targets), "online": online, **({"with-local-disks": 1} if local else {})}
        self._guest_task("qmigrate", intent, digest=self.rng.random() < 0.5)

    def op_config(self) -> None:
        """`PUT /nodes/{node}/qemu/{vmid}/config` as a `qmconfig` task: a disk to allocate, detach or destroy (with
        `force`, or an `unusedN` deleted), a NIC added, replaced or removed; hot-plugged into a running guest (or left
        pending, as its `hotplug` option says)."""
        def intent(node, guest) -> dict:
            conf = (guest or {}).get("conf", {})
            disks = sorted(k for k in conf if k.startswith("scsi"))
            nets = sorted(k for k in conf if k.startswith("net"))
            unused = sorted(k for k in conf if k.startswith("unused"))
            pick = self.rng.random()
            if nets and pick < 0.15:
                return {"set": {}, "delete": [self.rng.choice(nets)]}
            if pick < 0.35:
                mac = "BC:24:11:" + ":".join(f"{self.rng.randrange(256):02X}" for _ in range(3))
                return {"set": {f"net{self.rng.randrange(2)}": f"virtio={mac},bridge=vmbr0"}, "delete": []}
            if unused and pick < 0.45:
                return {"set": {}, "delete": [self.rng.choice(unused)]}
            if disks and pick < 0.65:
                return {"set": {}, "delete": [self.rng.choice(disks)], **({"force": 1} if pick < 0.52 else {})}
            return {"set": {f"scsi{self.rng.randrange(3)}": "local:1"}, "delete": []}
        self._guest_task("qmconfig", intent, digest=self.rng.random() < 0.3)

    def op_resize(self) -> None:
        self._guest_task("resize", lambda node, guest: {"disk": "scsi0", "size": self.rng.choice(["+1G", "4G"])},
                         digest=self.rng.random() < 0.3)

    def op_template(self) -> None:
        self._guest_task("qmtemplate", lambda node, guest: {})
