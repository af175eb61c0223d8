"""A bounded, in-memory round-robin store of a node's figures, answered as Proxmox's `rrddata` answers (pure).

As Proxmox's RRD files in their `pve2-node` / `pve2-vm` layout (pve-cluster `status.c`, `PVE::RRD`): one
series per resource with named data sources, GAUGE (stored as given) or DERIVE (given as a counter, stored as
its rate per second; a counter that went down gives no value), consolidated into five archives of 70 rows of
1, 30, 180, 720 and 10080 base steps (one minute, half an hour, three hours, half a day, a week with the
default 60 s step), each row both the AVERAGE and the MAX of the samples in it. A timeframe reads one archive:

    hour: 1 step × 60 rows   day: 30 × 70   week: 180 × 70   month: 720 × 70   year (and decade): 10080 × 70

`fetch` answers one point per row, oldest first, labelled with the row's end (`time`, an integer); a row
without samples holds only `time`, as Proxmox leaves unknown values out, and the newest such row is dropped.
The row still filling is not answered. Memory is bounded: 5 × 70 rows per series, whatever the uptime (runs of
rows alike kept once).
"""

from __future__ import annotations

import functools
import math
from array import array
from dataclasses import dataclass, field

GAUGE, DERIVE = "GAUGE", "DERIVE"
NODE_SOURCES = (("loadavg", GAUGE), ("maxcpu", GAUGE), ("cpu", GAUGE), ("iowait", GAUGE), ("memtotal", GAUGE),
                ("memused", GAUGE), ("swaptotal", GAUGE), ("swapused", GAUGE), ("roottotal", GAUGE),
                ("rootused", GAUGE), ("netin", DERIVE), ("netout", DERIVE))
GUEST_SOURCES = (("maxcpu", GAUGE), ("cpu", GAUGE), ("maxmem", GAUGE), ("mem", GAUGE), ("maxdisk", GAUGE),
                 ("disk", GAUGE), ("netin", DERIVE), ("netout", DERIVE), ("diskread", DERIVE),
                 ("diskwrite", DERIVE))
ARCHIVES = ((1, 70), (30, 70), (180, 70), (720, 70), (10080, 70))  # (base steps per row, rows)
TIMEFRAMES = {"hour": (0, 60), "day": (1, 70), "week": (2, 70), "month": (3, 70), "year": (4, 70),
              "decade": (4, 70)}  # timeframe -> (archive, rows answered); pve2 files answer decade as year
NODE_TIMEFRAMES = tuple(TIMEFRAMES)
GUEST_TIMEFRAMES = ("hour", "day", "week", "month", "year")
CFS = ("AVERAGE", "MAX")


