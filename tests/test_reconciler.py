"""The reconciler across a restart: a task the daemon had begun ends as interrupted, whatever the clocks say;
a task it never began runs."""

from __future__ import annotations

import os
from contextlib import asynccontextmanager

import trio

from engine import commands as c
from engine.node import Node, NodeSpec
from engine.reconciler import BEGUN_FILE, Outcome, Reconciler, TaskRun
from hypervisor.asyncio_bridge import AsyncioBridge
from hypervisor.operations import Operations, make_resolver
from hypervisor.qemu import QemuDriver
from tests.harness import free_ports

HOUR = 3600


def _spec(data_dir: str, port: int) -> NodeSpec:
    return NodeSpec(name="n1", data_dir=data_dir, ip="127.0.0.1", api_port=8006, raft_port=port,
                    peers={"n1": f"127.0.0.1:{port}"})


def _task(rid: str, upid: str, kind: str, starttime: int) -> c.StartTask:
    return c.StartTask(request_id=rid, ts=10.0, node="n1", upid=upid, starttime=starttime, type=kind, vmid=100)


async def _daemon(data_dir: str, port: int, reconciler, body) -> None:
    """One run of a node's daemon on `data_dir`: its log bridge and `reconciler(node)` while `body(node)` runs."""
    node = Node(_spec(data_dir, port), "ticket-key", "csrf-secret")
    try:
        async with trio.open_nursery() as nursery:
            node.bind_trio()
            await nursery.start(node.bridge.run)
            await nursery.start(reconciler(node).run)
            await body(node)
            nursery.cancel_scope.cancel()
    finally:
        node.close()


@asynccontextmanager
async def _node_with_guest(data_dir: str, port: int):
    """A bootstrapped node on `data_dir` with its log bridge running and VM 100 created (no reconciler yet):
    (node, nursery) until the block ends."""
    node = Node(_spec(data_dir, port), "ticket-key", "csrf-secret")
    try:
        async with trio.open_nursery() as nursery:
            node.bind_trio()
            await nursery.start(node.bridge.run)
            await node.bootstrap()
            await node.submit(c.CreateGuest(request_id="create", ts=9.0, node="n1", vmid=100, upid="U-create",
                                            starttime=9, config={"memory": 512}))
            yield node, nursery
            nursery.cancel_scope.cancel()
    finally:
        node.close()


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


async def _wait(node: Node, done) -> None:
    with trio.fail_after(20):
        while True:
            changed = node.state_changed()
            with node.read() as s:
                if done(s):
                    return
            with trio.move_on_after(0.05):
                await changed.wait()


async def test_a_begun_task_ends_interrupted_after_a_restart_and_a_waiting_one_runs(tmp_path):
    """First daemon: a stop task is begun (its handler hangs) and a start task of the same guest waits for it; the
    daemon dies. The stop task was accepted by a node whose clock is an hour ahead and the start task by one an
    hour behind: neither start time tells whether this daemon began them. The next daemon closes the stop task as
    interrupted without running it, and runs the start task."""
    [port] = free_ports(1)
    data = str(tmp_path)
    begun, ran = trio.Event(), []

    async def hang(run: TaskRun) -> Outcome:
        begun.set()
        await trio.sleep_forever()

    async def record(run: TaskRun) -> Outcome:
        ran.append(run.type)
        return Outcome(power={run.vmid: "running" if run.type == "qmstart" else "stopped"})

    async def daemon(handlers: dict, body) -> None:
        await _daemon(data, port, lambda node: Reconciler(node, handlers), body)

    async def first(node: Node) -> None:
        await node.bootstrap()
        await node.submit(c.CreateGuest(request_id="create", ts=9.0, node="n1", vmid=100, upid="U-create",
                                        starttime=9))
        await _wait(node, lambda s: s.tasks["U-create"]["status"] != "running")
        now = int(node.wall())
        await node.submit(_task("stop", "U-stop", "qmstop", now + HOUR))
        await node.submit(_task("start", "U-start", "qmstart", now - HOUR))
        with trio.fail_after(10):
            await begun.wait()
        with open(os.path.join(data, BEGUN_FILE)) as f:
            assert f.read() == "U-stop\n"  # on disk before the handler ran

    async def second(node: Node) -> None:
        await _wait(node, lambda s: all(s.tasks.get(u, {}).get("status") not in (None, "running")
                                        for u in ("U-stop", "U-start")))
        with node.read() as s:
            assert s.tasks["U-stop"]["exitstatus"] == "task interrupted - node restarted while it ran"
            assert s.tasks["U-start"]["exitstatus"] == "OK"
            assert s.guests[100]["status"] == "running"
        with trio.fail_after(10):  # the start's end is recorded once its finish has committed
            while _read(os.path.join(data, BEGUN_FILE)):
                await trio.sleep(0.01)

    await daemon({"qmcreate": record, "qmstop": hang, "qmstart": hang}, first)
    await daemon({"qmcreate": record, "qmstop": record, "qmstart": record}, second)
    assert ran == ["qmstart"]
    assert _read(os.path.join(data, BEGUN_FILE)) == ""  # both ended


