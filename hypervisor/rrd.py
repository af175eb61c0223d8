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


_NAN = math.nan  # the one unknown value: rows alike compare equal as tuples (identity first), NaN included


@functools.cache
def _widths(step: float) -> tuple[float, ...]:
    """Each archive's row width in seconds, shared by every series of `step`."""
    return tuple(step * steps for steps, _ in ARCHIVES)


class _Archive:
    """Rows of `width` seconds: the finished ones, and the one filling. Finished rows are kept as runs, tuples
    (first bucket, last bucket, averages, maxima) for consecutive rows alike (a stopped guest's: one run per
    archive, not 70 rows), only as far back as the newest row minus `rows` (older ones are never answered).

    The filling row is `row` taken `count` times and `other` taken `others` times while its samples are of at most
    two rows (a stopped guest's: its first row, and the one repeated since, which every archive and run of its
    series then share), else `acc`: sums, counts and maxima, and `row` the last row given."""

    __slots__ = ("width", "rows", "done", "bucket", "row", "count", "other", "others", "acc")

    def __init__(self, width: float, rows: int) -> None:
        self.width, self.rows = width, rows
        self.done: list[tuple[int, int, tuple, tuple]] = []
        self.bucket: int | None = None
        self.row: tuple | None = None
        self.count = 0
        self.other: tuple | None = None
        self.others = 0
        self.acc: array | None = None

    def add(self, t: float, row: tuple, times: int = 1) -> None:
        """`times` samples of `row` (floats, NaN unknown) at `t` (the same row taken again and again within one
        base step)."""
        bucket = int(t // self.width)
        if bucket != self.bucket:
            self._close()
            self.bucket, self.row, self.count, self.other, self.acc = bucket, row, times, None, None
            return
        acc = self.acc
        if acc is None:
            if row is self.row or row == self.row:
                self.count += times
                return
            if self.other is None:
                self.other, self.others = row, times
                return
            if row is self.other or row == self.other:
                self.others += times
                return
            acc = self.acc = self._accumulator()
        _accumulate(acc, row, times)
        self.row = row

    def _close(self) -> None:
        bucket = self.bucket
        if bucket is None:
            return
        if self.acc is None and self.other is None:
            avg = top = self.row
        else:
            rows = (self.row, self.other)
            avg, top = _consolidated(self.acc or self._accumulator())
            if avg == top:  # samples alike in each source: one tuple, the row itself if it was one of them
                avg = top = next((row for row in rows if row == avg), avg)
        done = self.done
        if done and done[-1][1] == bucket - 1 and done[-1][2] == avg and done[-1][3] == top:
            done[-1] = (done[-1][0], bucket, done[-1][2], done[-1][3])
        else:
            done.append((bucket, bucket, avg, top))
        oldest = bucket - self.rows + 1
        while done[0][1] < oldest:
            del done[0]
        if done[0][0] < oldest:
            done[0] = (oldest, *done[0][1:])
        self.row = self.other = self.acc = None

    def _accumulator(self) -> array:
        """The filling row's rows alike (`row` and `other`) as sums, counts and maxima; `other` is let go."""
        acc = _accumulator(self.row, self.count)
        if self.other is not None:
            _accumulate(acc, self.other, self.others)
            self.other = None
        return acc

    def finished(self, now: float) -> dict[int, tuple[tuple, tuple]]:
        """The finished rows by bucket number (the filling one too once `now` is past its end)."""
        if self.bucket is not None and (self.bucket + 1) * self.width <= now:
            self._close()
            self.bucket = None
        return {b: (avg, top) for first, last, avg, top in self.done for b in range(first, last + 1)}


def _accumulator(row: tuple, times: int) -> array:
    """Sums, counts and maxima (three blocks of len(row)) of `times` samples of `row`."""
    size = len(row)
    acc = array("d", bytes(8 * 3 * size))
    acc[2 * size:] = array("d", [-math.inf] * size)
    _accumulate(acc, row, times)
    return acc


def _accumulate(acc: array, row: tuple, times: int) -> None:
    size = len(row)
    for i, v in enumerate(row):
        if v == v:  # known (not NaN)
            acc[i] += v * times
            acc[size + i] += times
            if v > acc[2 * size + i]:
                acc[2 * size + i] = v


def _consolidated(acc: array) -> tuple[tuple, tuple]:
    """The averages and maxima of an accumulator, NaN where no sample was known."""
    size = len(acc) // 3
    counts = acc[size:2 * size]
    return (tuple(s / c if c else _NAN for s, c in zip(acc[:size], counts, strict=True)),
            tuple(m if c else _NAN for m, c in zip(acc[2 * size:], counts, strict=True)))


@functools.cache
def _columns(sources: tuple[tuple[str, str], ...]) -> tuple[tuple[str, ...], tuple[str, ...], tuple[int, ...]]:
    """Names, kinds and the DERIVE sources' indexes of `sources`, shared by every series of them."""
    return (tuple(name for name, _ in sources), tuple(kind for _, kind in sources),
            tuple(i for i, (_, kind) in enumerate(sources) if kind == DERIVE))


@functools.cache
def _known(derived: tuple[int, ...], mask: int) -> tuple[int, ...]:
    """The DERIVE indexes whose bit is set in `mask` (which counters the last update gave), shared."""
    return tuple(i for k, i in enumerate(derived) if mask >> k & 1)


class Series:
    """One resource's data sources and archives; `step` is the base step in seconds."""

    __slots__ = ("names", "kinds", "derived", "step", "archives", "_counters", "_known", "_row", "_counted",
                 "_again", "_last", "_at", "_repeats")

    def __init__(self, sources: tuple[tuple[str, str], ...], step: float) -> None:
        self.names, self.kinds, self.derived = _columns(sources)
        self.step = step
        self.archives = [_Archive(width, rows) for width, (_, rows) in zip(_widths(step), ARCHIVES, strict=True)]
        # per DERIVE source: the time and value of its last counter (NaN: none yet)
        self._counters = array("d", [_NAN] * (2 * len(self.derived)))
        self._known: tuple[int, ...] = ()  # the DERIVE sources the last update gave a counter of
        self._row: tuple | None = None  # the last update's row, for `repeat`
        self._counted = -math.inf  # when the counters last moved (an update or a repeat)
        self._again: tuple | None = None  # repeat's row: the last update's, each known counter's rate 0
        # The last row given to the archives, at time `_at`, and how many more equal rows came since in the same
        # base step: added at once (weighted) when another row or base step comes, or before a fetch. A stopped
        # guest's row is the same every sample: one comparison instead of an update of every archive.
        self._last: tuple | None = None
        self._at = 0.0
        self._repeats = 0

    def update(self, t: float, values: dict[str, float | None]) -> None:
        """One sample at time `t`: GAUGE values as they are, DERIVE ones as counters; absent means unknown."""
        row: list[float] = []
        counters, mask, k = self._counters, 0, 0
        for name, kind in zip(self.names, self.kinds, strict=True):
            value = values.get(name)
            if kind == DERIVE:
                if value is not None:
                    at, last = counters[2 * k], counters[2 * k + 1]
                    counters[2 * k], counters[2 * k + 1] = t, value
                    mask |= 1 << k
                    value = (value - last) / (t - at) if t > at and value >= last else None  # NaN: never greater
                k += 1
            row.append(_NAN if value is None else float(value))
        self._row, self._known, self._counted, self._again = tuple(row), _known(self.derived, mask), t, None
        self._add(t, self._row)

    def repeat(self, t: float) -> None:
        """`update(t, values)` with the values of the last update (a stopped guest's), without looking at them
        again: GAUGE values as they were, each DERIVE counter unchanged (a rate of 0; none where it is unknown)."""
        if self._row is None:
            return
        known = self._known
        row = self._again
        if t <= self._counted:  # no time has passed for a rate: as update, every counter given has none
            row = tuple(_NAN if i in known else v for i, v in enumerate(self._row))
        elif row is None:
            row = self._again = tuple(0.0 if i in known else v for i, v in enumerate(self._row))
        counters = self._counters
        for k, i in enumerate(self.derived):
            if i in known:
                counters[2 * k] = t
        self._counted = t
        self._add(t, row)

    def _add(self, t: float, row: tuple) -> None:
        if (row is self._last or row == self._last) and int(t // self.step) == int(self._at // self.step):
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
