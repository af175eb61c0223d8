"""Nodes joining and leaving through the cluster service (`api/services/cluster.py`, what `/cluster/config` calls).

Join (`POST /cluster/config/join` on the new node, which asks a member `POST /cluster/config/nodes/{node}`): the
member's `cluster.admit` starts the admission in its process (the Raft change, then `RegisterNode`) and answers
the member list; the new node then follows the cluster's log with those members (and itself) as peers, as
`cluster.join` does (its certificate fetch, login and HTTPS have no simulated counterpart, so the new node's side
is played here: `cluster.json`, then a restart). An admission that does not end (the member died, no quorum
for 30 s) is asked for again, of another member.

Leave (`DELETE /cluster/config/nodes/{node}`): the node is drained first (its guests stopped and migrated offline
to the other nodes through the guest services, as an admin must: the removal is refused while it owns guests or
runs tasks), powered off once the other members keep a quorum (Proxmox's documented order: shut the node down,
then `pvecm delnode`), then a member's `cluster.remove_node` takes it off the node list and the Raft membership; a
lost answer is retried with the same request id, which finishes the Raft change.
"""

from __future__ import annotations

from api.services import cluster, guests
from engine.node import save_peers
from sim.node import Reply

ADMIN_RETRY = 2.0
ADMISSION_SECONDS = 40.0  # the member's Raft change gives up after 30 s without quorum


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

    def _registered(self, name: str) -> bool:
        """Some member's view has `name` registered (the admission's last step)."""
        return any(n.up and name in n.machine.state.nodes for n in self.world.nodes.values() if n.name != name)

    # ---- join ----------------------------------------------------------------------------------
    def join(self, name: str) -> None:
        world = self.world
        contact = self._contact(name)
        if contact is None:
            self.loop.after(ADMIN_RETRY, self.join, name)
            return
        self.seq += 1
        rid = f"admin-join-{name}-{self.seq}"

        def answered(reply: Reply | None, why: str) -> None:
            if reply is None or reply.error is not None:  # e.g. 503: the member has not caught up yet
                world.trace(f"membership join {name} via {contact.name}: {why or reply.error['message'][:60]}")
                self.loop.after(ADMIN_RETRY, self.join, name)
                return
            if name not in world.names:  # cluster.join: follow the cluster's log, with its members as peers
                members = {n["name"]: n["raft_addr"] for n in reply.value["nodelist"]}
                save_peers(world.nodes[name].dir, {**members, name: name})
                world.names.append(name)
                world.names.sort()
                world.trace(f"join {name} peers {','.join(sorted(members))}")
                world.restart(name)
            self._await_admission(name, ADMISSION_SECONDS)

        contact.request(rid, lambda ctx: self._admit(ctx, name), answered)

    @staticmethod
    async def _admit(ctx, name: str) -> dict:
        return cluster.admit(ctx, name, raft_addr=name, ip="10.0.0.1", api_port=8006, fingerprint="")

    def _await_admission(self, name: str, left: float) -> None:
        if self._registered(name):
            self.world.joined.add(name)
            self._finished("join", name)
        elif left <= 0:  # the member died or lost quorum meanwhile: ask again
            self.world.trace(f"membership join {name}: not admitted, asking again")
            self.join(name)
        else:
            self.loop.after(ADMIN_RETRY, self._await_admission, name, left - ADMIN_RETRY)

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
        if not owned:  # tasks still running on it: the removal refuses, and the node is powered on again
            if self._quorum_without(name):
                self._remove(name)
            else:
                self.loop.after(ADMIN_RETRY, self._drain, name)
            return
        busy = {t.get("vmid") for t in state.tasks.values() if t["status"] == "running"}
        for vmid in owned:
            guest = state.guests[vmid]
            if vmid in busy:
                continue
            self.seq += 1
            rid = f"admin-drain-{name}-{self.seq}"
            if guest["conf"].get("lock"):  # a client's lock with no task behind it: the admin's `qm unlock`
                if guest["conf"]["lock"] == "migrate":  # maybe an interrupted migration: no copy may run elsewhere
                    for other in sorted(world.nodes):
                        if other != name and world.nodes[other].qemu.crash(vmid, counted=False):
                            world.trace(f"admin stopped a copy of VM {vmid} running on {other}")
                node.request(rid, lambda ctx, v=vmid: guests.update_config(ctx, name, v, {}, ["lock"], skiplock=True),
                             _ignored)
            elif guest.get("status") == "running":
                node.request(rid, lambda ctx, v=vmid: guests.power(ctx, name, v, "qmstop", {}), _ignored)
            else:
                target = self.rng.choice(targets)
                node.request(rid, lambda ctx, v=vmid, t=target: guests.migrate(ctx, name, v, t, {}), _ignored)
        self.loop.after(ADMIN_RETRY, self._drain, name)

    def _quorum_without(self, name: str) -> bool:
        """Whether the Raft members (in the leader's view) left once `name` is powered off too keep a majority: the
        admin's look at `pvecm status` before shutting a node down. Without it two leaves of a four-member cluster
        (a join still retrying) powered off two members, and neither removal could commit (membership seed 43 with
        the clone bursts)."""
        leader = self.world.leader()
        if leader is None:
            return False
        members = {leader, *(n.id for n in self.world.nodes[leader].replog.otherNodes)}
        left = members - self.world.powered_off - {name}
        return 2 * len(left) > len(members)

    def _remove(self, name: str) -> None:
        world = self.world
        node = world.nodes[name]
        world.powered_off.add(name)
        node.stop("clean")
        self.seq += 1
        rid = f"admin-remove-{name}-{self.seq}"

        def answered(reply: Reply | None, why: str) -> None:
            if reply is None:  # no answer: the same request again (its id makes the removal happen once)
                world.trace(f"membership remove {name}: {why}")
                self.loop.after(ADMIN_RETRY, submit)
            elif reply.error is not None:  # e.g. a guest landed on it meanwhile: power it on and drain again
                world.trace(f"membership remove {name}: {reply.error['message'][:60]}")
                world.powered_off.discard(name)
                world.restart(name)
                self.loop.after(ADMIN_RETRY, self._drain, name)
            else:
                world.names.remove(name)
                world.leaving.discard(name)
                self._finished("leave", name)

        def submit() -> None:
            contact = self._contact(name)
            if contact is None:
                self.loop.after(ADMIN_RETRY, submit)
                return
            contact.request(rid, lambda ctx: cluster.remove_node(ctx, name), answered)
        submit()

    def _finished(self, op: str, name: str) -> None:
        self.busy -= 1
        self.done.append(f"{op} {name}")
        self.finished_at = self.loop.now
        self.world.trace(f"membership {op} {name} done")
        self.working.discard(name)
        if self.waiting.get(name):
            self._ready(self.waiting[name].pop(0), name)


def _ignored(reply: Reply | None, why: str) -> None:
    """The drain looks at the state again every ADMIN_RETRY seconds; a request's answer tells it nothing more."""
