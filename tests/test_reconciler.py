"""The reconciler across a restart: a task the daemon had begun ends as interrupted, whatever the clocks say;
a task it never began runs."""

from __future__ import annotations

import os

import trio

from engine import commands as c
from engine.node import Node, NodeSpec
from engine.reconciler import BEGUN_FILE, Outcome, Reconciler, TaskRun
from tests.harness import free_ports

HOUR = 3600


def _spec(data_dir: str, port: int) -> NodeSpec:
    return NodeSpec(name="n1", data_dir=data_dir, ip="127.0.0.1", api_port=8006, raft_port=port,
                    peers={"n1": f"127.0.0.1:{port}"})


def _task(rid: str, upid: str, kind: str, starttime: int) -> c.StartTask:
    return c.StartTask(request_id=rid, ts=10.0, node="n1", upid=upid, starttime=starttime, type=kind, vmid=100)


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
        node = Node(_spec(data, port), "ticket-key", "csrf-secret")
        try:
            async with trio.open_nursery() as nursery:
                node.bind_trio()
                await nursery.start(node.bridge.run)
                await nursery.start(Reconciler(node, handlers).run)
                await body(node)
                nursery.cancel_scope.cancel()
        finally:
            node.close()

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


async def test_a_config_change_that_destroys_volumes_runs_again_after_a_restart(tmp_path):
    """Deleting `unusedN` destroys a volume: a daemon that dies while doing it runs the change again on its next
    start (freeing a volume that is gone already is done), so the config never keeps naming a volume that is gone.
    A config change that destroys nothing ends as interrupted, as other tasks do."""
    [port] = free_ports(1)
    data = str(tmp_path)
    begun, ran = [trio.Event(), trio.Event()], []

    async def hang(run: TaskRun) -> Outcome:
        begun[run.vmid - 100].set()
        await trio.sleep_forever()

    async def apply(run: TaskRun) -> Outcome:
        ran.append(run.upid)
        conf = {k: v for k, v in run.guest["conf"].items() if k not in run.intent["delete"]}
        return Outcome(configs={run.vmid: {**conf, **run.intent["set"]}})

    async def daemon(handler, body) -> None:
        node = Node(_spec(data, port), "ticket-key", "csrf-secret")
        try:
            async with trio.open_nursery() as nursery:
                node.bind_trio()
                await nursery.start(node.bridge.run)
                await nursery.start(Reconciler(node, {"qmconfig": handler}).run)
                await body(node)
                nursery.cancel_scope.cancel()
        finally:
            node.close()

    async def first(node: Node) -> None:
        await node.bootstrap()
        for vmid in (100, 101):
            await node.submit(c.CreateGuest(request_id=f"create{vmid}", ts=9.0, node="n1", vmid=vmid,
                                            upid=f"U-create{vmid}", starttime=9,
                                            config={"unused0": f"local:{vmid}/vm-{vmid}-disk-0.qcow2"}))
        now = int(node.wall())
        await node.submit(c.StartTask(request_id="free", ts=10.0, node="n1", upid="U-free", starttime=now,
                                      type="qmconfig", vmid=100, intent={"set": {}, "delete": ["unused0"]}))
        await node.submit(c.StartTask(request_id="set", ts=10.0, node="n1", upid="U-set", starttime=now,
                                      type="qmconfig", vmid=101, intent={"set": {"memory": 256}, "delete": []}))
        with trio.fail_after(10):
            for event in begun:
                await event.wait()

    async def second(node: Node) -> None:
        await _wait(node, lambda s: all(s.tasks.get(u, {}).get("status") not in (None, "running")
                                        for u in ("U-free", "U-set")))
        with node.read() as s:
            assert s.tasks["U-free"]["exitstatus"] == "OK" and "unused0" not in s.guests[100]["conf"]
            assert s.tasks["U-set"]["exitstatus"] == "task interrupted - node restarted while it ran"
            assert s.guests[101]["conf"].get("memory") is None

    await daemon(hang, first)
    await daemon(apply, second)
    assert ran == ["U-free"]
