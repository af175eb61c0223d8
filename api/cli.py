"""The `gpve` command: `gpve serve` runs one node."""

from __future__ import annotations

import argparse
import functools
import os
import secrets
import signal
import sys

import structlog
import trio

from api.auth import new_ticket_key_pem
from api.compat.hostinfo import host_static
from api.logs import configure_logging
from api.tls import adopt_cluster_ca, certificate_fingerprint, ensure_node_certificate
from engine.hub import CAPACITY as EVENT_BUFFER
from engine.private import private_dir, read_or_create
from engine.replog import default_conf

MIN_CLUSTER_KEY = 32  # characters of a --cluster-key-file


def cluster_raft_key(data_dir: str, peers_given: bool, key_file: str | None) -> str:
    """The cluster's Raft key: from `key_file` (kept in `priv/raft.key` for later starts), else the one
    this node made on first start. A static cluster (`--peers`) needs the same key file on every member."""
    from engine.node import raft_key_path, save_raft_key

    if key_file is None:
        if peers_given:
            raise SystemExit("--peers needs --cluster-key-file: every member of a static cluster must use the "
                             "same Raft key (e.g. made once with `openssl rand -hex 32`)")
        return read_or_create(raft_key_path(data_dir), lambda: secrets.token_hex(32))
    try:
        with open(key_file) as f:
            key = f.read().strip()
    except OSError as exc:
        raise SystemExit(f"--cluster-key-file: cannot read '{key_file}' - {exc.strerror}") from None
    if len(key) < MIN_CLUSTER_KEY:
        raise SystemExit(f"--cluster-key-file: the key must have at least {MIN_CLUSTER_KEY} characters")
    save_raft_key(data_dir, key)
    return key


def parse_peers(text: str | None, name: str, ip: str, raft_port: int) -> dict[str, str]:
    if not text:
        return {name: f"{ip}:{raft_port}"}
    peers = {}
    for item in text.split(","):
        peer, sep, addr = item.strip().partition("=")
        if not sep or ":" not in addr:
            raise SystemExit(f"--peers: expected name=host:raftport, got '{item}'")
        peers[peer] = addr
    if name not in peers:
        raise SystemExit(f"--peers must list this node ('{name}') too")
    return peers


# How long a thread holding the GIL runs before one waiting for it gets it (Python's default: 5 ms). The log's tick
# thread gives the GIL up at every socket call, fsync and poll; while the event loop computed (the sampler's pass over
# 100,000 guests) each took it back only after a full interval, so a leader's tick lasted 1-2 s, without heartbeats,
# and a joining node stood for election against it.
GIL_SWITCH_SECONDS = 0.0005
KEEP_ALIVE = 30.0  # s an HTTPS connection may stay idle between requests