async def test_a_config_change_that_destroys_volumes_or_plugs_devices_runs_again_after_a_restart(tmp_path):
    """Deleting `unusedN` destroys a volume: a daemon that dies while doing it runs the change again on its next
    start (freeing a volume that is gone already is done), so the config never keeps naming a volume that is gone.
    So does a change of a NIC or disk, which a running guest's QEMU may have taken already: a daemon killed once
    QEMU had unplugged `net0` closed the task as interrupted, the config kept `net0` and QEMU ran without it (found by
    the simulator, 5-node seed 43). A config change that neither destroys nor plugs anything ends as interrupted,
    as other tasks do."""
    [port] = free_ports(1)
    data = str(tmp_path)
    begun, ran = [trio.Event(), trio.Event(), trio.Event()], []

    async def hang(run: TaskRun) -> Outcome:
        begun[run.vmid - 100].set()
        await trio.sleep_forever()

    async def apply(run: TaskRun) -> Outcome:
        ran.append(run.upid)
        conf = {k: v for k, v in run.guest["conf"].items() if k not in run.intent["delete"]}
        return Outcome(configs={run.vmid: {**conf, **run.intent["set"]}})

    async def daemon(handler, body) -> None:
        await _daemon(data, port, lambda node: Reconciler(node, {"qmconfig": handler}), body)

    async def first(node: Node) -> None:
        await node.bootstrap()
        for vmid in (100, 101, 102):
            await node.submit(c.CreateGuest(request_id=f"create{vmid}", ts=9.0, node="n1", vmid=vmid,
                                            upid=f"U-create{vmid}", starttime=9,
                                            config={"unused0": f"local:{vmid}/vm-{vmid}-disk-0.qcow2",
                                                    "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0"}))
        now = int(node.wall())
        await node.submit(c.StartTask(request_id="free", ts=10.0, node="n1", upid="U-free", starttime=now,
                                      type="qmconfig", vmid=100, intent={"set": {}, "delete": ["unused0"]}))
        await node.submit(c.StartTask(request_id="set", ts=10.0, node="n1", upid="U-set", starttime=now,
                                      type="qmconfig", vmid=101, intent={"set": {"memory": 256}, "delete": []}))
        await node.submit(c.StartTask(request_id="unplug", ts=10.0, node="n1", upid="U-unplug", starttime=now,
                                      type="qmconfig", vmid=102, intent={"set": {}, "delete": ["net0"]}))
        with trio.fail_after(10):
            for event in begun:
                await event.wait()

    async def second(node: Node) -> None:
        await _wait(node, lambda s: all(s.tasks.get(u, {}).get("status") not in (None, "running")
                                        for u in ("U-free", "U-set", "U-unplug")))
        with node.read() as s:
            assert s.tasks["U-free"]["exitstatus"] == "OK" and "unused0" not in s.guests[100]["conf"]
            assert s.tasks["U-set"]["exitstatus"] == "task interrupted - node restarted while it ran"
            assert s.guests[101]["conf"].get("memory") is None
            assert s.tasks["U-unplug"]["exitstatus"] == "OK" and "net0" not in s.guests[102]["conf"]

    await daemon(hang, first)
    await daemon(apply, second)
    assert sorted(ran) == ["U-free", "U-unplug"]


