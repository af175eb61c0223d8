"""The cyclic garbage collector while a node loads a large state.

Python's collector scans every tracked object at each full collection. Replaying a log of 100,000 guests made
millions of long-lived objects and the collections run while they were made cost 4 of the 11.6 s of a cold
restart; later, the first listing paid for them again (1.5 s against 1.0 s). A node therefore holds the
collector while it replays or catches up, then collects once and freezes what remains (`gc.freeze`: the
state it loaded is never scanned again; objects freed by reference counting are still freed), and lets the
collector run as usual for what comes after.
"""

from __future__ import annotations

import gc
import time


def hold() -> None:
    """No cyclic collection until `settle()` (reference counting still frees nearly everything)."""
    gc.disable()


def settle() -> tuple[int, float]:
    """Collect once, freeze the survivors, collect as usual from now on: (objects frozen, seconds taken)."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    gc.enable()
    return gc.get_freeze_count(), time.perf_counter() - started
