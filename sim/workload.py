"""API clients: they read a node's local state, send requests to a random node, and retry with the same request id
on any failure (503, timeout, a dead node), as real clients and proxies do.

A request is a call of the API's services (`api/services/`: what the REST handler of the same request calls), made
once from what the client saw on the first node it asked and repeated unchanged on each retry. Most run as
root@pam; config edits and token requests run as one of the access workload's users too, so that the services'
privilege checks refuse or allow them by the ACLs of the moment.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from api.context import Ctx
from api.services import cluster, guests
from api.services import tasks as task_service
from engine import commands as cmd
from engine.errors import Rejection
from engine.state import guest_digest
from sim.access_ops import ACCESS_OPS, POOLS, USERS, AccessOps
from sim.node import ROOT, Call, Reply

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
    def call(self, build: Callable[[object], Call], then: Callable[[Reply], None] | None = None,
             user: str = ROOT) -> None:
        """One request by `user`: `build(node)` makes it from the first node's view; a failure (503, a dead node)
        repeats it, with the same request id, on a random node. An answer backed by the log is acked (the
        invariants compare it with every replica's request memory); `then` gets the final answer."""
        self.seq += 1
        rid = f"c{self.cid}-{self.seq}"
        world = self.world
        world.pending[rid] = True
        made: list[Call] = []

        def attempt() -> None:
            node = world.nodes[self.rng.choice(world.serving())]
            if not node.up:
                world.loop.after(self.rng.uniform(0.5, 1.5), attempt)  # connection refused
                return
            if not made:
                made.append(build(node))
            node.request(rid, made[0], answered, user)

        def answered(reply: Reply | None, why: str) -> None:
            if reply is None:
                world.trace(f"client retry {rid} {why}")
                world.loop.after(self.rng.uniform(0.5, 1.5), attempt)
                return
            world.pending.pop(rid, None)
            if reply.logged is not None:
                world.checker.ack(reply.command_id, reply.logged)
            else:
                world.checker.unlogged += 1
            world.trace(f"client ack {rid} {'ok' if reply.error is None else reply.error['status']}")
            if then is not None:
                then(reply)

        attempt()

    def user(self) -> str:
        """root@pam mostly; one of the access workload's users (who may hold ACLs, or not exist) otherwise."""
        return self.rng.choice(USERS) if self.rng.random() < 0.3 else ROOT

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

    # ---- operations ----------------------------------------------------------------------------
    def op_create(self, vmid: int | None = None) -> None:
        """`POST /nodes/{node}/qemu`: MACs, smbios uuid and vmgenid are the service's; into a pool sometimes (in the
        same command), which may not exist."""
        vmid = vmid if vmid is not None else self.vmid()
        config = {"name": f"vm{vmid}-c{self.cid}", "memory": self.rng.choice([512, 1024, 2048]),
                  "cores": self.rng.randint(1, 4)}
        if self.rng.random() < 0.3:
            config["scsi0"] = "local:1"
        if self.rng.random() < 0.3:
            config["net0"] = "virtio,bridge=vmbr0"
        start = self.rng.random() < 0.3
        pool = self.rng.choice(POOLS) if self.rng.random() < 0.15 else None
        target = self.rng.choice(self.world.serving())
        self.call(lambda node: lambda ctx: guests.create(ctx, target, vmid, dict(config), pool=pool, start=start))

    def op_reserve_create(self) -> None:
        """`GET /cluster/nextid`, then a create with it: two clients may be offered the same VMID (the race)."""
        def then(reply: Reply) -> None:
            if reply.error is None:
                self.op_create(reply.value)
        self.call(lambda node: cluster.next_id, then)

    def op_reserve(self) -> None:
        """A VMID reservation with a lease. No interface reserves (Proxmox's nextid does not, nor does gpve's): the
        engine command is sent as it is, to exercise the reservations clones and creates check."""
        vmid = self.vmid() if self.rng.random() < 0.5 else None

        async def reserve(ctx: Ctx) -> dict:
            return await ctx.node.submit(cmd.ReserveVmid(request_id=ctx.command_id, ts=ctx.now, user=ctx.user,
                                                         vmid=vmid, lease=10.0))
        self.call(lambda node: reserve)

    def _update(self, with_digest: bool) -> None:
        """`PUT …/config` of one key, by root or a user whose ACLs may allow it (memory: VM.Config.Memory): on a
        running guest `memory` and `cores` wait as pending changes, `description` and `hotplug` apply at once; one
        in seven drops a pending change (`revert`)."""
        key = self.rng.choice(["memory", "cores", "description", "hotplug"])
        value = {"description": f"edited by c{self.cid} #{self.seq}",
                 "hotplug": self.rng.choice(["0", "1", "network,disk"])}.get(key) or self.rng.randint(1, 64)
        revert = self.rng.random() < 1 / 7

        def build(node) -> Call:
            vmid, guest = self.known_guest(node)
            digest = guest_digest(guest) if with_digest and guest else None
            owner = self.owner(node, vmid)
            changes, reverted = ({}, [key]) if revert else ({key: value}, [])
            return lambda ctx: guests.update_config(ctx, owner, vmid, changes, [], revert=reverted, digest=digest)
        self.call(build, user=self.user())

    def op_update(self) -> None:
        self._update(False)

    def op_update_digest(self) -> None:
        self._update(True)

    def op_delete(self) -> None:
        """`DELETE /nodes/{node}/qemu/{vmid}`: a destroy task on the owning node."""
        self._on_guest(lambda owner, vmid, guest: lambda ctx: guests.destroy(ctx, owner, vmid))

    def op_lock(self) -> None:
        """`PUT …/config` with `lock` (root's only, as in Proxmox): refused while another lock is held."""
        lock = self.rng.choice(LOCKS)
        chosen: dict[str, int] = {}

        def build(node) -> Call:
            vmid = chosen.setdefault("vmid", self.known_guest(node)[0])
            owner = self.owner(node, vmid)
            return lambda ctx: guests.update_config(ctx, owner, vmid, {"lock": lock}, [])

        def then(reply: Reply) -> None:
            if reply.error is None:
                self.held[chosen["vmid"]] = lock
        self.call(build, then)

    def op_unlock(self) -> None:
        """The client's own lock off again: it reads the config (after a read barrier, so its lock shows) and deletes
        `lock` with `skiplock` (root's) and that config's digest, so that a lock someone else took meanwhile
        stays."""
        if not self.held:
            return
        vmid = self.rng.choice(sorted(self.held))
        lock = self.held.pop(vmid)

        async def unlock(ctx: Ctx) -> None:
            await ctx.node.read_barrier()
            with ctx.node.read() as s:
                guest = s.guests.get(vmid)
                guest = {**guest, "conf": dict(guest["conf"])} if guest else None
            if guest is None or guest["conf"].get("lock") != lock:
                raise Rejection(409, f"VM {vmid} does not hold lock '{lock}' any more")  # the client's own check
            await guests.update_config(ctx, guest["node"], vmid, {}, ["lock"], digest=guest_digest(guest),
                                       skiplock=True)
        self.call(lambda node: unlock)

    def op_task(self) -> None:
        self._power(self.rng.choice(["qmstart", "qmstop", "qmshutdown"]))

    def op_power(self) -> None:
        self._power(self.rng.choice(POWER_KINDS))

    def _power(self, kind: str) -> None:
        """`POST …/status/{start,stop,shutdown,reboot,reset,suspend,resume}`."""
        params = {"timeout": 10} if kind in ("qmshutdown", "qmreboot") else {}
        self._on_guest(lambda owner, vmid, guest: lambda ctx: guests.power(ctx, owner, vmid, kind, params))

    def op_abort(self) -> None:
        """`DELETE /nodes/{node}/tasks/{upid}` of a running task (or of one no node has)."""
        def build(node) -> Call:
            running = sorted(u for u, t in node.machine.state.tasks.items() if t["status"] == "running")
            upid = self.rng.choice(running) if running else "UPID:none:0:0:0:x:0:root@pam:"
            where = node.machine.state.tasks[upid]["node"] if running else node.name
            return lambda ctx: task_service.stop(ctx, where, upid)
        self.call(build)

    # ---- guest tasks with a lock: snapshots, clone, migration (hypervisor/operations.py's handlers) ----
    def _on_guest(self, *makes: Callable[[str, int, dict | None], Call]) -> None:
        """A request about a guest the client sees (or a VMID of the pool), for the node it sees it on:
        `make(owner, vmid, guest)` (`guest`: the client's view) chooses its parameters and returns it. Several
        `makes` are sent at once, all about the guest the first request built chose."""
        chosen: list[int] = []

        def request(make: Callable[[str, int, dict | None], Call]) -> Callable[[object], Call]:
            def build(node) -> Call:
                if chosen:
                    vmid, guest = chosen[0], node.machine.state.guests.get(chosen[0])
                else:
                    vmid, guest = self.known_guest(node)
                    chosen.append(vmid)
                return make(self.owner(node, vmid), vmid, guest)
            return build
        for make in makes:
            self.call(request(make))

    def _snapname(self, guest: dict | None) -> str:
        names = sorted((guest or {}).get("snapshots", {}))
        return self.rng.choice(names) if names and self.rng.random() < 0.85 else self.rng.choice(SNAPNAMES)

    def _digest(self, guest: dict | None, chance: float) -> str | None:
        """The digest of the client's view (often stale), sent with the given chance."""
        return guest_digest(guest) if guest and self.rng.random() < chance else None

    def op_snapshot(self) -> None:
        def make(owner: str, vmid: int, guest: dict | None) -> Call:
            snapname, vmstate = self.rng.choice(SNAPNAMES), self.rng.random() < 0.3
            return lambda ctx: guests.snapshot(ctx, owner, vmid, snapname, vmstate=vmstate)
        self._on_guest(make)

    def op_rollback(self) -> None:
        def make(owner: str, vmid: int, guest: dict | None) -> Call:
            snapname = self._snapname(guest)
            return lambda ctx: guests.rollback(ctx, owner, vmid, snapname)
        self._on_guest(make)

    def op_delsnapshot(self) -> None:
        def make(owner: str, vmid: int, guest: dict | None) -> Call:
            snapname = self._snapname(guest)
            return lambda ctx: guests.delete_snapshot(ctx, owner, vmid, snapname)
        self._on_guest(make)

    def op_clone(self) -> None:
        """`POST …/clone` to a VMID of the pool: linked for half the clones of a template. Two times in five a burst
        of two or three clones of one guest at once, as Terraform makes several VMs from one template (a guest that
        does not run is held shared by all of them), and half of those with a request that needs the guest alone
        at once behind them (a config edit, a destroy or a start: refused while a clone holds it)."""
        def make(owner: str, vmid: int, guest: dict | None) -> Call:
            template = bool((guest or {}).get("conf", {}).get("template"))
            full, newid = not (template and self.rng.random() < 0.5), self.vmid()
            return lambda ctx: guests.clone(ctx, owner, vmid, newid, full=full, name=f"clone-c{self.cid}")

        def alone(owner: str, vmid: int, guest: dict | None) -> Call:
            return self.rng.choice([
                lambda ctx: guests.update_config(ctx, owner, vmid, {"description": f"c{self.cid}"}, []),
                lambda ctx: guests.destroy(ctx, owner, vmid),
                lambda ctx: guests.power(ctx, owner, vmid, "qmstart", {})])
        if self.rng.random() >= 0.4:
            self._on_guest(make)
            return
        self._on_guest(*[make] * self.rng.choice((2, 3)), *([alone] if self.rng.random() < 0.5 else []))

    def op_migrate(self) -> None:
        """`POST …/migrate`: online when the client sees the guest running (and sometimes otherwise), with local
        disks four times in five."""
        def make(owner: str, vmid: int, guest: dict | None) -> Call:
            here = (guest or {}).get("node")
            target = self.rng.choice([n for n in self.world.serving() if n != here] or self.world.serving())
            online = (guest or {}).get("status") == "running" or self.rng.random() < 0.2
            params = {"online": int(online), **({"with-local-disks": 1} if self.rng.random() < 0.8 else {})}
            return lambda ctx: guests.migrate(ctx, owner, vmid, target, params)
        self._on_guest(make)

    def op_config(self) -> None:
        """`PUT` or `POST …/config` as a `qmconfig` task, waited for (PUT) or not (POST): a disk to allocate, detach
        or destroy (with `force`, or an `unusedN` deleted), a NIC added, replaced or removed; hot-plugged into a
        running guest (or left pending, as its `hotplug` option says)."""
        def make(owner: str, vmid: int, guest: dict | None) -> Call:
            conf = (guest or {}).get("conf", {})
            disks = sorted(k for k in conf if k.startswith("scsi"))
            nets = sorted(k for k in conf if k.startswith("net"))
            unused = sorted(k for k in conf if k.startswith("unused"))
            changes: dict = {}
            delete: list[str] = []
            force = False
            pick = self.rng.random()
            if nets and pick < 0.15:
                delete = [self.rng.choice(nets)]
            elif pick < 0.35:
                mac = "BC:24:11:" + ":".join(f"{self.rng.randrange(256):02X}" for _ in range(3))
                changes = {f"net{self.rng.randrange(2)}": f"virtio={mac},bridge=vmbr0"}
            elif unused and pick < 0.45:
                delete = [self.rng.choice(unused)]
            elif disks and pick < 0.65:
                delete, force = [self.rng.choice(disks)], pick < 0.52
            else:
                changes = {f"scsi{self.rng.randrange(3)}": "local:1"}
            background, digest = self.rng.random() < 0.5, self._digest(guest, 0.3)
            return lambda ctx: guests.update_config(ctx, owner, vmid, changes, delete, digest=digest,
                                                    background=background, force=force)
        self._on_guest(make)

    def op_resize(self) -> None:
        def make(owner: str, vmid: int, guest: dict | None) -> Call:
            size, digest = self.rng.choice(["+1G", "4G"]), self._digest(guest, 0.3)
            return lambda ctx: guests.resize(ctx, owner, vmid, "scsi0", size, digest=digest)
        self._on_guest(make)

    def op_template(self) -> None:
        self._on_guest(lambda owner, vmid, guest: lambda ctx: guests.template(ctx, owner, vmid))
