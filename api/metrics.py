"""Metrics in the Prometheus text exposition format (built with `prometheus_client`), per node.

Series (all labelled `node`):
- host: `gpve_node_cpu_usage_ratio`, `gpve_node_load1|5|15`, `gpve_node_memory_{total,used,cached}_bytes`,
  `gpve_node_disk_{read,write}_bytes_per_second`, `gpve_node_disk_{read,write}_iops`,
  `gpve_node_network_{receive,transmit}_{bytes,packets}_per_second` (rates over the sampler's last interval);
- guests running here (also `vmid`, `name`): `gpve_guest_up`, `gpve_guest_cpu_ratio` (of its vCPUs),
  `gpve_guest_memory_bytes`, `gpve_guest_memory_max_bytes`, `gpve_guest_disk_{read,written}_bytes_total`,
  `gpve_guest_network_{receive,transmit}_bytes_total`, `gpve_guest_uptime_seconds`;
- engine: `gpve_raft_term`, `gpve_raft_commit_index`, `gpve_raft_last_applied_index`, `gpve_raft_leader`,
  `gpve_raft_quorate`, `gpve_log_entries_proposed_total`, `gpve_log_commands_proposed_total`,
  `gpve_log_group_commit_batch_size` (commands per proposed log entry), and
  `gpve_api_request_duration_seconds` (by `route`, `method`, `status`).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RequestMetrics:
    """The API's request latency histogram, one per node process."""

    def __init__(self, node_name: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram("gpve_api_request_duration_seconds", "API requests by route, method and status",
                                 ["node", "route", "method", "status"], registry=self.registry,
                                 buckets=LATENCY_BUCKETS)
        self.node_name = node_name

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.latency.labels(self.node_name, route, method, str(status)).observe(seconds)


class NodeCollector:
    """Reads the node, its sampler and its log at scrape time (`figures()`: the host's figures in the spec's
    shape, api/native/metrics.py; `guests()`: `[(vmid, name, figures or None when stopped, maxmem bytes)]`)."""

    def __init__(self, node, figures, guests) -> None:
        self.node, self.figures, self.guests = node, figures, guests

    def collect(self):
        name = self.node.name
        yield from self._host(name, self.figures())
        yield from self._guests(name, self.guests())
        yield from self._engine(name)

    @staticmethod
    def _gauge(metric: str, doc: str, labels: list[str], rows: list[tuple[list[str], float]]) -> GaugeMetricFamily:
        family = GaugeMetricFamily(metric, doc, labels=labels)
        for values, value in rows:
            family.add_metric(values, value)
        return family

    def _host(self, name: str, f: dict):
        flat = {"gpve_node_cpu_usage_ratio": ("CPU time used over the last interval", f["cpu"]["usage_percent"] / 100),
                "gpve_node_memory_total_bytes": ("Memory", f["memory"]["total_bytes"]),
                "gpve_node_memory_used_bytes": ("Memory in use", f["memory"]["used_bytes"]),
                "gpve_node_memory_cached_bytes": ("Page cache", f["memory"]["cached_bytes"]),
                "gpve_node_disk_read_bytes_per_second": ("Disk reads", f["disk"]["read_bytes_per_sec"]),
                "gpve_node_disk_write_bytes_per_second": ("Disk writes", f["disk"]["write_bytes_per_sec"]),
                "gpve_node_disk_read_iops": ("Disk read operations per second", f["disk"]["iops_read"]),
                "gpve_node_disk_write_iops": ("Disk write operations per second", f["disk"]["iops_write"]),
                "gpve_node_network_receive_bytes_per_second": ("Received", f["network"]["rx_bytes_per_sec"]),
                "gpve_node_network_transmit_bytes_per_second": ("Sent", f["network"]["tx_bytes_per_sec"]),
                "gpve_node_network_receive_packets_per_second": ("Packets in", f["network"]["rx_packets_per_sec"]),
                "gpve_node_network_transmit_packets_per_second": ("Packets out", f["network"]["tx_packets_per_sec"])}
        for i, period in enumerate((1, 5, 15)):
            flat[f"gpve_node_load{period}"] = (f"Load average over {period} min", f["cpu"]["load_avg"][i])
        for metric, (doc, value) in flat.items():
            yield self._gauge(metric, doc, ["node"], [([name], float(value))])

    def _guests(self, name: str, guests: list[tuple[int, str, dict, int]]):
        labels = ["node", "vmid", "name"]
        gauges = {"gpve_guest_up": ("1 while the guest's QEMU runs, 0 when it is stopped", lambda g, m: float(bool(g))),
                  "gpve_guest_cpu_ratio": ("CPU time over the last interval, per vCPU", lambda g, m: g.get("cpu", 0)),
                  "gpve_guest_memory_bytes": ("Resident memory of its QEMU", lambda g, m: g.get("mem", 0)),
                  "gpve_guest_memory_max_bytes": ("Configured memory", lambda g, m: m),
                  "gpve_guest_uptime_seconds": ("Seconds since its QEMU started", lambda g, m: g.get("uptime", 0))}
        counters = {"gpve_guest_disk_read_bytes": ("Bytes read from its disks", "diskread"),
                    "gpve_guest_disk_written_bytes": ("Bytes written to its disks", "diskwrite"),
                    "gpve_guest_network_receive_bytes": ("Bytes its NICs received", "netin"),
                    "gpve_guest_network_transmit_bytes": ("Bytes its NICs sent", "netout")}
        for metric, (doc, value) in gauges.items():
            yield self._gauge(metric, doc, labels, [([name, str(v), n], float(value(g or {}, m) or 0))
                                                    for v, n, g, m in guests])
        for metric, (doc, key) in counters.items():
            family = CounterMetricFamily(metric, doc, labels=labels)
            for vmid, guest_name, g, _ in guests:
                family.add_metric([name, str(vmid), guest_name], float((g or {}).get(key, 0)))
            yield family

    def _engine(self, name: str):
        node, replog, bridge = self.node, self.node.replog, self.node.bridge
        for metric, doc, value in (
                ("gpve_raft_term", "Raft term this node is in", replog.raftCurrentTerm),
                ("gpve_raft_commit_index", "Highest log index known committed", replog.raftCommitIndex),
                ("gpve_raft_last_applied_index", "Highest log index applied here", replog.raftLastApplied),
                ("gpve_raft_leader", "1 while this node leads the log", int(node.is_leader())),
                ("gpve_raft_quorate", "1 while a majority is reachable", int(node.quorate()))):
            yield self._gauge(metric, doc, ["node"], [([name], float(value))])
        for metric, doc, value in (("gpve_log_entries_proposed", "Log entries proposed here", bridge.entries_proposed),
                                   ("gpve_log_commands_proposed", "Commands proposed here", bridge.commands_proposed)):
            family = CounterMetricFamily(metric, doc, labels=["node"])
            family.add_metric([name], float(value))
            yield family
        sizes = dict(bridge.batch_sizes)
        buckets = [(str(bound), float(sum(n for size, n in sizes.items() if size <= bound))) for bound in BATCH_BUCKETS]
        buckets.append(("+Inf", float(sum(sizes.values()))))
        family = HistogramMetricFamily("gpve_log_group_commit_batch_size", "Commands per proposed log entry",
                                       labels=["node"])
        family.add_metric([name], buckets, float(sum(size * count for size, count in sizes.items())))
        yield family


def exposition(collector: NodeCollector, requests: RequestMetrics) -> bytes:
    """One node's scrape: its collector's series and its request histogram."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry) + generate_latest(requests.registry)
