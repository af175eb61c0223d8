"""The API's per-state caches (api/views.py) answer exactly what the engine's rules answer, and a change to the
state is seen at once."""

from __future__ import annotations

import orjson

from api.compat.guests import guest_summary
from api.views import Views
from engine.roles import privileges_on
from engine.state import State


def _entry(kind: str, ugid: str, role: str, propagate: int = 1) -> dict:
    return {"type": kind, "ugid": ugid, "roleid": role, "propagate": propagate}


def _state() -> State:
    s = State()
    s.guests = {v: {"vmid": v, "node": "n1", "conf": {"name": f"g{v}"}, "status": "stopped", "snapshots": {}}
                for v in range(100, 106)}
    s.access = {
        "user": {"ann@pve": {"groups": ["ops"], "tokens": {"t": {"privsep": 1}, "full": {"privsep": 0}}},
                 "bob@pve": {"groups": []}},
        "group": {"ops": {"users": ["ann@pve"]}},
        "pool": {"web": {"vms": [102], "storage": []}},
        "acl": {"/": [_entry("group", "ops", "PVEAuditor", 0)],
                "/vms": [_entry("user", "ann@pve", "PVEVMUser"), _entry("user", "bob@pve", "PVEAuditor", 0)],
                "/vms/101": [_entry("user", "ann@pve", "NoAccess")],
                "/vms/103": [_entry("token", "ann@pve!t", "PVEVMAdmin"), _entry("user", "bob@pve", "PVEVMAdmin")],
                "/pool/web": [_entry("user", "bob@pve", "PVEVMUser")]},
    }
    return s


def test_guest_privileges_from_the_cache_are_the_engines_for_every_kind_of_caller_and_guest():
    s, views = _state(), Views()
    for user in ("root@pam", "ann@pve", "ann@pve!t", "ann@pve!full", "bob@pve", "eve@pve"):
        grants = views.grants(s, user)
        for vmid in [*s.guests, 999]:
            assert grants.on_vm(vmid) == privileges_on(s, user, f"/vms/{vmid}"), (user, vmid)
    assert "VM.Audit" not in views.grants(s, "ann@pve").on_vm(101)  # NoAccess on the guest itself
    assert "VM.PowerMgmt" in views.grants(s, "bob@pve").on_vm(102)  # through its pool
    assert "VM.Audit" not in views.grants(s, "bob@pve").on_vm(104)  # /vms without propagate


def test_a_changed_acl_or_guest_is_seen_at_the_next_applied_entry():
    s, views = _state(), Views()
    assert "VM.Audit" not in views.grants(s, "bob@pve").on_vm(104)
    first = views.guest_rows(s, guest_summary)
    s.access["acl"]["/vms/104"] = [_entry("user", "bob@pve", "PVEAuditor")]
    s.guests[105]["conf"] = {"name": "renamed"}
    s.guests[100]["conf"]["lock"] = "backup"  # a lock is set in place
    del s.guests[103]
    s.applied += 1
    assert "VM.Audit" in views.grants(s, "bob@pve").on_vm(104)
    rows = {row["vmid"]: row for _, row in views.guest_rows(s, guest_summary)}
    assert sorted(rows) == [100, 101, 102, 104, 105]
    assert rows[105]["name"] == "renamed" and rows[100]["lock"] == "backup"
    assert rows[101] is first[1][1]  # an unchanged guest keeps its row


def test_a_derived_listing_is_remade_when_its_basis_changes_and_only_then():
    s, views = _state(), Views()
    figures = {"n2": {"guests": {}}}
    made = []

    def listing(basis: tuple) -> list:
        return views.memo("rows", basis, lambda: made.append(1) or [len(made)])

    first = listing((s, s.applied, 7, tuple(figures.items())))
    assert listing((s, s.applied, 7, tuple(figures.items()))) is first  # the same state, version and figures
    s.applied += 1
    assert listing((s, s.applied, 7, tuple(figures.items()))) == [2]  # an entry applied
    assert listing((s, s.applied, 8, tuple(figures.items()))) == [3]  # the sampler saw something new
    figures = {"n2": {"guests": {}}}  # another member's figures fetched again: equal, but not the same dict
    assert listing((s, s.applied, 8, tuple(figures.items()))) == [4]
    assert listing((_state(), s.applied, 8, tuple(figures.items()))) == [5]  # another state at the same index


def test_kept_rows_are_answered_with_their_json_made_once():
    s, views = _state(), Views()
    rows = [row for _, row in views.guest_rows(s, guest_summary)]
    encoded = views.encoded(rows)
    assert [orjson.loads(orjson.dumps(fragment)) for fragment in encoded] == rows
    s.guests[104]["conf"] = {"name": "renamed"}
    s.applied += 1
    again = [row for _, row in views.guest_rows(s, guest_summary)]
    encoded_again = views.encoded(again)
    assert encoded_again[0] is encoded[0]  # an unchanged row keeps its JSON
    assert orjson.loads(orjson.dumps(encoded_again[4]))["name"] == "renamed"
