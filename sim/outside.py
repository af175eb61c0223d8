"""What the simulated world must not read: the host's clocks, its entropy, its process id, the hidden global random
generator, threads. Any of these in code the simulator runs makes a run depend on something besides its seed
(the trace hash changes from one run, process or machine to the next), so while a run goes on they are traps:
each call is reported with the project line that made it, and then answered as usual so the run goes on.

Not trappable this way: `from time import time`-style names bound before the run, `datetime.now()` (a C type),
`id()` and `hash()` ordering. The self-check (re-running the start of a run in the same process) and the
cross-`PYTHONHASHSEED` test in `tests/test_sim.py` cover those.
"""

from __future__ import annotations

import os
import random
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import trio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECT = tuple(os.path.join(ROOT, d) + os.sep for d in ("engine", "api", "hypervisor", "sim"))
ALLOWED_CALLERS = (os.sep + "logging" + os.sep,)  # a log record's timestamp changes nothing the run does

TRAPS: list[tuple[object, str]] = (
    [(time, n) for n in ("time", "time_ns", "monotonic", "monotonic_ns", "perf_counter", "perf_counter_ns")]
    + [(os, n) for n in ("urandom", "getpid")]
    + [(uuid, n) for n in ("uuid1", "uuid4")]
    + [(random, n) for n in ("random", "uniform", "randint", "randrange", "choice", "choices", "shuffle", "sample",
                             "getrandbits", "randbytes", "gauss", "expovariate")]
    + [(secrets, n) for n in ("token_bytes", "token_hex", "token_urlsafe", "choice", "randbelow", "randbits")]
    + [(trio.to_thread, "run_sync"), (threading.Thread, "start")]
)


def _where() -> str | None:
    """The innermost project line on the stack below the trap, unless a log record asked (None then)."""
    frame = sys._getframe(2)
    if frame.f_code.co_filename.find(ALLOWED_CALLERS[0]) >= 0:
        return None
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith(PROJECT) and name != __file__:
            return f"{os.path.relpath(name, ROOT)}:{frame.f_lineno}"
        frame = frame.f_back
    return "outside the project"


@contextmanager
def sealed(report: Callable[[str], None]) -> Iterator[None]:
    """Inside: every trapped call is reported (`report(message)`), once per call site and function."""
    saved = [(owner, name, getattr(owner, name)) for owner, name in TRAPS]

    def trap(label: str, real: Callable) -> Callable:
        def call(*args, **kwargs):
            where = _where()
            if where is not None:
                report(f"{label}() called under simulation from {where}: the run depends on more than its seed")
            return real(*args, **kwargs)
        return call

    for owner, name, real in saved:
        label = f"{getattr(owner, '__name__', owner)}.{name}"
        setattr(owner, name, trap(label, real))
    try:
        yield
    finally:
        for owner, name, real in saved:
            setattr(owner, name, real)