def serve(args: argparse.Namespace) -> None:
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    from api.app import create_app
    from api.ratelimit import RateLimiter, parse_limits
    from api.registry import load_endpoints
    from api.rpc.server import GrpcServer
    from api.server import run_server, server_config
    from api.webhook_delivery import WebhookDeliverer
    from engine.node import Node, NodeSpec, load_peers

    data_dir = private_dir(os.path.abspath(args.data_dir), files=True)  # root-password, cluster.json
    private_dir(os.path.join(data_dir, "priv"), files=True)
    configure_logging(args.name, args.log_level)
    log = structlog.get_logger("gpve.cli")
    raft_key = cluster_raft_key(data_dir, bool(args.peers), args.cluster_key_file)
    password_file = os.path.join(data_dir, "root-password")
    if args.root_password_file:
        with open(args.root_password_file) as f:
            root_password = f.read().strip()
    else:
        root_password = read_or_create(password_file, lambda: secrets.token_urlsafe(18))
    ticket_key = read_or_create(os.path.join(data_dir, "priv", "authkey.key"), new_ticket_key_pem)
    csrf_secret = read_or_create(os.path.join(data_dir, "priv", "pve-www.key"), lambda: secrets.token_hex(32))
    ssl_dir = os.path.join(data_dir, "ssl")
    _ca, cert, key = ensure_node_certificate(ssl_dir, args.name, [args.listen])
    peers = parse_peers(args.peers, args.name, args.listen, args.raft_port) if args.peers else \
        load_peers(data_dir) or parse_peers(None, args.name, args.listen, args.raft_port)
    spec = NodeSpec(args.name, data_dir, args.listen, args.api_port, args.raft_port, peers, args.cluster_name,
                    certificate_fingerprint(cert), host_static())
    entries, seconds = args.log_compaction
    node = Node(spec, ticket_key, csrf_secret, raft_key, event_buffer=args.event_buffer, hold_heap=True,
                logCompactionMinEntries=entries, logCompactionMinTime=seconds,
                **({"bindAddress": args.raft_bind} if args.raft_bind else {}))
    runtime, guest_services = _guest_runtime(node, data_dir, args.rrd_interval, args.vcluster_ready_timeout)
    registry = load_endpoints()
    app = create_app(node, registry, root_password, runtime, RateLimiter(parse_limits(args.rate_limits)))
    grpc_server = GrpcServer(node, app.api.gate, runtime, registry, f"{args.listen}:{args.grpc_port}")
    bind = f"{args.listen}:{args.api_port}"
    restart_server = restart_grpc = trio.Event()

    async def serve_https(task_status=trio.TASK_STATUS_IGNORED) -> None:
        """The API server; restarted in place when the node's certificate changes (on join)."""
        nonlocal restart_server
        while True:
            restart_server = trio.Event()
            await run_server(app, server_config(bind, cert, key, args.keep_alive), restart_server.wait, task_status)
            task_status = trio.TASK_STATUS_IGNORED

    async def serve_grpc(task_status=trio.TASK_STATUS_IGNORED) -> None:
        """The gRPC API (same gate, rate limits and services as REST); restarted with the certificate too."""
        nonlocal restart_grpc
        while True:
            restart_grpc = trio.Event()
            await grpc_server.run(cert, key, restart_grpc.wait, task_status)
            task_status = trio.TASK_STATUS_IGNORED

    async def adopt_ca(ca_cert: str, ca_key: str) -> None:
        adopt_cluster_ca(ssl_dir, ca_cert, ca_key, args.name, [args.listen])
        spec.fingerprint = certificate_fingerprint(cert)
        await node.register()

        async def restart_soon() -> None:
            await trio.sleep(0.5)  # let the join request's answer leave first
            restart_server.set()
            restart_grpc.set()

        node.spawn(restart_soon)

    runtime.adopt_ca = adopt_ca
    runtime.spawn = node.spawn

    async def main() -> None:
        guest_services.bridge.bind()
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(node.run, reconciler=runtime.reconciler,
                                                  watcher=guest_services.watcher, sampler=runtime.sampler,
                                                  servers=[serve_https, serve_grpc, WebhookDeliverer(node).run]))
            url = f"https://{args.listen}:{args.api_port}/api2/json"
            where = args.root_password_file or password_file
            log.info("node listening", url=url, fingerprint=certificate_fingerprint(cert), root_password_file=where)
            print(f"gpve node '{args.name}' serving {url} and gRPC on {args.listen}:{args.grpc_port}\n"
                  f"  root@pam password: {where}", flush=True)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    log.info("shutting down")
                    nursery.cancel_scope.cancel()
                    break

    try:
        trio.run(main)
    finally:
        runtime.driver.kill_all_clients()  # guests keep running, as with Proxmox's daemons
        guest_services.bridge.close()
        grpc_server.close()
        node.close()


def _guest_runtime(node, data_dir: str, rrd_interval: float, vcluster_ready_timeout: float):
    """QEMU driver, the node's storages (as the log defines them), network configuration, reconciler (with the
    vCluster tasks), guest watcher and sampler of this node."""
    from types import SimpleNamespace

    from api.compat.guests import guest_maxima
    from api.context import Runtime
    from api.native.figures import PeerFigures
    from api.peers import PeerClient
    from api.services.vclusters import VClusterTasks
    from engine.reconciler import Reconciler
    from hypervisor.asyncio_bridge import AsyncioBridge
    from hypervisor.console import ConsoleSessions
    from hypervisor.network import NodeNetwork
    from hypervisor.operations import Operations, make_resolver
    from hypervisor.qemu import QemuDriver
    from hypervisor.sampler import Sampler
    from hypervisor.storage_files import StorageTasks
    from hypervisor.storages import NodeStorages
    from hypervisor.watch import GuestWatcher

    storages = NodeStorages(node, data_dir)
    bridge = AsyncioBridge()
    ssl_dir = os.path.join(data_dir, "ssl")
    driver = QemuDriver(os.path.join(data_dir, "run", "qemu"), bridge, make_resolver(storages),
                        spice_tls=tuple(os.path.join(ssl_dir, f) for f in ("pve-ssl.pem", "pve-ssl.key",
                                                                           "pve-root-ca.pem")))
    peers = PeerClient(node)
    consoles = ConsoleSessions()
    network = NodeNetwork(data_dir)
    vclusters = VClusterTasks(node, ready_timeout=vcluster_ready_timeout)
    reconciler = Reconciler(node, {**Operations(driver, storages, peers, consoles=consoles).handlers(),
                                   **network.handlers(), **StorageTasks(storages, node.name).handlers(),
                                   **vclusters.handlers()}, runs=driver.running)
    watcher = GuestWatcher(node, driver, reconciler)
    sampler = Sampler(node, driver, guest_maxima, interval=rrd_interval)
    runtime = Runtime(driver, storages, reconciler, sampler=sampler, network=network, consoles=consoles,
                      peer_figures=PeerFigures(peers, max_age=rrd_interval))
    vclusters.runtime = runtime
    return runtime, SimpleNamespace(bridge=bridge, watcher=watcher)


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value

