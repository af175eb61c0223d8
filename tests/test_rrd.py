"""The node's RRD store (pure): rows consolidated per timeframe as Proxmox's RRD files, AVERAGE and MAX,
counters as rates, unknown values left out, bounded whatever the uptime."""

from __future__ import annotations

from hypervisor.rrd import DERIVE, GAUGE, GUEST_SOURCES, RrdStore

SOURCES = (("cpu", GAUGE), ("netin", DERIVE))
T0 = 1_700_000_040.0  # a multiple of 60: rows of the hour timeframe start here


def test_a_row_holds_the_average_and_the_max_of_its_samples_and_counters_as_rates():
    store = RrdStore(step=60)
    for i, cpu in enumerate((0.1, 0.5, 0.3, 0.9, 0.2, 0.4)):  # one sample each 10 s in the minute from T0
        store.update("node/n1", SOURCES, T0 + 10 * i, {"cpu": cpu, "netin": 1000 * i * i})
    before = store.fetch("node/n1", "hour", "AVERAGE", T0 + 59)  # the minute still fills: not answered yet
    assert before and all(set(p) == {"time"} for p in before) and before[-1]["time"] < T0
    avg = store.fetch("node/n1", "hour", "AVERAGE", T0 + 61)
    top = store.fetch("node/n1", "hour", "MAX", T0 + 61)
    assert len(avg) == 60 and all(set(p) == {"time"} for p in avg[:-1])  # the hour before: no samples
    assert avg[-1]["time"] == int(T0 + 60)  # labelled with the row's end, as RRD does
    assert abs(avg[-1]["cpu"] - 2.4 / 6) < 1e-9 and top[-1]["cpu"] == 0.9
    rates = [100 * (2 * i - 1) for i in range(1, 6)]  # (1000 i² - 1000 (i-1)²) / 10 s; the first has none
    assert abs(avg[-1]["netin"] - sum(rates) / 5) < 1e-9 and top[-1]["netin"] == max(rates)


def test_a_counter_that_went_down_gives_no_rate_and_an_empty_newest_row_is_dropped():
    store = RrdStore(step=60)
    store.update("qemu/100", SOURCES, T0, {"cpu": 0.5, "netin": 5000})
    store.update("qemu/100", SOURCES, T0 + 10, {"cpu": 0.5, "netin": 100})  # restarted: counters reset
    store.update("qemu/100", SOURCES, T0 + 20, {"cpu": 0.5})  # netin unknown
    [*_, last] = store.fetch("qemu/100", "hour", "AVERAGE", T0 + 61)
    assert last == {"time": int(T0 + 60), "cpu": 0.5}
    # two minutes later with no samples since: the newest row is empty and left out, as Proxmox does
    points = store.fetch("qemu/100", "hour", "AVERAGE", T0 + 181)
    assert points[-1]["time"] == int(T0 + 120) and set(points[-1]) == {"time"}
    assert points[-2] == {"time": int(T0 + 60), "cpu": 0.5}


def test_each_timeframe_reads_its_own_archive_and_memory_stays_bounded():
    store = RrdStore(step=1)  # a 1 s step (as `--rrd-interval` makes for tests): a week of rows is 180 s
    for t in range(0, 100_000, 7):
        store.update("node/n1", SOURCES, T0 + t, {"cpu": (t % 3) / 2, "netin": t})
    now = T0 + 100_000
    for timeframe, width, rows in (("hour", 1, 60), ("day", 30, 70), ("week", 180, 70), ("month", 720, 70),
                                   ("year", 10080, 70), ("decade", 10080, 70)):
        points = store.fetch("node/n1", timeframe, "AVERAGE", now)
        times = [p["time"] for p in points]
        assert len(points) in (rows, rows - 1), timeframe
        assert all(b - a == width for a, b in zip(times, times[1:], strict=False)), timeframe
        assert times[-1] <= now
    series = store.series["node/n1"]
    assert all(len(archive.done) <= 70 for archive in series.archives)


def test_keep_forgets_the_series_of_guests_gone_and_an_unknown_series_answers_no_points():
    store = RrdStore()
    values = {name: 1 for name, _ in GUEST_SOURCES}
    for vmid in (100, 101):
        store.update(f"qemu/{vmid}", GUEST_SOURCES, T0, values)
    store.keep({"qemu/101"})
    assert set(store.series) == {"qemu/101"}
    assert store.fetch("qemu/100", "day", "MAX", T0 + 3600) == []