@dataclass(slots=True)
class _Archive:
    """Rows of `width` seconds: the finished ones, and the one filling. Finished rows are kept as runs: [first
    bucket, last bucket, averages, maxima] for consecutive rows alike (a stopped guest's: one run per archive, not
    70 rows), only as far back as the newest row minus `rows` (older ones are never answered)."""

    width: float
    rows: int
    size: int  # data sources
    done: list = field(default_factory=list)  # a list (a deque's block is 600 bytes; this holds a few runs)
    bucket: int | None = None
    sums: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    maxes: list[float] = field(default_factory=list)

    def add(self, t: float, values: list[float | None], times: int = 1) -> None:
        """`times` samples of `values` at `t` (the same row taken again and again within one base step)."""
        bucket = int(t // self.width)
        if bucket != self.bucket:
            self._close()
            self.bucket = bucket
            self.sums, self.counts, self.maxes = [0.0] * self.size, [0] * self.size, [-math.inf] * self.size
        for i, v in enumerate(values):
            if v is not None:
                self.sums[i] += v * times
                self.counts[i] += times
                self.maxes[i] = max(self.maxes[i], v)

    def _close(self) -> None:
        if self.bucket is None:
            return
        bucket = self.bucket
        avg = array("d", (s / c if c else math.nan for s, c in zip(self.sums, self.counts, strict=True)))
        top = array("d", (m if c else math.nan for m, c in zip(self.maxes, self.counts, strict=True)))
        last = self.done[-1] if self.done else None
        if last is not None and last[1] == bucket - 1 and last[2].tobytes() == avg.tobytes() \
                and last[3].tobytes() == top.tobytes():  # bytes: unknown (NaN) values alike too
            last[1] = bucket
        else:
            self.done.append([bucket, bucket, avg, top])
        oldest = bucket - self.rows + 1
        while self.done[0][1] < oldest:
            del self.done[0]
        self.done[0][0] = max(self.done[0][0], oldest)

    def finished(self, now: float) -> dict[int, tuple[array, array]]:
        """The finished rows by bucket number (the filling one too once `now` is past its end)."""
        if self.bucket is not None and (self.bucket + 1) * self.width <= now:
            self._close()
            self.bucket = None
        return {b: (avg, top) for first, last, avg, top in self.done for b in range(first, last + 1)}


@functools.cache
def _columns(sources: tuple[tuple[str, str], ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Names and kinds of `sources`, shared by every series of them."""
    return tuple(name for name, _ in sources), tuple(kind for _, kind in sources)


class Series:
    """One resource's data sources and archives; `step` is the base step in seconds."""

    def __init__(self, sources: tuple[tuple[str, str], ...], step: float) -> None:
        self.names, self.kinds = _columns(sources)
        self.step = step
        self.archives = [_Archive(step * steps, rows, len(sources)) for steps, rows in ARCHIVES]
        self._counters: dict[str, tuple[float, float]] = {}  # DERIVE source -> (time, last counter)
        # The last row given to the archives, at time `_at`, and how many more equal rows came since in the same
        # base step: added at once (weighted) when another row or base step comes, or before a fetch. A stopped
        # guest's row is the same every sample: one list comparison instead of an update of every archive.
        self._last: list[float | None] | None = None
        self._at = 0.0
        self._repeats = 0
        self._given: dict[str, float | None] = {}  # the values of the last update and its row, for `repeat`
        self._row: list[float | None] | None = None
        self._counted = -math.inf  # when the counters last moved (an update or a repeat)
        self._again: tuple[list[float | None], list[tuple[str, float]]] | None = None  # repeat's row, counters

    def update(self, t: float, values: dict[str, float | None]) -> None:
        """One sample at time `t`: GAUGE values as they are, DERIVE ones as counters; absent means unknown."""
        row: list[float | None] = []
        for name, kind in zip(self.names, self.kinds, strict=True):
            value = values.get(name)
            if kind == DERIVE and value is not None:
                last = self._counters.get(name)
                self._counters[name] = (t, value)
                value = (value - last[1]) / (t - last[0]) if last and t > last[0] and value >= last[1] else None
            row.append(None if value is None else float(value))
        self._given, self._row, self._counted, self._again = values, row, t, None
        self._add(t, row)

    def repeat(self, t: float) -> None:
        """`update(t, values)` with the values of the last update (a stopped guest's), without looking at them
        again: GAUGE values as they were, each DERIVE counter unchanged (a rate of 0; none where it is unknown)."""
        if self._row is None or t <= self._counted:
            self.update(t, self._given)
            return
        if self._again is None:
            given = self._given
            self._again = ([0.0 if kind == DERIVE and given.get(name) is not None else v
                            for name, kind, v in zip(self.names, self.kinds, self._row, strict=True)],
                           [(name, given[name]) for name, kind in zip(self.names, self.kinds, strict=True)
                            if kind == DERIVE and given.get(name) is not None])
        for name, value in self._again[1]:
            self._counters[name] = (t, value)
        self._counted = t
        self._add(t, self._again[0])

    def _add(self, t: float, row: list[float | None]) -> None:
        if row == self._last and int(t // self.step) == int(self._at // self.step):
            self._repeats += 1
            return
        self._flush()
        for archive in self.archives:
            archive.add(t, row)
        self._last, self._at = row, t

    def _flush(self) -> None:
        """Give the archives the repeated rows held back (same base step: the same row of every archive)."""
        if self._repeats and self._last is not None:
            for archive in self.archives:
                archive.add(self._at, self._last, self._repeats)
        self._repeats = 0

    def fetch(self, timeframe: str, cf: str, now: float) -> list[dict]:
        """Proxmox's `create_rrd_data` answer for `timeframe` and `cf` (`AVERAGE` or `MAX`) at time `now`."""
        self._flush()
        index, count = TIMEFRAMES[timeframe]
        archive = self.archives[index]
        width = archive.width
        last = int(now // width) - 1  # the newest finished bucket
        rows = archive.finished(now)
        pick = 1 if cf == "MAX" else 0
        points = []
        for bucket in range(last - count + 1, last + 1):
            point: dict = {"time": int((bucket + 1) * width)}
            row = rows.get(bucket)
            if row is not None:
                for name, value in zip(self.names, row[pick], strict=True):
                    if not math.isnan(value):
                        point[name] = value
            points.append(point)
        if points and len(points[-1]) == 1:
            points.pop()
        return points


class RrdStore:
    """Series by key (`node/NAME`, `qemu/VMID`), made on first update."""

    def __init__(self, step: float = 60.0) -> None:
        self.step = step
        self.series: dict[str, Series] = {}

    def update(self, key: str, sources: tuple[tuple[str, str], ...], t: float, values: dict[str, float | None]) -> None:
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = Series(sources, self.step)
        series.update(t, values)

    def repeat(self, key: str, t: float) -> bool:
        """`update` of `key` with its last values again (Series.repeat); False if it has none yet."""
        series = self.series.get(key)
        if series is None:
            return False
        series.repeat(t)
        return True

    def fetch(self, key: str, timeframe: str, cf: str, now: float) -> list[dict]:
        """The points of `key`'s series; none yet: an empty list, as Proxmox answers for a resource without an
        RRD file yet."""
        series = self.series.get(key)
        return series.fetch(timeframe, cf, now) if series is not None else []

    def keep(self, keys: set[str]) -> None:
        """Forget every series but `keys` (a guest deleted, or gone to another node)."""
        for key in set(self.series) - keys:
            del self.series[key]