LOG_COMPACTION = "{logCompactionMinEntries}:{logCompactionMinTime}".format(**default_conf())


def _compaction(text: str) -> tuple[int, float]:
    """`ENTRIES:SECONDS`: pysyncobj's logCompactionMinEntries and logCompactionMinTime."""
    try:
        entries, seconds = text.split(":")
        value = int(entries), float(seconds)
    except ValueError:
        raise argparse.ArgumentTypeError("must be ENTRIES:SECONDS, e.g. 20000:600") from None
    if value[0] < 2 or value[1] <= 0:
        raise argparse.ArgumentTypeError("ENTRIES must be at least 2 and SECONDS positive")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="gpve", description="Proxmox-VE-compatible cluster manager")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run one node")
    s.add_argument("--name", default=os.uname().nodename.split(".")[0])
    s.add_argument("--data-dir", default="/var/lib/gpve")
    s.add_argument("--listen", default="127.0.0.1")
    s.add_argument("--api-port", type=int, default=8006)
    s.add_argument("--raft-port", type=int, default=5404)
    s.add_argument("--grpc-port", type=int, default=8007, help="the gRPC API's port (TLS, the node's certificate)")
    s.add_argument("--peers", help="name=host:raftport,... for a static cluster (this node included)")
    s.add_argument("--raft-bind", help="host:port to listen on for Raft when it differs from the address the "
                   "peers use (behind a proxy or NAT); by default the node's own Raft address")
    s.add_argument("--cluster-key-file", help="the cluster's Raft key (at least 32 characters; needed with --peers, "
                   "the same file on every member); kept in DATA_DIR/priv/raft.key")
    s.add_argument("--cluster-name", default="gpve")
    s.add_argument("--root-password-file", help="read root@pam's password from this file")
    s.add_argument("--log-level", default="info")
    s.add_argument("--rrd-interval", type=_positive, default=10.0, metavar="SECONDS",
                   help="sample the host's and guests' figures every SECONDS (default 10, as Proxmox); the RRD "
                   "step is 6 samples, so a shorter interval shortens what each rrddata timeframe spans (tests)")
    s.add_argument("--keep-alive", type=_positive, default=KEEP_ALIVE, metavar="SECONDS",
                   help="close an HTTPS connection left idle this long (default %(default)s)")
    s.add_argument("--event-buffer", type=int, default=EVENT_BUFFER, metavar="N",
                   help="public events kept in memory for /v1/events readers that resume (default %(default)s); "
                        "a reader resuming from an older id is told to resync")
    s.add_argument("--vcluster-ready-timeout", type=_positive, default=600.0, metavar="SECONDS",
                   help="how long creating or scaling a vCluster waits for its API server (default 600)")
    s.add_argument("--log-compaction", type=_compaction, default=LOG_COMPACTION, metavar="ENTRIES:SECONDS",
                   help="snapshot the state and drop the journal's entries once it holds more than ENTRIES entries or "
                        "SECONDS have passed since the last time (default %(default)s)")
    s.add_argument("--rate-limits", help="per user and minute: auth=10,read=1000,write=100,bulk=10 (the "
                   "default), or 'off'")
    from api import cluster_cli

    cluster_cli.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args)
    elif args.command == "cluster":
        cluster_cli.run(args)


if __name__ == "__main__":
    sys.exit(main())
