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


def test_a_row_repeated_every_sample_counts_as_often_as_it_was_taken():
    """A stopped guest's row is the same at every sample: it is held back and added at once, with its count, so
    a half hour of 15 busy minutes and 15 idle ones averages to half the busy figure, as sample by sample."""
    store = RrdStore(step=60)
    start = T0 - T0 % 1800  # a row of the day timeframe (30 minutes) starts here
    for i in range(180):  # one sample each 10 s: busy (cpu 0.5) for 15 minutes, then idle
        store.update("qemu/100", SOURCES, start + 10 * i, {"cpu": 0.5 if i < 90 else 0.0, "netin": 0})
    day = store.fetch("qemu/100", "day", "AVERAGE", start + 1800)
    assert day[-1]["time"] == int(start + 1800) and abs(day[-1]["cpu"] - 0.25) < 1e-12
    assert store.fetch("qemu/100", "day", "MAX", start + 1800)[-1]["cpu"] == 0.5
    hour = store.fetch("qemu/100", "hour", "AVERAGE", start + 1800)
    assert [p["cpu"] for p in hour[-30:]] == [0.5] * 15 + [0.0] * 15
    assert all(p["netin"] == 0.0 for p in hour[-29:])


def test_a_repeated_sample_is_the_same_as_its_values_given_again():
    given, repeated = RrdStore(step=60), RrdStore(step=60)
    assert not repeated.repeat("qemu/100", T0)  # nothing to repeat yet
    for store in (given, repeated):
        store.update("qemu/100", GUEST_SOURCES, T0, {"cpu": 0.5, "maxmem": 2048, "netin": 700, "diskread": None})
    for i in range(1, 40):  # 40 samples 10 s apart: across base steps, counters unchanged (rates of 0)
        given.update("qemu/100", GUEST_SOURCES, T0 + 10 * i,
                     {"cpu": 0.5, "maxmem": 2048, "netin": 700, "diskread": None})
        assert repeated.repeat("qemu/100", T0 + 10 * i)
    given.update("qemu/100", GUEST_SOURCES, T0 + 400, {"cpu": 0.1, "maxmem": 2048, "netin": 1500})
    repeated.update("qemu/100", GUEST_SOURCES, T0 + 400, {"cpu": 0.1, "maxmem": 2048, "netin": 1500})
    for timeframe in ("hour", "day"):
        for cf in ("AVERAGE", "MAX"):
            assert given.fetch("qemu/100", timeframe, cf, T0 + 1900) == repeated.fetch("qemu/100", timeframe, cf,
                                                                                        T0 + 1900)
    minutes = repeated.fetch("qemu/100", "hour", "AVERAGE", T0 + 481)[-7:]
    assert [(p["cpu"], p["netin"]) for p in minutes[:6]] == [(0.5, 0.0)] * 6  # the unchanged counter: a rate of 0
    assert minutes[6]["netin"] == 800 / 10 / 5  # 800 in the 10 s before T0 + 400, one sample of five that minute


def test_a_stopped_guest_that_starts_within_a_row_averages_every_sample_it_had():
    """The half hour's row of a guest stopped for 10 minutes (its first sample: no rate yet; then repeats), then
    running with a changing load for 20: the average weighs every sample, the maximum is the busiest."""
    store = RrdStore(step=60)
    start = T0 - T0 % 1800
    store.update("qemu/100", SOURCES, start, {"cpu": 0.0, "netin": 0})
    for i in range(1, 60):
        store.repeat("qemu/100", start + 10 * i)
    for i in range(60, 180):
        store.update("qemu/100", SOURCES, start + 10 * i, {"cpu": (i % 4) / 4, "netin": 100 * (i - 59)})
    [*_, avg] = store.fetch("qemu/100", "day", "AVERAGE", start + 1800)
    [*_, top] = store.fetch("qemu/100", "day", "MAX", start + 1800)
    busy = [(i % 4) / 4 for i in range(60, 180)]
    assert abs(avg["cpu"] - sum(busy) / 180) < 1e-12 and top["cpu"] == 0.75
    rates = [0.0] * 59 + [100 / 10] * 120  # no rate at the first sample; the counter from 0 by 100 each 10 s
    assert abs(avg["netin"] - sum(rates) / len(rates)) < 1e-12 and top["netin"] == 10.0
    # then stopped again (its counters back to 0: no rate at first): the rows after hold its repeated row
    store.update("qemu/100", SOURCES, start + 1800, {"cpu": 0.0, "netin": 0})
    for i in range(181, 540):
        store.repeat("qemu/100", start + 10 * i)
    hour = store.fetch("qemu/100", "hour", "AVERAGE", start + 5400)
    assert [p["cpu"] for p in hour[-30:]] == [0.0] * 30 and [p["netin"] for p in hour[-29:]] == [0.0] * 29
