"""The node's sampler: every `interval` seconds (10, as Proxmox's pvestatd) it reads this host and each of its
guests once, keeps the latest figures for the listings and feeds the node's RRD store (hypervisor/rrd.py).

So a listing never asks QEMU per guest per request: `/nodes/{node}/qemu`, `status/current` and
`/cluster/resources` show what the last sample saw. Node: `cpu` and `wait` are the CPU time used and waited
for I/O over the last interval (0..1, from /proc/stat, as `PVE::ProcFSTools::read_proc_stat`). Guest (Proxmox's
`PVE::QemuServer::vmstatus`): `cpu` is its QEMU's CPU time over the last interval per vCPU (0..1 a vCPU each),
`mem` its resident memory, `netin`/`netout`/`diskread`/`diskwrite` byte counters since it started, `uptime`.
The RRD store steps at 6 intervals (60 s by default), as Proxmox's RRD files step at 60 s over 10 s samples.

Runs in the node's nursery (`Node.run(sampler=…)`, started by `gpve serve`); the simulator does not run it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
import trio

from hypervisor import host
from hypervisor.rrd import GUEST_SOURCES, NODE_SOURCES, RrdStore

log = structlog.get_logger("gpve.sampler")
INTERVAL = 10.0
STEPS_PER_SAMPLE = 6  # the RRD base step is this many sample intervals (60 s for 10 s)
YIELD_EVERY = 100  # guests sampled between two checkpoints (10,000 stopped guests took 0.3 s without one)
GUEST_FIGURES = ("cpu", "mem", "netin", "netout", "diskread", "diskwrite", "uptime")


class Sampler:
    """`guest_maxima(conf)` gives a guest's `maxcpu`, `maxmem`, `maxdisk` from its config."""

    def __init__(self, node, driver, guest_maxima: Callable[[dict], dict], interval: float = INTERVAL,
                 root: str = "/") -> None:
        self.node = node
        self.driver = driver
        self.guest_maxima = guest_maxima
        self.interval = interval
        self.root = root
        self.store = RrdStore(step=interval * STEPS_PER_SAMPLE)
        self.host: dict = {"cpu": 0.0, "wait": 0.0}
        self.rates: dict[str, float] = {}  # host.io_counters() keys per second over the last interval
        self._io: tuple[float, dict[str, int]] | None = None
        self.guests: dict[int, dict] = {}  # vmid -> GUEST_FIGURES of its last sample (running guests only)
        self.version = 0  # counts changes to `guests`: what a listing made from them is valid for (api/views.py)
        self._cpu: host.CpuTimes | None = None
        self._guest_cpu: dict[int, tuple[int, float, float]] = {}  # vmid -> (pid, time, cpu seconds)
        self._maxima: dict[int, tuple[dict, dict]] = {}  # vmid -> (the config they are of, guest_maxima of it)
        # vmid -> the maxima a stopped guest was last sampled with: while it stays so, its sample repeats the last
        # (hypervisor/rrd.py `repeat`: 100,000 stopped guests took a quarter of a core)
        self._stopped: dict[int, dict] = {}

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        deadline = trio.current_time()
        while True:
            try:
                await self.sample(time.time())
            except Exception:  # a sample that fails must not end the node
                log.exception("sample failed")
            deadline = max(deadline + self.interval, trio.current_time())
            await trio.sleep_until(deadline)

    async def sample(self, now: float) -> None:
        self.sample_host(now)
        with self.node.read() as s:
            mine = {vmid: g["conf"] for vmid, g in s.guests.items() if g["node"] == self.node.name}
            changed = {vmid: dict(conf) for vmid, conf in mine.items()  # a config is replaced when it changes
                       if self._maxima.get(vmid, (None,))[0] is not conf}
        for i, (vmid, conf) in enumerate(changed.items()):
            self._maxima[vmid] = (mine[vmid], self.guest_maxima(conf))
            if i % YIELD_EVERY == YIELD_EVERY - 1:  # 100,000 new configs: seconds without a checkpoint
                await trio.sleep(0)
        live = self.driver.with_pidfile()
        for i, vmid in enumerate(sorted(mine)):
            maxima = self._maxima[vmid][1]
            if vmid in live or self._stopped.get(vmid) is not maxima or not self.store.repeat(f"qemu/{vmid}", now):
                await self.sample_guest(vmid, maxima, now, maybe_running=vmid in live)
            if i % YIELD_EVERY == YIELD_EVERY - 1:  # a stopped guest's sample never waits: let requests through
                await trio.sleep(0)
        self.store.keep({f"node/{self.node.name}"} | {f"qemu/{vmid}" for vmid in mine})
        for vmid in set(self.guests) - set(mine):
            del self.guests[vmid]
            self.version += 1
        for vmid in set(self._guest_cpu) - set(mine):
            del self._guest_cpu[vmid]
        for vmid in set(self._maxima) - set(mine):
            del self._maxima[vmid]
            self._stopped.pop(vmid, None)

    def sample_host(self, now: float) -> None:
        io = host.io_counters()
        if self._io is not None and now > self._io[0]:
            elapsed = now - self._io[0]
            self.rates = {k: max(0, v - self._io[1].get(k, 0)) / elapsed for k, v in io.items()}
        self._io = (now, io)
        times = host.cpu_times()
        if self._cpu is not None:
            self.host["cpu"], self.host["wait"] = host.cpu_usage(self._cpu, times)
        self._cpu = times
        mem, root = host.meminfo(), host.filesystem(self.root)
        netin, netout = host.net_totals()
        self.store.update(f"node/{self.node.name}", NODE_SOURCES, now, {
            "loadavg": float(host.loadavg()[0]), "maxcpu": host.cpuinfo()["cpus"], "cpu": self.host["cpu"],
            "iowait": self.host["wait"], "memtotal": mem["memtotal"], "memused": mem["memused"],
            "swaptotal": mem["swaptotal"], "swapused": mem["swapused"], "roottotal": root["total"],
            "rootused": root["used"], "netin": netin, "netout": netout})

    async def sample_guest(self, vmid: int, maxima: dict, now: float, maybe_running: bool = True) -> None:
        """One guest's figures into its RRD series (and `guests` if it runs); `maxima`: `guest_maxima` of its
        config; `maybe_running` False: it has no pidfile, so it is not looked for."""
        pid = self.driver.pid(vmid) if maybe_running else None
        raw = await self.driver.counters(vmid) if pid is not None else None
        if raw is None:
            if self.guests.pop(vmid, None) is not None:
                self.version += 1
            self._guest_cpu.pop(vmid, None)
            figures = dict.fromkeys(GUEST_FIGURES, 0)  # as pvestatd records a stopped guest
            self._stopped[vmid] = maxima
        else:
            self._stopped.pop(vmid, None)
            vcpus = max(1, min(int(maxima["maxcpu"]), host.cpuinfo()["cpus"]))
            last = self._guest_cpu.get(vmid)
            self._guest_cpu[vmid] = (pid, now, raw["cpu_seconds"])
            cpu = None
            if last is not None and last[0] == pid and now > last[1]:
                cpu = max(0.0, (raw["cpu_seconds"] - last[2]) / (now - last[1]) / vcpus)
            figures = {"cpu": round(cpu, 4) if cpu is not None else self.guests.get(vmid, {}).get("cpu", 0),
                       "mem": min(raw["mem"], maxima["maxmem"]) if maxima["maxmem"] else raw["mem"],
                       **{k: raw[k] for k in ("netin", "netout", "diskread", "diskwrite", "uptime")}}
            self.guests[vmid] = figures
            self.version += 1
            figures = {**figures, "cpu": cpu}  # the RRD records a first sample's cpu as unknown
        self.store.update(f"qemu/{vmid}", GUEST_SOURCES, now, {**maxima, "disk": 0, **figures})

    def guest(self, vmid: int) -> dict:
        """The last sample's figures of a guest running here (empty if none yet)."""
        return dict(self.guests.get(vmid, {}))
