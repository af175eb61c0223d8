"""What the listings derive from the state, kept per node between requests and valid for one applied index.

The state is the log's projection; `State.applied` counts the entries applied to it, so a cache keyed by the
state object and that count is exact: any change to the state makes it a miss. Kept here, in the API layer, not
in the engine (whose apply stays pure). Two kinds:

- `grants(s, user)`: who may do what where for one user at one applied index, each path's privileges computed
  once (`engine.roles.privileges_on`); a guest with no ACL entries of its own and in no pool gets what
  `/vms` hands down (`privileges_below`), computed once for all of them.
- `guest_rows(s, shape)`: each guest's static listing row as `shape(guest)` makes it (no live figures),
  rebuilt only for the guests whose record changed since the last call (its config, lock, power state or
  node). The rows are shared between requests: callers copy a row before changing it.

- `memo(key, basis, make)`: what a listing derives (rows with live figures, one user's visible rows), remade when
  its basis changes: the state and its applied index, the sampler's version, the other members' figures.
- `encoded(rows)`: each shared row's JSON (an `orjson.Fragment`), made once per row object: a listing answer of
  10,000 kept rows is then copied into the answer, not encoded again (api/app.py, `Reply.encoded`).

Callers hold the node's read lock (`node.read()`) while they call these, as for any read of the state.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import orjson

from engine.roles import privileges_below, privileges_on

USERS_KEPT = 64  # users' grants kept per applied index
MEMOS_KEPT = USERS_KEPT  # derived listings kept (per listing and user)


class Grants:
    """One user's privileges at one applied index."""

    def __init__(self, s, user: str) -> None:
        self.s, self.user = s, user
        self._paths: dict[str, frozenset[str]] = {}
        pooled = {v for pool in s.access.get("pool", {}).values() for v in pool.get("vms", [])}
        own = {p.split("/")[2] for p in s.access.get("acl", {}) if p.startswith("/vms/")}
        self._special = pooled | {int(v) for v in own if v.isdigit()}  # guests whose privileges are their own
        self._vms: frozenset[str] | None = None
        self.memo: dict = {}  # what a listing derives for this user at this applied index (api/compat/qemu.py)

    def on(self, path: str) -> frozenset[str]:
        privs = self._paths.get(path)
        if privs is None:
            privs = self._paths[path] = privileges_on(self.s, self.user, path)
        return privs

    def on_vm(self, vmid: int) -> frozenset[str]:
        """The privileges on `/vms/{vmid}`."""
        if vmid in self._special:
            return self.on(f"/vms/{vmid}")
        if self._vms is None:
            self._vms = privileges_below(self.s, self.user, "/vms")
        return self._vms


class GuestRows:
    """Every guest's row as one `shape` makes it, rebuilt per guest when its record changes."""

    def __init__(self, shape: Callable[[dict], dict]) -> None:
        self.shape = shape
        self._rows: list[tuple[dict, dict]] = []  # (guest record, its row) by VMID
        self._by_vmid: dict[int, tuple[tuple, dict]] = {}  # vmid -> (what the row was made from, row)
        self._key: tuple = (None, -1)

    def get(self, s) -> list[tuple[dict, dict]]:
        if self._key[0] is s and self._key[1] == s.applied:
            return self._rows
        old, fresh, out = self._by_vmid, {}, []
        for vmid in sorted(s.guests):
            g = s.guests[vmid]
            conf = g["conf"]
            basis = (conf, conf.get("lock"), g.get("status"), g["node"])
            hit = old.get(vmid)
            if hit is None or hit[0][0] is not conf or hit[0][1:] != basis[1:]:
                hit = (basis, self.shape(g))
            fresh[vmid] = hit
            out.append((g, hit[1]))
        self._by_vmid, self._rows, self._key = fresh, out, (s, s.applied)
        return out


def same(a: Any, b: Any) -> bool:
    """Whether two bases are the same: plain values equal, tuples item by item, anything else the very object (a
    state, a figures dict: never compared by content)."""
    if a is b:
        return True
    if type(a) is tuple and type(b) is tuple:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return isinstance(a, (int, float, str)) and type(a) is type(b) and a == b


class Views:
    def __init__(self) -> None:
        self._state: object = None
        self._applied = -1
        self._grants: OrderedDict[str, Grants] = OrderedDict()
        self._rows: dict[Callable, GuestRows] = {}
        self._memo: OrderedDict[Hashable, tuple[tuple, Any]] = OrderedDict()
        self._json: dict[int, tuple[dict, orjson.Fragment]] = {}  # id(row) -> (row, its JSON)

    def memo(self, key: Hashable, basis: tuple, make: Callable[[], Any]) -> Any:
        """`make()`, remembered under `key` while `basis` stays the same (`same`); the value is shared: do not change
        it."""
        hit = self._memo.get(key)
        if hit is not None and same(hit[0], basis):
            self._memo.move_to_end(key)
            return hit[1]
        value = make()
        self._memo[key] = (basis, value)
        self._memo.move_to_end(key)
        if len(self._memo) > MEMOS_KEPT:
            self._memo.popitem(last=False)
        return value

    def encoded(self, rows: list[dict]) -> list[orjson.Fragment]:
        """Each row's JSON, in order, for rows that are kept and shared (never changed once made): a row object
        seen by the last call keeps its JSON."""
        from api.app import dump_json  # the one encoder of answers

        old, fresh, out = self._json, {}, []
        for row in rows:
            hit = old.get(id(row))
            if hit is None or hit[0] is not row:
                # a copy of the exact size: orjson's own answer holds a ~4 KiB buffer (40 MB for 10,000 rows)
                hit = (row, orjson.Fragment(bytes(bytearray(dump_json(row)))))
            fresh[id(row)] = hit
            out.append(hit[1])
        self._json = fresh
        return out

    def grants(self, s, user: str) -> Grants:
        if self._state is not s or self._applied != s.applied:
            self._state, self._applied = s, s.applied
            self._grants.clear()
        grants = self._grants.get(user)
        if grants is None:
            grants = self._grants[user] = Grants(s, user)
            if len(self._grants) > USERS_KEPT:
                self._grants.popitem(last=False)
        return grants

    def guest_rows(self, s, shape: Callable[[dict], dict]) -> list[tuple[dict, dict]]:
        """(guest record, `shape(record)`) of every guest, by VMID. Both are shared: do not change them."""
        rows = self._rows.get(shape)
        if rows is None:
            rows = self._rows[shape] = GuestRows(shape)
        return rows.get(s)


_VIEWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def views(node) -> Views:
    """The node's views (made at first use)."""
    v = _VIEWS.get(node)
    if v is None:
        v = _VIEWS[node] = Views()
    return v
