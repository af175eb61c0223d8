"""/v1/nodes/{node}/metrics and /v1/metrics: host, guest and engine figures as the spec's JSON or in the
Prometheus text format (series in api/metrics.py). Measured by each node's sampler (hypervisor/sampler.py):
rates are over its last interval (10 s by default). Another node's figures come from that node.

Privileges: `Sys.Audit` on `/nodes/{node}` (on `/` for the whole cluster); guest series only for the guests
the caller may audit (`VM.Audit` on `/vms/{vmid}`), as in the guest listings.
"""

from __future__ import annotations

from datetime import UTC, datetime

import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from api.context import Ctx, Reply
from api.metrics import NodeCollector, exposition
from api.registry import API
from api.schema import NODE, Param, Permission
from engine.errors import Rejection, not_found
from hypervisor import host

PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"
TEXT = "text/plain"  # as the OpenAPI document names it
FORMAT = Param("format", enum=("json", "prometheus"), default="json")
PEER_TIMEOUT = 5.0  # s the cluster scrape waits for a member
RATE = {"type": "number", "description": "per second, over the sampler's last interval"}
NODE_METRICS = {"type": "object", "required": ["timestamp", "cpu", "memory", "disk", "network"], "properties": {
    "node": {"type": "string"}, "timestamp": {"type": "string", "format": "date-time"},
    "cpu": {"type": "object", "properties": {"usage_percent": {"type": "number"}, "cores": {"type": "integer"},
                                             "load_avg": {"type": "array", "items": {"type": "number"}}}},
    "memory": {"type": "object", "properties": {k: {"type": "integer"} for k in
                                                ("total_bytes", "used_bytes", "cached_bytes")}},
    "disk": {"type": "object", "properties": {k: RATE for k in
                                              ("read_bytes_per_sec", "write_bytes_per_sec", "iops_read",
                                               "iops_write")}},
    "network": {"type": "object", "properties": {k: RATE for k in
                                                 ("rx_bytes_per_sec", "tx_bytes_per_sec", "rx_packets_per_sec",
                                                  "tx_packets_per_sec")}}}}


def node_figures(ctx: Ctx) -> dict:
    """This node's figures in the spec's shape (`GET /v1/nodes/{node}/metrics`)."""
    sampler = ctx.rt.sampler
    rates = dict(sampler.rates) if sampler is not None else {}
    mem = host.meminfo()
    r = lambda key: round(rates.get(key, 0.0), 1)  # noqa: E731
    return {"node": ctx.node.name,
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "cpu": {"usage_percent": round((sampler.host["cpu"] if sampler else 0.0) * 100, 2),
                    "cores": host.cpuinfo()["cpus"], "load_avg": [float(x) for x in host.loadavg()[:3]]},
            "memory": {"total_bytes": mem["memtotal"], "used_bytes": mem["memused"],
                       "cached_bytes": _cached_bytes()},
            "disk": {"read_bytes_per_sec": r("read_bytes"), "write_bytes_per_sec": r("write_bytes"),
                     "iops_read": r("reads"), "iops_write": r("writes")},
            "network": {"rx_bytes_per_sec": r("rx_bytes"), "tx_bytes_per_sec": r("tx_bytes"),
                        "rx_packets_per_sec": r("rx_packets"), "tx_packets_per_sec": r("tx_packets")}}