async def test_clones_of_a_template_run_at_once(tmp_path):
    """Clones holding a template shared (Proxmox's `lock_config_shared`) run beside each other: every handler is
    inside before any may end (one at a time per guest, the first would wait forever for the others)."""
    [port] = free_ports(1)
    inside: list[str] = []
    release = trio.Event()

    async def clone(run: TaskRun) -> Outcome:
        inside.append(run.upid)
        await release.wait()
        return Outcome()

    node = Node(_spec(str(tmp_path), port), "ticket-key", "csrf-secret")
    try:
        async with trio.open_nursery() as nursery:
            node.bind_trio()
            await nursery.start(node.bridge.run)
            await nursery.start(Reconciler(node, {"qmclone": clone}).run)
            await node.bootstrap()
            await node.submit(c.CreateGuest(request_id="tpl", ts=9.0, node="n1", vmid=100, upid="U-tpl",
                                            starttime=9, config={"template": 1}))
            for n, upid in enumerate(["U-a", "U-b", "U-c"]):
                assert await node.submit(c.StartTask(request_id=upid, ts=10.0, node="n1", upid=upid, starttime=10,
                                                     type="qmclone", vmid=100, newid=201 + n)) == {"upid": upid}
            await _wait(node, lambda s: len(inside) == 3)
            release.set()
            await _wait(node, lambda s: not s.running_tasks)
            with node.read() as s:
                assert [s.tasks[u]["exitstatus"] for u in ("U-a", "U-b", "U-c")] == ["OK"] * 3
            nursery.cancel_scope.cancel()
    finally:
        node.close()


async def test_a_start_queued_behind_a_template_conversion_is_refused_when_it_runs(tmp_path):
    """A start accepted while the guest's template conversion waited to run (the guest was no template yet, so the
    log took it) runs once the conversion has ended: it refuses as qemu-server's `vm_start` does under the config
    lock, and the template stays stopped (found by the simulator, membership seed 36: the start ran the template's
    QEMU, which nothing could stop, so a drain never ended). The production handlers and QEMU driver run; the
    driver's binary does not exist, so that a start let through fails another way and leaves no process."""
    [port] = free_ports(1)
    data = str(tmp_path)
    driver = QemuDriver(os.path.join(data, "run", "qemu"), AsyncioBridge(), make_resolver({}),
                        qemu_binary=os.path.join(data, "no-qemu"))
    async with _node_with_guest(data, port) as (node, nursery):
        now = int(node.wall())
        await node.submit(_task("template", "U-template", "qmtemplate", now))
        await node.submit(_task("start", "U-start", "qmstart", now))  # accepted: no template yet
        await nursery.start(Reconciler(node, Operations(driver, {}).handlers()).run)
        await _wait(node, lambda s: not s.running_tasks)
        with node.read() as s:
            assert s.tasks["U-template"]["exitstatus"] == "OK"
            assert s.tasks["U-start"]["exitstatus"] == "you can't start a vm if it's a template"
            assert s.guests[100]["conf"]["template"] == 1
            assert s.guests[100]["status"] == "stopped"
        assert not driver.running(100)


