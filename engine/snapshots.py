"""The snapshot tree of a guest, as pure functions (used by the node's task handler and the simulator)."""

from __future__ import annotations


def drop_snapshot(conf: dict, snaps: dict, name: str) -> tuple[dict, dict]:
    """Remove snapshot `name`; its children, and the live config if it hung there, take its parent."""
    conf, snaps = dict(conf), {k: dict(v) for k, v in snaps.items()}
    snap = snaps.pop(name)
    for holder in [*snaps.values(), conf]:
        if holder.get("parent") == name:
            holder.pop("parent")
            if snap.get("parent"):
                holder["parent"] = snap["parent"]
    return conf, snaps