def _cached_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("Cached:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _guests(ctx: Ctx) -> list[tuple[int, str, dict | None, int]]:
    """Every guest of this node the caller may audit: (vmid, name, its last sample or None when it is not
    running, configured memory in bytes)."""
    sampler = ctx.rt.sampler
    figures = {vmid: dict(f) for vmid, f in (sampler.guests.items() if sampler is not None else [])}
    with ctx.node.read() as s:
        mine = [(vmid, str(g["conf"].get("name", f"VM {vmid}")),
                 figures.get(vmid, {}) if g.get("status") == "running" else None,
                 int(str(g["conf"].get("memory", 512)).split(",")[0].removeprefix("current=")) * 1024 * 1024)
                for vmid, g in sorted(s.guests.items()) if g["node"] == ctx.node.name]
    return [row for row in mine if ctx.can("VM.Audit", f"/vms/{row[0]}")]


def _auditable(ctx: Ctx, text: str) -> bytes:
    """Another node's exposition (fetched as a member) without the guest series this caller may not audit."""
    return _merged(ctx, [text], [], set())


def local_exposition(ctx: Ctx) -> bytes:
    return exposition(NodeCollector(ctx.node, lambda: node_figures(ctx), lambda: _guests(ctx)),
                      ctx.rt.request_metrics)


def _member(ctx: Ctx, node: str) -> None:
    with ctx.node.read() as s:
        if node not in s.nodes:
            raise not_found(f"no such cluster node '{node}'")


async def _peer(ctx: Ctx, node: str, prometheus: bool):
    peers = ctx.rt.peer_figures.peers if ctx.rt.peer_figures is not None else None
    if peers is None:
        raise Rejection(502, f"node '{node}' is unreachable")
    return await peers.call(node, "GET", f"/v1/nodes/{node}/metrics", params={"format": "prometheus" if prometheus
                                                                               else "json"}, text=prometheus)


@API.endpoint("GET", "/nodes/{node}/metrics", native=True, params=[NODE, FORMAT],
              permission=Permission("Sys.Audit", "/nodes/{node}"), returns=NODE_METRICS, text=TEXT)
async def node_metrics(ctx: Ctx, p: dict):
    """A node's figures: the spec's JSON, or with `format=prometheus` its host, guest and engine series."""
    _member(ctx, p["node"])
    prometheus = p.get("format") == "prometheus"
    if p["node"] != ctx.node.name:
        answer = await _peer(ctx, p["node"], prometheus)
        return Reply(_auditable(ctx, answer), content_type=PROMETHEUS) if prometheus else answer
    if prometheus:
        return Reply(local_exposition(ctx), content_type=PROMETHEUS)
    return node_figures(ctx)


@API.endpoint("GET", "/metrics", native=True, params=[FORMAT], permission=Permission("Sys.Audit", "/"), text=TEXT,
              returns={"type": "object", "properties": {"nodes": {"type": "array", "items": NODE_METRICS}}})
async def cluster_metrics(ctx: Ctx, p: dict):
    """Every online member's figures in one answer (one scrape for the whole cluster). A member that does not
    answer within 5 s (or is offline) is left out; `gpve_scrape_up{node}` is 1 for each member that answered and 0
    for the others."""
    prometheus = p.get("format") == "prometheus"
    with ctx.node.read() as s:
        names = sorted(s.nodes)
    answers: dict[str, object] = {}

    async def fetch(name: str) -> None:
        with trio.move_on_after(PEER_TIMEOUT):
            try:
                answers[name] = await _peer(ctx, name, prometheus)
            except Rejection:
                pass

    async with trio.open_nursery() as nursery:
        for name in names:
            if name != ctx.node.name and ctx.node.node_online(name):
                nursery.start_soon(fetch, name)
    answers[ctx.node.name] = local_exposition(ctx).decode() if prometheus else node_figures(ctx)
    if not prometheus:
        return {"nodes": [answers[n] for n in names if n in answers]}
    return Reply(_merged(ctx, [answers[n] for n in names if n in answers], names, set(answers)),
                 content_type=PROMETHEUS)


class _Families:
    def __init__(self, families) -> None:
        self.families = families

    def collect(self):
        return self.families


def _merged(ctx: Ctx, texts: list, names: list[str], answered: set[str]) -> bytes:
    """Several nodes' expositions as one: each metric family once, holding every node's samples (guest samples
    only for guests the caller may audit)."""
    families: dict[str, object] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            family.samples = [x for x in family.samples if "vmid" not in x.labels or
                              ctx.can("VM.Audit", f"/vms/{x.labels['vmid']}")]
            if family.name in families:
                families[family.name].samples.extend(family.samples)
            else:
                families[family.name] = family
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(families.values())))
    if not names:
        return generate_latest(registry)
    up = "# HELP gpve_scrape_up 1 when the member answered this scrape\n# TYPE gpve_scrape_up gauge\n" + "".join(
        f'gpve_scrape_up{{node="{n}"}} {int(n in answered)}\n' for n in names)
    return generate_latest(registry) + up.encode()