async def test_a_task_interrupted_once_qemu_ran_records_the_guest_running(tmp_path):
    """A start whose daemon died after QEMU was launched is closed as interrupted by the next daemon, with the guest
    recorded as its host finds it: running (before, the log said stopped, and a config change applied at once
    what the running QEMU lacked: simulator, contention seed 53). A memory change then waits as pending."""
    [port] = free_ports(1)
    data = str(tmp_path)
    launched: set[int] = set()  # the host's QEMU processes: they outlive the daemon
    begun = trio.Event()

    async def launch_then_hang(run: TaskRun) -> Outcome:
        launched.add(run.vmid)
        begun.set()
        await trio.sleep_forever()

    async def daemon(body) -> None:
        await _daemon(data, port, lambda node: Reconciler(node, {"qmstart": launch_then_hang},
                                                          runs=launched.__contains__), body)

    async def first(node: Node) -> None:
        await node.bootstrap()
        await node.submit(c.CreateGuest(request_id="create", ts=9.0, node="n1", vmid=100, upid="U-create",
                                        starttime=9, config={"memory": 512}))
        await node.submit(_task("start", "U-start", "qmstart", int(node.wall())))
        with trio.fail_after(10):
            await begun.wait()

    async def second(node: Node) -> None:
        await _wait(node, lambda s: s.tasks.get("U-start", {}).get("status") == "stopped")
        with node.read() as s:
            assert s.tasks["U-start"]["exitstatus"] == "task interrupted - node restarted while it ran"
            assert s.guests[100]["status"] == "running"
        await node.submit(c.UpdateGuestConfig(request_id="mem", ts=11.0, node="n1", vmid=100, set={"memory": 1024}))
        with node.read() as s:
            assert s.guests[100]["conf"]["memory"] == 512
            assert s.guests[100]["pending"] == {"memory": 1024}

    await daemon(first)
    await daemon(second)


async def test_a_start_stopped_once_qemu_is_launched_ends_with_the_guest_running(tmp_path):
    """A task stop that comes while a start's QEMU boots does not cancel the start: the QEMU comes up whatever the
    daemon does, so the task ends with its outcome and the guest recorded running, and a NIC added then waits as
    pending instead of going into the config of a guest the log thought stopped (found by the simulator, 5-node seed
    40: the start ended "received interrupt", the NIC went into the config and not into QEMU). The production
    handlers run; the driver's launch is held until the stop was asked for."""
    [port] = free_ports(1)
    data = str(tmp_path)

    class Booting(QemuDriver):
        """QEMU launched at once, up only when the test says so."""

        def __init__(self) -> None:
            super().__init__(os.path.join(data, "run", "qemu"), AsyncioBridge(), make_resolver({}))
            self.launched: set[int] = set()
            self.launching, self.up = trio.Event(), trio.Event()

        def running(self, vmid: int) -> bool:
            return vmid in self.launched

        async def start(self, vmid: int, conf: dict, loadvm: str | None = None, incoming: str | None = None,
                        paused: bool = False) -> int:
            self.launched.add(vmid)
            self.launching.set()
            await self.up.wait()
            return 4242

    driver = Booting()
    async with _node_with_guest(data, port) as (node, nursery):
        await nursery.start(Reconciler(node, Operations(driver, {}).handlers(), runs=driver.running).run)
        await _wait(node, lambda s: not s.running_tasks)
        await node.submit(_task("start", "U-start", "qmstart", int(node.wall())))
        with trio.fail_after(10):
            await driver.launching.wait()
        await node.submit(c.AbortTask(request_id="stop", ts=11.0, upid="U-start"))
        await _wait(node, lambda s: s.tasks["U-start"]["abort"])
        await trio.sleep(0.2)  # the reconciler has seen the stop
        driver.up.set()
        await _wait(node, lambda s: not s.running_tasks)
        with node.read() as s:
            assert s.tasks["U-start"]["exitstatus"] == "OK"
            assert s.guests[100]["status"] == "running"
        await node.submit(c.UpdateGuestConfig(request_id="nic", ts=12.0, node="n1", vmid=100,
                                              set={"net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0"}))
        with node.read() as s:
            assert "net0" not in s.guests[100]["conf"]
            assert "net0" in s.guests[100]["pending"]
