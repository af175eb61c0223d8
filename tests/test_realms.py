"""Realms in the log (pure): the built-in pam and pve realms' settings, Proxmox's update rules, and a node's
registered host facts."""

from __future__ import annotations

import pytest

from engine import access as acc
from engine import commands as c
from engine.codec import encode_records
from engine.errors import Rejection
from engine.machine import Machine


def run(machine: Machine, *commands: c.Command) -> list[dict]:
    return machine.execute_entry(encode_records(list(commands)))


def set_realm(rid: str, realm: str, **kw) -> acc.SetRealm:
    return acc.SetRealm(request_id=rid, ts=1.0, user="root@pam", realm=realm, **kw)


def test_pam_and_pve_exist_with_proxmoxs_comments_before_anything_is_stored():
    realms = acc.realms(Machine().state)
    assert {r: (v["type"], v["comment"]) for r, v in realms.items()} == {
        "pam": ("pam", "Linux PAM standard authentication"), "pve": ("pve", "Proxmox VE authentication server")}


def test_the_default_marker_moves_and_a_deleted_comment_falls_back_to_proxmoxs():
    m = Machine()
    assert run(m, set_realm("a", "pve", fields={"comment": "local users", "default": 1}))[0] == {"ok": {}}
    assert acc.realms(m.state)["pve"] == {"type": "pve", "comment": "local users", "default": 1}
    run(m, set_realm("b", "pam", fields={"default": 1}))
    assert "default" not in acc.realms(m.state)["pve"] and acc.realms(m.state)["pam"]["default"] == 1
    run(m, set_realm("c", "pve", delete=["comment"]))
    assert acc.realms(m.state)["pve"]["comment"] == "Proxmox VE authentication server"


def test_updates_are_refused_with_proxmoxs_words_and_change_nothing():
    m = Machine()
    digest = acc.realms_digest(m.state)
    run(m, set_realm("a", "pve", fields={"comment": "x"}))
    stale, unknown, empty, other = run(m, set_realm("b", "pve", fields={"comment": "y"}, digest=digest),
                                       set_realm("c", "corp", fields={"comment": "y"}),
                                       set_realm("d", "pve"),
                                       set_realm("e", "pve", fields={"server1": "ldap.example"}))
    assert stale["error"]["message"] == "detected modified configuration - file changed by other user? Try again."
    assert (unknown["error"]["status"], unknown["error"]["message"]) == (404, "domain 'corp' does not exist")
    assert empty["error"]["message"] == "no options specified"
    assert other["error"]["errors"] == {"server1": "unexpected property 'server1'"}
    assert acc.realms(m.state)["pve"]["comment"] == "x"
    assert run(m, set_realm("f", "pve", fields={"comment": "z"}, digest=acc.realms_digest(m.state)))[0] == {"ok": {}}


@pytest.mark.parametrize(("realm", "kind", "status", "message"), [
    ("pve", "ldap", 409, "domain 'pve' already exists"),
    ("corp", "pve", 400, "unable to create builtin type 'pve'"),
])
def test_new_realms_of_the_builtin_types_are_refused(realm, kind, status, message):
    with pytest.raises(Rejection) as exc:
        acc.check_new_realm(Machine().state, realm, kind)
    assert (exc.value.status, exc.value.message) == (status, message)


def test_a_node_registers_its_host_facts_and_a_join_without_them_keeps_them():
    m = Machine()
    facts = {"cpus": 8, "memory": 1 << 34, "cgroup-mode": 2}
    reg = c.RegisterNode(request_id="r1", ts=1.0, name="n1", ip="127.0.0.1", api_port=8006, raft_addr="a:1",
                         fingerprint="AB", static=facts)
    run(m, reg)
    assert m.state.nodes["n1"]["static"] == facts
    again = c.RegisterNode(request_id="r2", ts=2.0, name="n1", ip="127.0.0.1", api_port=8006, raft_addr="a:1")
    version = m.state.version
    run(m, again)  # as a member's admission registers a node without them: nothing changes
    assert m.state.nodes["n1"]["static"] == facts and m.state.version == version
    run(m, c.RegisterNode(request_id="r3", ts=3.0, name="n1", ip="127.0.0.1", api_port=8006, raft_addr="a:1",
                          static={**facts, "memory": 1 << 35}))
    assert m.state.nodes["n1"]["static"]["memory"] == 1 << 35
