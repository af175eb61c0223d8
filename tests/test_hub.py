"""The event hub's buffer and the public mapping, in process (the engine's real Machine and apply)."""

from __future__ import annotations

import pytest

from engine import commands as cmd
from engine.hub import PER_ENTRY, EventHub, TooOld
from engine.machine import Machine


def machine_with_hub(capacity: int = 100) -> tuple[Machine, EventHub]:
    m, hub = Machine(), EventHub(capacity)
    m.hub = hub
    m.execute(cmd.RegisterNode(request_id="reg", ts=1.0, name="n1", ip="127.0.0.1", api_port=1, raft_addr="a:1"))
    hub.publish(1)
    return m, hub


def test_events_carry_old_and_new_values_and_mask_secrets():
    m, hub = machine_with_hub()
    m.execute(cmd.CreateGuest(request_id="c", ts=2.0, node="n1", vmid=100, config={"name": "a"}, upid="U1",
                              starttime=2))
    hub.publish(2)
    m.execute(cmd.UpdateGuestConfig(request_id="u", ts=3.0, node="n1", vmid=100,
                                    set={"cores": 2, "cipassword": "hunter2"}))
    hub.publish(3)
    changed = [e for e in hub.read(0, 100) if e.type == "vm.config.changed"]
    assert [e.id for e in changed] == [3 * PER_ENTRY]
    assert changed[0].data["changes"] == {"cores": {"new": 2}, "cipassword": {"new": "**********"}}
    assert [e.type for e in hub.read(0, 100)][:1] == ["node.joined"]


def test_a_read_from_before_the_buffer_says_resync():
    m, hub = machine_with_hub(capacity=3)
    for i in range(5):
        m.execute(cmd.CreateGuest(request_id=f"c{i}", ts=2.0, node="n1", vmid=100 + i, upid=f"U{i}", starttime=2))
        hub.publish(2 + i)  # task.started, vm.created, task.finished per entry
    kept = hub.read(hub.floor, 100)
    assert len(kept) == 3 and kept[-1].id == 6 * PER_ENTRY + 2
    with pytest.raises(TooOld):
        hub.read(0 + 1, 100)
    assert hub.read(kept[0].id, 100) == kept[1:]
    hub.reset(40)
    assert hub.read(hub.floor, 10) == [] and hub.floor == 41 * PER_ENTRY - 1
