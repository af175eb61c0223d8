"""Nodes joining and leaving, as the API does it (`api/compat/cluster_config.py`, `engine.node.Node`).

Join (`POST /cluster/config/join` on the new node, then `POST /cluster/config/nodes/{node}` on a member):
the new node starts an empty log whose peers (its `cluster.json`) are the members the contact lists plus
itself; the contact's process runs the production `Node.change_membership('add')`, then `RegisterNode`
is submitted. A failed join is retried by the admin with another contact.

Leave (`DELETE /cluster/config/nodes/{node}`): the node is drained first (its guests stopped and
migrated offline to the other nodes, as an admin must: `RemoveNode` is refused while it owns guests or runs
tasks), powered off (Proxmox's documented order: shut the node down, then `pvecm delnode`), then a member
submits `RemoveNode` and `change_membership('remove')`.
"""

from __future__ import annotations

import dataclasses

import trio

from engine import commands as cmd
from engine.bridge import NoQuorum
from engine.node import save_peers
from engine.upid import Upid

ADMIN_RETRY = 2.0


class Membership:
    def __init__(self, world, plan: list[tuple[float, str, str]]) -> None:
        self.world = world
        self.loop = world.loop
        self.rng = world.membership_rng
        self.busy = 0  # operations not finished yet (the cluster has not converged while any remains)
        self.done: list[str] = []
        self.finished_at = 0.0  # when the last operation ended (the convergence bound starts after it)
        self.seq = 0
        # Operations on different nodes overlap (two admins, or one who does not wait: a join while another node
        # drains, two drains at once); operations on one node wait for each other (a leave of a node whose
        # join is still retrying would race it).
        self.busy = len(plan)
        self.working: set[str] = set()
        self.waiting: dict[str, list[str]] = {}
        for at, op, name in sorted(plan):
            self.loop.at(at, self._ready, op, name)

    def _ready(self, op: str, name: str) -> None:
        if name in self.working:
            self.waiting.setdefault(name, []).append(op)
            return
        self.working.add(name)
        (self.join if op == "join" else self.leave)(name)

    # ---- helpers -------------------------------------------------------------------------------
    def _contact(self, avoid: str) -> object | None:
        up = [n for n in self.world.serving() if n != avoid and self.world.nodes[n].up]
        return self.world.nodes[self.rng.choice(up)] if up else None

    def _change(self, node, op: str, name: str, then, failed) -> None:
        """`engine.node.Node.change_membership` on `node`'s process (the request dies with the process)."""
        process = node.process

        async def change() -> None:
            try:
                await process.change_membership(op, name)
            except NoQuorum:  # no commit within 30 s: the admin tries again
                self.world.trace(f"membership {op} {name} via {node.name}: failed")
                failed()
                return
            except trio.Cancelled:  # the contact died with the request
                self.world.trace(f"membership {op} {name} via {node.name}: connection reset")
                failed()
                raise
            self.world.trace(f"membership {op} {name} via {node.name}: ok")
            then()
        if process.nursery is None:
            self.loop.soon(failed)
        else:
            process.nursery.start_soon(change)

    def _submit(self, command: cmd.Command, then, failed, avoid: str = "") -> None:
        """An admin request through a member's API (one attempt; `failed` on no answer or rejection)."""
        node = self._contact(avoid)
        if node is None:
            failed(False)
            return
        self.world.request_ts.setdefault(command.request_id, command.ts)

        def answered(result, why) -> None:
            if result is None or "ok" not in result:
                self.world.trace(f"membership {command.TYPE} {command.request_id}: "
                                 f"{why or result['error']['message'][:60]}")
                failed(result is not None)
            else:
                then()
        node.request(dataclasses.replace(command, ts=node.wall()), answered)

    # ---- join ----------------------------------------------------------------------------------
    def join(self, name: str) -> None:
        world = self.world
        contact = self._contact(name)
        if contact is None:
            self.loop.after(ADMIN_RETRY, self.join, name)
            return
        node = world.nodes[name]
        if contact.name not in contact.machine.state.nodes:
            # A contact that has not caught up lists no members: joining with that list makes a one-node
            # cluster of its own (seed 18 with --membership did). The API does not check this; see README.
            self.loop.after(ADMIN_RETRY, self.join, name)
            return
        if name not in world.names:  # join_cluster: follow the cluster's log, with its members as peers
            members = sorted(contact.machine.state.nodes)
            save_peers(node.dir, {n: n for n in set(members) | {name}})
            world.names.append(name)
            world.names.sort()
            world.trace(f"join {name} peers {','.join(node.peers)}")
            world.restart(name)
        self.seq += 1
        rid = f"admin-join-{name}-{self.seq}"

        def register() -> None:
            command = cmd.RegisterNode(request_id=rid, ts=0.0, name=name, ip="10.0.0.1", api_port=8006,
                                     raft_addr=name)
            self._submit(command, joined, retry, avoid=name)

        def joined() -> None:
            world.joined.add(name)
            self._finished("join", name)

        def retry(*_) -> None:
            self.loop.after(ADMIN_RETRY, self.join, name)

        if name in contact.machine.state.nodes:  # add_node: the raft change only if not yet a member
            register()
        else:
            self._change(contact, "add", name, register, retry)

    # ---- leave ---------------------------------------------------------------------------------
    def leave(self, name: str) -> None:
        world = self.world
        world.joined.discard(name)  # no new guests or requests for it
        world.leaving.add(name)
        world.trace(f"leave {name}: draining")
        self._drain(name)

    def _drain(self, name: str) -> None:
        world = self.world
        node = world.nodes[name]
        targets = [n for n in world.serving() if n != name]
        if not node.up or not targets:
            self.loop.after(ADMIN_RETRY, self._drain, name)
            return
        state = node.machine.state
        owned = sorted(v for v, g in state.guests.items() if g["node"] == name)
        if not owned:  # tasks still running on it: `RemoveNode` refuses, and the node is powered on again
            self._remove(name)
            return
        busy = {t.get("vmid") for t in state.tasks.values() if t["status"] == "running"}
        for vmid in owned:
            guest = state.guests[vmid]
            if vmid in busy:
                continue
            if guest["conf"].get("lock"):  # a client's lock with no task behind it: the admin's `qm unlock`
                if guest["conf"]["lock"] == "migrate":  # maybe an interrupted migration: no copy may run elsewhere
                    for other in sorted(world.nodes):
                        if other != name and world.nodes[other].qemu.crash(vmid, counted=False):
                            world.trace(f"admin stopped a copy of VM {vmid} running on {other}")
                self.seq += 1
                node.request(cmd.UnlockGuest(request_id=f"admin-unlock-{name}-{self.seq}", ts=node.wall(),
                                                   vmid=vmid), lambda result, why: None)
                continue
            kind = "qmstop" if guest.get("status") == "running" else "qmigrate"
            self.world.upids += 1
            upid = str(Upid(name, 999, self.world.upids, int(node.wall()), kind, str(vmid), "root@pam"))
            intent = {"target": self.rng.choice(targets)} if kind == "qmigrate" else {}
            command = cmd.StartTask(request_id=f"admin-{upid}", ts=node.wall(), node=name, upid=upid,
                                    starttime=int(node.wall()), type=kind, vmid=vmid,
                                    intent=intent)
            node.request(command, lambda result, why: None)
        self.loop.after(ADMIN_RETRY, self._drain, name)

    def _remove(self, name: str) -> None:
        world = self.world
        node = world.nodes[name]
        world.powered_off.add(name)
        node.stop("clean")
        self.seq += 1
        rid = f"admin-remove-{name}-{self.seq}"

        def raft_remove() -> None:
            contact = self._contact(name)
            if contact is None:
                self.loop.after(ADMIN_RETRY, raft_remove)
                return
            self._change(contact, "remove", name, removed, lambda: self.loop.after(ADMIN_RETRY, raft_remove))

        def removed() -> None:
            world.names.remove(name)
            world.leaving.discard(name)
            self._finished("leave", name)

        def failed(rejected: bool) -> None:
            if not rejected:  # no answer: the same request again (its id makes it happen once)
                self.loop.after(ADMIN_RETRY, submit)
                return
            # e.g. a guest landed on it meanwhile: power it on and drain again
            world.powered_off.discard(name)
            world.restart(name)
            self.loop.after(ADMIN_RETRY, self._drain, name)

        def submit() -> None:
            self._submit(cmd.RemoveNode(request_id=rid, ts=0.0, name=name), raft_remove, failed, avoid=name)
        submit()

    def _finished(self, op: str, name: str) -> None:
        self.busy -= 1
        self.done.append(f"{op} {name}")
        self.finished_at = self.loop.now
        self.world.trace(f"membership {op} {name} done")
        self.working.discard(name)
        if self.waiting.get(name):
            self._ready(self.waiting[name].pop(0), name)
