"""The services in process: a real single node (engine, log, bridge) and the rules every interface calls,
without HTTP and without QEMU."""

from __future__ import annotations

import pytest
import trio

from api.context import Ctx
from api.errors import ApiError
from api.services import access, cluster, guests, tasks
from engine import access as acc
from engine import commands as cmd
from engine.errors import Rejection
from engine.node import Node, NodeSpec
from tests.harness import free_ports


@pytest.fixture
async def node(tmp_path, nursery):
    [port] = free_ports(1)
    spec = NodeSpec("n1", str(tmp_path), "127.0.0.1", 8006, port, {"n1": f"127.0.0.1:{port}"})
    n = Node(spec, "ticket-key-pem", "csrf-secret")
    n.bind_trio()
    await nursery.start(n.bridge.run)
    with trio.fail_after(20):
        await n.bootstrap()
    yield n
    n.close()


def caller(node: Node, user: str = "root@pam", request: str = "r1") -> Ctx:
    return Ctx(node, user, request, now=node.wall())


async def test_create_with_a_pool_is_one_command(node):
    ctx = caller(node)
    await node.submit(acc.SetPool(request_id="p", ts=node.wall(), poolid="web", create=True))
    await guests.create(ctx, "n1", 100, {"name": "a"}, pool="web")
    with node.read() as s:
        assert s.access["pool"]["web"]["vms"] == [100] and 100 in s.guests
        # one request id, one command: a crash cannot fall between the guest and its pool membership
        assert [r for r in s.requests if r.startswith("root@pam/")] == ["root@pam/r1"]


async def test_create_into_a_missing_pool_is_refused_and_leaves_nothing(node):
    with pytest.raises(ApiError) as exc:
        await guests.create(caller(node), "n1", 101, {"name": "b"}, pool="nope")
    assert exc.value.status == 403
    with node.read() as s:
        assert 101 not in s.guests


async def test_each_power_action_takes_only_what_its_task_honours(node):
    await guests.create(caller(node, request="c"), "n1", 102, {"name": "c"})
    with pytest.raises(Rejection) as exc:  # status/start with `machine`: recorded and ignored before, now refused
        await guests.power(caller(node, request="s1"), "n1", 102, "qmstart", {"machine": "q35"})
    assert exc.value.status == 400 and "machine" in exc.value.errors
    with pytest.raises(Rejection) as exc:
        await guests.power(caller(node, "alice@pve", "s2"), "n1", 102, "qmstop", {"keepActive": 1})
    assert exc.value.status == 403
    upid = await guests.power(caller(node, request="s3"), "n1", 102, "qmstart", {"timeout": 30, "machine": ""})
    with node.read() as s:
        assert s.tasks[upid]["intent"] == {"timeout": 30}  # an empty `machine` asks for nothing: not recorded


async def test_a_snapshot_task_holds_the_snapshot_lock_and_a_second_one_is_refused(node):
    await guests.create(caller(node, request="c"), "n1", 103, {"name": "d"})
    await guests.snapshot(caller(node, request="s1"), "n1", 103, "first")
    with node.read() as s:
        assert s.guests[103]["conf"]["lock"] == "snapshot"
    with pytest.raises(Rejection) as exc:
        await guests.snapshot(caller(node, request="s2"), "n1", 103, "second")
    assert exc.value.status == 423 and exc.value.message == "VM 103 is locked (snapshot)"


async def test_a_node_with_guests_cannot_join_another_cluster(node):
    await guests.create(caller(node, request="c"), "n1", 104, {"name": "e"})
    with pytest.raises(ApiError) as exc:
        await cluster.join(caller(node, request="j"), "127.0.0.1:1", "secret", "AA:" * 31 + "AA")
    assert exc.value.status == 400 and exc.value.message == "this node has guests - a joining node must have none"


async def test_a_member_refuses_to_admit_a_second_node_under_a_taken_name(node):
    with pytest.raises(ApiError) as exc:
        cluster.admit(caller(node), "n1", "127.0.0.9:5404", "127.0.0.9", 8006, "")
    assert exc.value.status == 409 and "already exists" in exc.value.message


async def test_pool_membership_needs_the_right_to_the_guest_and_moves_only_when_asked(node):
    root = caller(node, request="c")
    await guests.create(root, "n1", 105, {"name": "f"})
    for poolid in ("pa", "pb"):
        await access.create_pool(caller(node, request=f"pool-{poolid}"), poolid)
    await access.create_user(caller(node, request="u"), "pooler@pve", {})
    await access.change_acl(caller(node, request="acl"), "/pool/pa", ["PVEPoolAdmin"], ["pooler@pve"], [], [])
    with pytest.raises(ApiError) as exc:  # Pool.Allocate on the pool is not enough: VM.Allocate on the guest
        await access.update_pool(caller(node, "pooler@pve", "p1"), "pa", vms=[105])
    assert exc.value.status == 403 and "VM.Allocate" in exc.value.message
    await access.update_pool(caller(node, request="p2"), "pa", vms=[105])
    with pytest.raises(Rejection) as exc:
        await access.update_pool(caller(node, request="p3"), "pb", vms=[105])
    assert exc.value.status == 409 and "belongs already to pool 'pa'" in exc.value.message
    await access.update_pool(caller(node, request="p4"), "pb", vms=[105], allow_move=True)
    with node.read() as s:
        assert s.access["pool"]["pa"]["vms"] == [] and s.access["pool"]["pb"]["vms"] == [105]


async def test_stopping_someone_elses_task_needs_sys_modify_on_its_node(node):
    await guests.create(caller(node, request="c"), "n1", 106, {"name": "g"})
    upid = await guests.power(caller(node, request="s"), "n1", 106, "qmstart", {})  # no reconciler: it stays running
    await access.create_user(caller(node, request="u"), "watcher@pve", {})
    with pytest.raises(ApiError) as exc:  # not even seen without Sys.Audit
        await tasks.stop(caller(node, "watcher@pve", "t1"), "n1", upid)
    assert exc.value.message == "Permission denied - missing 'Sys.Audit' on '/nodes/n1'"
    await access.change_acl(caller(node, request="acl"), "/nodes/n1", ["PVEAuditor"], ["watcher@pve"], [], [])
    with pytest.raises(ApiError) as exc:
        await tasks.stop(caller(node, "watcher@pve", "t2"), "n1", upid)
    assert exc.value.message == "Permission denied - missing 'Sys.Modify' on '/nodes/n1'"
    with node.read() as s:
        assert not s.tasks[upid]["abort"]
    await tasks.stop(caller(node, request="t3"), "n1", upid)  # its owner
    with node.read() as s:
        assert s.tasks[upid]["abort"]


async def test_a_retried_node_removal_is_answered_by_the_first_one_and_another_request_finds_no_node(node):
    await node.submit(cmd.RegisterNode(request_id="reg", ts=node.wall(), name="n2", ip="127.0.0.2", api_port=8006,
                                       raft_addr="127.0.0.2:5404"))
    await cluster.remove_node(caller(node, request="rm"), "n2")
    await cluster.remove_node(caller(node, request="rm"), "n2")  # the answer was lost: the same request again
    with node.read() as s:
        assert sorted(s.nodes) == ["n1"]
    with pytest.raises(Rejection) as exc:
        await cluster.remove_node(caller(node, request="rm-again"), "n2")
    assert exc.value.status == 404 and exc.value.message == "no such cluster node 'n2'"
